"""The HTTP + SSE + WebSocket gateway (PROTOCOL §8): cmdc_gateway's API over the fleet.

`create_app()` is an ASGI app (FastAPI) that connects to the fleet when it starts;
`flotilla gateway` serves it with uvicorn.
"""

from gateway._app import create_app
from gateway._serve import serve

__all__ = ["create_app", "serve"]

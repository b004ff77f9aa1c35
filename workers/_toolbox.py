"""Which tool a name means for a session: built-in or custom (the catalog), external over
NATS (the directory of announced tool servers), or an HTTP callback attached to the session."""

from __future__ import annotations

from typing import Any

import orjson

from flotilla.settings import Settings
from workers.tools import Tool, ToolCatalog
from workers.tools._callback import CallbackTool, check_callback_url, parse_callback_spec
from workers.tools._external import ExternalToolDirectory


class Toolbox:
    """Resolves tool names per session; one per worker process."""

    def __init__(
        self, *, settings: Settings, catalog: ToolCatalog, external: ExternalToolDirectory
    ) -> None:
        self._settings = settings
        self.catalog = catalog
        self.external = external
        self._callbacks: dict[bytes, CallbackTool] = {}

    def known(self, name: str, *, tenant: str) -> bool:
        """True when a session of `tenant` could attach `name` now."""
        return self.catalog.get(name) is not None or self.external.get(tenant, name) is not None

    def resolve(
        self, name: str, *, tenant: str, attached: list[str], callbacks: list[dict[str, Any]]
    ) -> Tool | None:
        """The tool `name` if the session has it attached, else None."""
        if name in attached:
            return self.catalog.get(name) or self.external.tool(tenant, name)
        for spec in callbacks:
            if spec.get("name") == name:
                key = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
                tool = self._callbacks.get(key)
                if tool is None:
                    tool = self._callbacks[key] = CallbackTool(parse_callback_spec(spec))
                return tool
        return None

    async def callback_spec(self, obj: object) -> dict[str, Any]:
        """Validate an HTTP callback tool spec and its URL (raises ValueError)."""
        spec = parse_callback_spec(obj)
        await check_callback_url(spec.callback_url, self._settings.callback_allow)
        return spec.as_dict()

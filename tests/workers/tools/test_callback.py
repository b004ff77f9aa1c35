"""HTTP callback tools: signed POSTs to a checked URL, every failure an error result."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from flotilla import Settings
from tests.loopback_http import LoopbackServer
from workers.tools._base import ToolContext
from workers.tools._callback import (
    CallbackError,
    CallbackRefused,
    CallbackTool,
    check_callback_url,
    parse_callback_spec,
)

SECRET = "s3cr3t-for-acme"
SETTINGS = Settings(
    callback_allow=("127.0.0.1:*",), tenant_secrets=f"other:x,acme:{SECRET}", tool_timeout_s=5.0
)


class CallbackServer:
    """A callback endpoint on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.release = asyncio.Event()
        self.port = 0
        routes = [Route(f"/{name}", self._handle, methods=["POST"]) for name in _REPLIES]
        self.app = Starlette(routes=[*routes, Route("/slow", self._slow, methods=["POST"])])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: Request) -> Response:
        self.requests.append((await request.body(), dict(request.headers)))
        return _REPLIES[request.url.path.strip("/")]()

    async def _slow(self, request: Request) -> Response:
        await self.release.wait()
        return JSONResponse({"result": "late"})


_REPLIES: dict[str, Any] = {
    "ok": lambda: JSONResponse({"result": "done"}),
    "object": lambda: JSONResponse({"result": {"n": 1}}),
    "error": lambda: JSONResponse({"error": "no such order"}),
    "fail": lambda: PlainTextResponse("kaput", status_code=500),
    "html": lambda: PlainTextResponse("<html>"),
    "redirect": lambda: RedirectResponse("/ok", status_code=302),
}


@pytest.fixture
async def callback_server() -> AsyncIterator[CallbackServer]:
    endpoint = CallbackServer()
    http = LoopbackServer(endpoint.app)
    await http.start()
    endpoint.port = http.port
    yield endpoint
    endpoint.release.set()
    await http.stop()


def context(settings: Settings = SETTINGS, tenant: str = "acme") -> ToolContext:
    return ToolContext(
        session_id="s1",
        tenant=tenant,
        call_id="c1",
        workspace=None,
        settings=settings,  # type: ignore[arg-type]
    )


def tool(url: str, **spec: Any) -> CallbackTool:
    return CallbackTool(parse_callback_spec({"name": "lookup", "callback_url": url, **spec}))


async def test_a_call_is_a_signed_post_and_the_result_is_used(
    callback_server: CallbackServer,
) -> None:
    result = await tool(callback_server.url("ok")).run({"id": 7}, context())
    assert (result.text, result.is_error) == ("done", False)
    [(body, headers)] = callback_server.requests
    assert orjson.loads(body) == {
        "sessionId": "s1",
        "callId": "c1",
        "toolName": "lookup",
        "args": {"id": 7},
    }
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-flotilla-signature"] == f"sha256={expected}"


async def test_a_tenant_without_a_secret_gets_unsigned_calls(
    callback_server: CallbackServer,
) -> None:
    result = await tool(callback_server.url("ok")).run({}, context(tenant="nosecret"))
    assert result.text == "done"
    assert "x-flotilla-signature" not in callback_server.requests[0][1]


async def test_a_result_that_is_not_text_is_json_encoded(callback_server: CallbackServer) -> None:
    result = await tool(callback_server.url("object")).run({}, context())
    assert (result.text, result.is_error) == ('{"n":1}', False)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("error", "no such order"),
        ("fail", "callback of tool 'lookup' answered HTTP 500: kaput"),
        ("html", "callback of tool 'lookup' did not answer {result} or {error}"),
        ("redirect", "callback of tool 'lookup' answered HTTP 302; redirects are not followed"),
    ],
)
async def test_failed_callbacks_are_error_results(
    callback_server: CallbackServer, path: str, message: str
) -> None:
    result = await tool(callback_server.url(path)).run({}, context())
    assert (result.text, result.is_error) == (message, True)
    assert len(callback_server.requests) == 1  # the redirect was not followed
    assert SECRET not in result.text


async def test_a_slow_callback_times_out(callback_server: CallbackServer) -> None:
    result = await tool(callback_server.url("slow"), timeout_ms=200).run({}, context())
    assert (result.text, result.is_error) == (
        "callback of tool 'lookup' timed out after 0.2 s",
        True,
    )


async def test_an_unreachable_callback_is_an_error_result() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = await tool(f"http://127.0.0.1:{port}/x").run({}, context())
    assert result.is_error and "failed: ConnectError" in result.text


async def test_the_url_is_checked_again_at_call_time(callback_server: CallbackServer) -> None:
    strict = Settings(tenant_secrets=f"acme:{SECRET}")
    result = await tool(callback_server.url("ok")).run({}, context(strict))
    assert result.is_error and "refused" in result.text
    assert callback_server.requests == []


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:8080/", ()),
        ("http://localhost:8080/", ()),
        ("http://10.1.2.3/", ()),
        ("http://[::ffff:127.0.0.1]/", ()),
        ("http://169.254.169.254/latest/meta-data", ("*",)),
        ("http://[fd00:ec2::254]/", ("*",)),
        ("http://metadata.google.internal/", ("*",)),
    ],
)
async def test_non_public_and_metadata_addresses_are_refused(
    url: str, allow: tuple[str, ...]
) -> None:
    with pytest.raises(CallbackRefused) as refused:
        await check_callback_url(url, allow)
    assert refused.value.code == "callback_refused"


async def test_an_allow_pattern_lets_a_loopback_address_through() -> None:
    assert str(await check_callback_url("http://localhost:8080/", ("127.0.0.1:*",))) == "127.0.0.1"


async def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def rebinding(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in ("8.8.8.8", "10.0.0.5")
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    with pytest.raises(CallbackRefused, match=r"10\.0\.0\.5"):
        await check_callback_url("http://rebind.example/", ())


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "bad name", "callback_url": "https://example.com/"},
        {"name": "t", "parameters": [], "callback_url": "https://example.com/"},
        {"name": "t", "parameters": {"type": "array"}, "callback_url": "https://example.com/"},
        {"name": "t"},
        {"name": "t", "callback_url": "ftp://example.com/"},
        {"name": "t", "callback_url": "https://user:pw@example.com/"},
        {"name": "t", "callback_url": "https://example.com/", "timeout_ms": 0},
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(CallbackError):
        parse_callback_spec(spec)


def test_a_gateway_spec_in_camel_case_is_accepted() -> None:
    spec = parse_callback_spec(
        {"name": "t", "callbackUrl": "https://example.com/", "timeoutMs": 500}
    )
    assert (spec.callback_url, spec.timeout_s, spec.tool_spec.parameters["type"]) == (
        "https://example.com/",
        0.5,
        "object",
    )

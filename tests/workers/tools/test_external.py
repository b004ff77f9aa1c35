"""External tools over NATS request/reply: served with the SDK, found and called by workers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NATS

from flotilla import Settings, ToolCall, ToolServer, serve_tool
from flotilla.runtime import ensure_bucket
from schemas import Subjects
from tests.conftest import eventually
from workers.tools._base import ToolContext, ToolSpec
from workers.tools._external import ExternalToolDirectory, NatsTool

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
Serve = Callable[..., Awaitable[ToolServer]]


@pytest.fixture
async def nc(servers: tuple[str, str]) -> AsyncIterator[NATS]:
    client = await nats.connect(servers[0])
    yield client
    await client.close()


@pytest.fixture
def subjects() -> Subjects:
    return Subjects(f"t{secrets.token_hex(5)}")


@pytest.fixture
async def directory(nc: NATS, subjects: Subjects) -> AsyncIterator[ExternalToolDirectory]:
    found = ExternalToolDirectory(nc, subjects=subjects)
    await found.start()
    yield found
    await found.close()


@pytest.fixture
async def serve(nc: NATS, subjects: Subjects) -> AsyncIterator[Serve]:
    """Serves tools of tenant `acme`; closes them after the test."""
    started: list[ToolServer] = []

    async def make(handler: Any, *, name: str = "add", **options: Any) -> ToolServer:
        server = await serve_tool(
            nc, name=name, description="adds a and b", parameters=SCHEMA, handler=handler,
            tenant="acme", prefix=subjects.prefix, **options,
        )  # fmt: skip
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        await server.close(grace_s=0.5)


def context(subjects: Subjects, **overrides: Any) -> ToolContext:
    settings = Settings(prefix=subjects.prefix, tool_timeout_s=5.0)
    fields: dict[str, Any] = {"session_id": "s1", "tenant": "acme", "call_id": "c1"}
    return ToolContext(workspace=None, settings=settings, **{**fields, **overrides})  # type: ignore[arg-type]


async def add(args: dict[str, Any], call: ToolCall) -> str:
    if args["a"] < 0:
        raise ValueError("a must not be negative")
    return str(args["a"] + args["b"])


async def tool_of(directory: ExternalToolDirectory, name: str = "add") -> NatsTool:
    await eventually(lambda: directory.get("acme", name) is not None, what=f"{name} announced")
    tool = directory.tool("acme", name)
    assert tool is not None
    return tool


async def test_a_served_tool_answers_through_nats_tool(
    serve: Serve, directory: ExternalToolDirectory, subjects: Subjects
) -> None:
    await serve(add)
    tool = await tool_of(directory)
    result = await tool.run({"a": 2, "b": 3}, context(subjects))
    assert (result.text, result.is_error) == ("5", False)


async def test_the_handler_sees_the_session_call_and_user_data(
    serve: Serve, directory: ExternalToolDirectory, subjects: Subjects
) -> None:
    async def who(args: dict[str, Any], call: ToolCall) -> str:
        return f"{call.session_id} {call.tenant} {call.call_id} {call.tool} {call.user_data}"

    await serve(who)
    tool = await tool_of(directory)
    result = await tool.run({}, context(subjects, call_id="c9", user_data={"u": 1}))
    assert result.text == "s1 acme c9 add {'u': 1}"


async def test_the_directory_sees_the_announcement_and_its_removal(
    serve: Serve, directory: ExternalToolDirectory
) -> None:
    server = await serve(add, idempotent=True, timeout_ms=1500)
    await eventually(lambda: directory.names("acme") == ["add"], what="announcement")
    assert directory.get("acme", "add") == ToolSpec(
        "add", "adds a and b", SCHEMA, idempotent=True, timeout_s=1.5
    )
    assert directory.names("other") == []
    await server.close()
    await eventually(lambda: directory.get("acme", "add") is None, what="removal")


async def test_an_announcement_not_refreshed_expires(nc: NATS) -> None:
    subjects = Subjects(f"t{secrets.token_hex(5)}")
    kv = await ensure_bucket(nc.jetstream(), subjects.tools_bucket, ttl=1.0)
    directory = ExternalToolDirectory(nc, subjects=subjects)
    await directory.start()
    try:
        await kv.put("acme.ghost", orjson.dumps({"name": "ghost", "parameters": SCHEMA}))
        await eventually(lambda: directory.get("acme", "ghost") is not None, what="announcement")
        await eventually(lambda: directory.get("acme", "ghost") is None, timeout=5, what="expiry")
    finally:
        await directory.close()


async def test_two_servers_share_the_calls_of_one_tool(
    serve: Serve, directory: ExternalToolDirectory, subjects: Subjects
) -> None:
    served: list[str] = []

    def instance(label: str) -> Any:
        async def handler(args: dict[str, Any], call: ToolCall) -> str:
            served.append(label)
            return label

        return handler

    await serve(instance("one"))
    await serve(instance("two"))
    tool = await tool_of(directory)
    for n in range(30):
        await tool.run({}, context(subjects, call_id=f"c{n}"))
    assert sorted(set(served)) == ["one", "two"]


async def test_closing_one_of_two_instances_keeps_the_tool_announced(
    serve: Serve, directory: ExternalToolDirectory, nc: NATS, subjects: Subjects
) -> None:
    first = await serve(add)
    second = await serve(add)
    await first.close()
    await first.close()  # idempotent
    kv = await nc.jetstream().key_value(subjects.tools_bucket)
    assert (await kv.get("acme.add")).value
    await second.close()
    await eventually(lambda: directory.get("acme", "add") is None, what="removal")


async def test_a_handler_exception_is_an_error_result_and_the_server_keeps_serving(
    serve: Serve, directory: ExternalToolDirectory, subjects: Subjects
) -> None:
    await serve(add)
    tool = await tool_of(directory)
    failed = await tool.run({"a": -1, "b": 0}, context(subjects))
    assert (failed.text, failed.is_error) == ("a must not be negative", True)
    assert (await tool.run({"a": 1, "b": 1}, context(subjects))).text == "2"


async def test_a_tool_without_a_server_is_a_clear_error(nc: NATS, subjects: Subjects) -> None:
    tool = NatsTool(ToolSpec("ghost", "", SCHEMA), tenant="acme", nc=nc, subjects=subjects)
    result = await tool.run({}, context(subjects))
    assert (result.text, result.is_error) == ("tool 'ghost' has no server running", True)


async def test_a_slow_tool_times_out_with_an_error_result(
    serve: Serve, nc: NATS, subjects: Subjects
) -> None:
    release = asyncio.Event()

    async def slow(args: dict[str, Any], call: ToolCall) -> str:
        await release.wait()
        return "late"

    await serve(slow)
    tool = NatsTool(
        ToolSpec("add", "", SCHEMA, timeout_s=0.2), tenant="acme", nc=nc, subjects=subjects
    )
    result = await tool.run({}, context(subjects))
    release.set()
    assert (result.text, result.is_error) == ("tool 'add' did not answer within 0.2 s", True)


async def test_the_server_stops_a_handler_at_its_timeout(
    serve: Serve, nc: NATS, subjects: Subjects
) -> None:
    async def never(args: dict[str, Any], call: ToolCall) -> str:
        await asyncio.Event().wait()
        return "never"

    await serve(never, timeout_ms=100)
    reply = await nc.request(subjects.tool("acme", "add"), b'{"args": {}}', timeout=5)
    assert orjson.loads(reply.data) == {"error": "tool 'add' timed out"}


async def test_a_malformed_reply_is_an_error_result(nc: NATS, subjects: Subjects) -> None:
    async def garbage(msg: Any) -> None:
        await msg.respond(b"not json")

    await nc.subscribe(subjects.tool("acme", "odd"), cb=garbage)
    tool = NatsTool(ToolSpec("odd", "", SCHEMA), tenant="acme", nc=nc, subjects=subjects)
    result = await tool.run({}, context(subjects))
    assert result.is_error and "malformed reply" in result.text

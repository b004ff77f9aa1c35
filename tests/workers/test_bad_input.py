"""Bad commands get a clear `error` event and a dead letter; nothing else is harmed."""

from __future__ import annotations

import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.conftest import Harness


async def _dead_letters(harness: Harness, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    assert harness.nc is not None
    js = harness.nc.jetstream()
    sub = await js.subscribe(
        harness.settings.subjects.dlq_all,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    out = []
    for _ in range(count):
        msg = await sub.next_msg(timeout=5)
        out.append((msg.subject, dict(msg.headers or {}), msg.data))
    await sub.unsubscribe()
    return out


@pytest.mark.parametrize(
    ("op", "body", "code"),
    [
        ("prompt", b"{not json", "invalid_command"),
        ("prompt", b"[1, 2]", "invalid_command"),
        ("explode", b'{"op": "explode"}', "invalid_command"),
        ("prompt", b'{"op": "steer", "text": "x"}', "invalid_command"),
        ("prompt", b'{"op": "prompt"}', "invalid_command"),
        ("prompt", b'{"op": "prompt", "text": "x", "strategy": "maybe"}', "invalid_command"),
    ],
)
async def test_invalid_command_is_dead_lettered_and_the_session_unharmed(
    fleet: Harness, op: str, body: bytes, code: str
) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await fleet.publish_raw(fleet.settings.subjects.cmd("acme", session.sid, op), body)
    error = await session.wait_for({"error"}, request_id=None, timeout=5)
    assert error.data["code"] == code and error.data["message"]
    [(subject, headers, data)] = await _dead_letters(fleet, 1)
    assert subject == fleet.settings.subjects.dlq("acme", session.sid)
    assert headers["Flotilla-Error"] == code and headers["Flotilla-Error-Message"]
    assert data == body
    await session.prompt("still fine")
    assert await session.collect_reply(timeout=5) == "echo: still fine"


async def test_unknown_session_is_dead_lettered(fleet: Harness) -> None:
    assert fleet.fleet is not None
    ghost = await fleet.fleet.session("nobody-here")
    await ghost.prompt("hello?")
    error = await ghost.wait_for({"error"}, request_id=None, timeout=5)
    assert error.data["code"] == "session_not_found"
    [(_, headers, _)] = await _dead_letters(fleet, 1)
    assert headers["Flotilla-Error"] == "session_not_found"


async def test_bad_identifier_in_the_subject_is_refused(fleet: Harness) -> None:
    subject = f"{fleet.settings.prefix}.cmd.acme.bad@sid.create"
    await fleet.publish_raw(subject, orjson.dumps({"op": "create", "model": "mock:echo"}))
    [(dlq_subject, headers, _)] = await _dead_letters(fleet, 1)
    assert headers["Flotilla-Error"] == "invalid_command"
    assert dlq_subject == fleet.settings.subjects.dlq("acme", "bad@sid")


async def test_bad_group_id_in_create_is_refused(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.session("g1")
    await fleet.publish_raw(
        fleet.settings.subjects.cmd("acme", "g1", "create"),
        orjson.dumps({"op": "create", "model": "mock:echo", "group_id": "a.b"}),
    )
    error = await session.wait_for({"error"}, request_id=None, timeout=5)
    assert error.data["code"] == "invalid_command" and "group_id" in error.data["message"]


async def test_oversize_command_is_refused_as_too_large(harness_factory: object) -> None:
    harness: Harness = await harness_factory(max_command_bytes=1024)  # type: ignore[operator]
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    big = orjson.dumps({"op": "prompt", "text": "x" * 2000})
    await harness.publish_raw(harness.settings.subjects.cmd("acme", session.sid, "prompt"), big)
    error = await session.wait_for({"error"}, request_id=None, timeout=5)
    assert error.data["code"] == "too_large"
    await session.prompt("small")
    assert await session.collect_reply(timeout=5) == "echo: small"


async def test_wrong_tenant_is_forbidden_and_the_session_untouched(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    intruder = f"{fleet.settings.prefix}.evt.evil.*.{session.sid}.>"
    assert fleet.nc is not None
    sub = await fleet.nc.subscribe(intruder)
    await fleet.publish_raw(
        fleet.settings.subjects.cmd("evil", session.sid, "stop"), orjson.dumps({"op": "stop"})
    )
    error = orjson.loads((await sub.next_msg(timeout=5)).data)
    assert error["type"] == "error" and error["data"]["code"] == "forbidden"
    assert error["group"] is None
    [(subject, headers, _)] = await _dead_letters(fleet, 1)
    assert subject == fleet.settings.subjects.dlq("evil", session.sid)
    assert headers["Flotilla-Error"] == "forbidden"
    await session.prompt("mine")
    assert await session.collect_reply(timeout=5) == "echo: mine"


async def test_a_bad_command_does_not_disturb_other_sessions(fleet: Harness) -> None:
    assert fleet.fleet is not None
    other = await fleet.fleet.create_agent(
        model="mock:script", provider_opts={"script": [{"text": "long answer", "delay_ms": 200}]}
    )
    await other.prompt("work")
    await fleet.publish_raw(fleet.settings.subjects.cmd("acme", other.sid, "prompt"), b"\xff")
    assert await other.collect_reply(timeout=5) == "long answer"


async def test_op_may_be_left_to_the_subject(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    subject = fleet.settings.subjects.cmd("acme", session.sid, "prompt")
    await fleet.publish_raw(subject, orjson.dumps({"id": "no-op", "text": "implicit"}))
    end = await session.wait_for({"agent_end"}, request_id="no-op", timeout=5)
    assert end.data["last_message"]["content"] == "echo: implicit"

"""Bad commands get a clear `error` event and a dead letter; nothing else is harmed."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from flotilla import CommandError, Fleet
from tests.conftest import Harness, eventually
from workers._turn import TurnRunner


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
    [(subject, headers, data)] = await fleet.dead_letters(1)
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
    [(_, headers, _)] = await fleet.dead_letters(1)
    assert headers["Flotilla-Error"] == "session_not_found"


async def test_bad_identifier_in_the_subject_is_refused(fleet: Harness) -> None:
    subject = f"{fleet.settings.prefix}.cmd.acme.bad@sid.create"
    await fleet.publish_raw(subject, orjson.dumps({"op": "create", "model": "mock:echo"}))
    [(dlq_subject, headers, _)] = await fleet.dead_letters(1)
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


async def test_another_tenants_session_is_one_that_does_not_exist(fleet: Harness) -> None:
    """Session ids are chosen per tenant: tenant "evil" naming acme's session reaches a
    session of its own that does not exist, with the answer any missing session gets."""
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    intruder = f"{fleet.settings.prefix}.evt.evil.*.*.>"
    assert fleet.nc is not None
    sub = await fleet.nc.subscribe(intruder)
    for sid in (session.sid, "never-created"):
        await fleet.publish_raw(
            fleet.settings.subjects.cmd("evil", sid, "stop"), orjson.dumps({"op": "stop"})
        )
    answers = [orjson.loads((await sub.next_msg(timeout=5)).data) for _ in range(2)]
    assert [(a["type"], a["group"], a["data"]["code"]) for a in answers] == [
        ("error", None, "session_not_found")
    ] * 2
    assert [a["data"]["message"].replace(a["sid"], "X") for a in answers] == ["no session 'X'"] * 2
    dead = await fleet.dead_letters(2)
    assert [h["Flotilla-Error"] for _, h, _ in dead] == ["session_not_found"] * 2
    await session.prompt("mine")
    assert await session.collect_reply(timeout=5) == "echo: mine"


async def test_two_tenants_may_use_the_same_session_id(fleet: Harness) -> None:
    assert fleet.fleet is not None
    mine = await fleet.fleet.create_agent(session_id="shared-name", model="mock:echo")
    async with await Fleet.connect(settings=fleet.settings, tenant="beta") as beta:
        theirs = await beta.create_agent(session_id="shared-name", model="mock:echo")
        await theirs.prompt("beta's turn")
        assert await theirs.collect_reply(timeout=5) == "echo: beta's turn"
        await mine.prompt("acme's turn")
        assert await mine.collect_reply(timeout=5) == "echo: acme's turn"
        assert [m["content"] for m in await fleet.history("shared-name", "beta")] == [
            "beta's turn",
            "echo: beta's turn",
        ]
        await theirs.stop()
    await mine.prompt("still here")
    assert await mine.collect_reply(timeout=5) == "echo: still here"


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


async def test_a_command_nested_too_deep_is_refused_before_it_is_kept(fleet: Harness) -> None:
    """Deeper values could be read but not saved or published (the JSON writers stop at 255
    levels): the command is refused, and the session is unharmed."""
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    meta = b"[" * 300 + b"]" * 300
    body = b'{"op": "prompt", "id": "deep-1", "text": "x", "meta": {"m": ' + meta + b"}}"
    await fleet.publish_raw(fleet.settings.subjects.cmd("acme", session.sid, "prompt"), body)
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"agent_end"}, request_id="deep-1", timeout=5)
    assert refused.value.code == "invalid_command" and "nest 64" in str(refused.value)
    await session.prompt("fine")
    assert await session.collect_reply(timeout=5) == "echo: fine"


async def test_a_command_that_meets_a_bug_is_set_aside_not_redelivered_forever(
    fleet: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    monkeypatch.setattr("workers._checkpoints.save_checkpoint", broken)
    sent = await session.send("checkpoint")
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"checkpoint_saved"}, request_id=sent, timeout=5)
    assert refused.value.code == "internal_error" and "RuntimeError" in str(refused.value)
    assert "a bug" not in str(refused.value)  # no detail of the fleet's internals
    [(_, headers, _)] = await fleet.dead_letters(1)
    assert headers["Flotilla-Error"] == "internal_error"
    await session.prompt("still here")
    assert await session.collect_reply(timeout=5) == "echo: still here"


async def test_a_turn_that_meets_a_bug_ends_with_an_error_and_the_session_goes_on(
    fleet: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    assert fleet.fleet is not None
    steps = [{"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]}]
    session = await fleet.fleet.create_agent(
        model="mock:script", tools=["read_file"], provider_opts={"script": steps}
    )
    monkeypatch.setattr("workers._turn.TurnRunner._detect_loop", broken)
    await session.prompt("go")
    with pytest.raises(CommandError) as failed:
        await session.collect_reply(timeout=5)
    assert failed.value.code == "internal_error"
    monkeypatch.undo()
    await session.prompt("again")
    assert await session.collect_reply(timeout=5) == "echo: again"


async def test_a_prompt_sent_while_a_turn_ends_on_a_bug_runs_after_it(
    fleet: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt arrives while the broken turn is still being ended, so it is queued: the
    runner takes it, as it takes the queue after any turn, instead of leaving it waiting."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    finish = TurnRunner._finish

    async def finish_once_again_is_queued(self: TurnRunner, *args: Any, **kwargs: Any) -> Any:
        state = self._actor.state
        assert state is not None
        if kwargs.get("error"):  # the broken turn ends only once "again" waits in the queue
            await eventually(lambda: bool(state.prompt_queue), what='"again" to be queued')
        return await finish(self, *args, **kwargs)

    assert fleet.fleet is not None
    steps = [{"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]}]
    session = await fleet.fleet.create_agent(
        model="mock:script", tools=["read_file"], provider_opts={"script": steps}
    )
    monkeypatch.setattr(TurnRunner, "_detect_loop", broken)
    monkeypatch.setattr(TurnRunner, "_finish", finish_once_again_is_queued)
    await session.prompt("go")
    with pytest.raises(CommandError):
        await session.collect_reply(timeout=5)
    monkeypatch.setattr(TurnRunner, "_detect_loop", lambda *args, **kwargs: asyncio.sleep(0))
    await session.prompt("again")
    assert await session.collect_reply(timeout=5) == "echo: again"

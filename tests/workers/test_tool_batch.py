"""Tool calls through the turn engine: batches, results, the workspace, unknown tools."""

from __future__ import annotations

from tests.conftest import Harness
from tests.engine_helpers import call, until_end
from tests.engine_helpers import script as _script


async def test_a_tool_batch_runs_and_its_results_reach_the_llm(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        tools=["write_file", "read_file"],
        provider_opts=_script(
            {"tool_calls": [call("write_file", path="a.txt", content="hello")]},
            {"tool_calls": [call("read_file", path="a.txt")]},
            {"text": "done"},
        ),
    )
    await session.prompt("go")
    events = await until_end(session)
    ends = [e.data for e in events if e.type == "tool_execution_end"]
    assert [(e["name"], e["status"]) for e in ends] == [("write_file", "ok"), ("read_file", "ok")]
    assert ends[1]["result"].startswith("hello")
    assert events[-1].data["reason"] == "finished"
    assert events[-1].data["last_message"]["content"] == "done"


async def test_a_call_to_a_tool_not_attached_is_reported_and_answered_with_an_error(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        tools=["read_file"],
        provider_opts=_script({"tool_calls": [call("shell", command="ls")]}, {"text": "ok"}),
    )
    await session.prompt("go")
    events = await until_end(session)
    unknown = [e.data for e in events if e.type == "tool_call_unknown"]
    assert unknown and unknown[0]["name"] == "shell"
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and "not attached" in results[0]["content"]
    assert events[-1].data["reason"] == "finished"

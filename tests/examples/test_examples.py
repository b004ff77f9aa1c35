"""Each recipe of examples/ run against a live fleet, checking the events that make it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from examples import approval, checkpoint_resume, large_results, steering, streaming, subagents
from schemas import Event
from tests.conftest import Harness


def of_type(events: list[Event], type_: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type_]


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


async def test_streaming_deltas_make_the_reply_and_the_end_carries_usage(fleet: Harness) -> None:
    assert fleet.fleet is not None
    frames: list[str] = []
    events = await streaming.main(fleet.fleet, send=frames.append)
    deltas = "".join(d["delta"] for d in of_type(events, "message_delta"))
    assert deltas == streaming.REPLY
    end = events[-1]
    assert end.type == "agent_end" and end.data["last_message"]["content"] == streaming.REPLY
    assert end.data["usage"]["prompt_tokens"] > 0 and end.data["usage"]["total_tokens"] > 0
    assert of_type(events, "tool_execution_start")[0]["name"] == "list_dir"
    assert frames[0] == 'data: {"tool":"list_dir"}\n\n'
    assert frames[-1].startswith('data: {"done":true,"usage":{')


async def test_approval_once_then_always_stops_asking(fleet: Harness) -> None:
    assert fleet.fleet is not None
    answers = iter(["o", "a"])

    async def answer(event: Event) -> str:
        return next(answers)

    events = await approval.main(fleet.fleet, answer=answer)
    asked = of_type(events, "approval_required")
    assert [a["args"]["path"] for a in asked] == ["hello/mix.exs", "hello/lib/hello.ex"]
    resolved = of_type(events, "approval_resolved")
    assert [(r["status"], r["kind"]) for r in resolved] == [
        ("approved", "once"),
        ("approved", "always"),
    ]
    assert [r["trigger"] for r in of_type(events, "agent_resumed")] == ["tool_approved"] * 2
    ends = of_type(events, "tool_execution_end")
    assert [(e["name"], e["status"]) for e in ends] == [("write_file", "ok")] * 3
    assert events[-1].type == "agent_end" and events[-1].data["reason"] == "finished"


async def test_approval_rejected_ends_the_turn(fleet: Harness) -> None:
    assert fleet.fleet is not None

    async def answer(event: Event) -> str:
        return "r"

    events = await approval.main(fleet.fleet, answer=answer)
    assert of_type(events, "approval_resolved")[0]["status"] == "rejected"
    assert not of_type(events, "tool_execution_end")
    assert events[-1].type == "agent_end" and events[-1].data["reason"] == "rejected"


async def test_subagents_report_to_the_parent_and_share_its_group(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await subagents.main(fleet.fleet)
    parent = events[-1].sid
    on_parent = [e for e in events if e.sid == parent]
    starts = of_type(on_parent, "subagent_start")
    ends = of_type(on_parent, "subagent_end")
    assert len(starts) == 2 and [e["child_sid"] for e in ends] == [s["child_sid"] for s in starts]
    assert subagents.NOTES in ends[0]["result"] and subagents.REPORT in ends[1]["result"]
    children = {s["child_sid"] for s in starts}
    assert all(child.startswith(f"{parent}-") for child in children)
    assert {e.sid for e in events} == {parent, *children}
    assert {e.group for e in events} == {events[0].group}
    child_ends = [e for e in events if e.sid in children and e.type == "agent_end"]
    assert len(child_ends) == 2
    researcher = next(
        e for e in events if e.sid == starts[0]["child_sid"] and e.type == "tool_execution_end"
    )
    assert researcher.data["name"] == "grep"
    assert events[-1].data["last_message"]["content"].endswith(subagents.REPORT)


async def test_steering_is_queued_applied_and_seen_by_the_llm(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await steering.main(fleet.fleet, stop=False)
    order = [
        t for t in types(events) if t in ("steering_received", "steering_applied", "agent_end")
    ]
    assert order == ["steering_received", "steering_applied", "agent_end"]
    assert of_type(events, "steering_received")[0] == {"ref": "use-elixir", "status": "queued"}
    assert of_type(events, "steering_applied")[0]["refs"] == ["use-elixir"]
    history = await fleet.history(events[0].sid)
    steered = next(i for i, m in enumerate(history) if steering.STEER in str(m.get("content")))
    assert history[steered]["role"] == "user"
    assert any(m["role"] == "assistant" for m in history[steered + 1 :])
    assert events[-1].data["last_message"]["content"] == steering.SCRIPT["script"][-1]["text"]


async def test_a_session_resumed_from_a_checkpoint_keeps_the_history_and_answers(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    events = await checkpoint_resume.main(fleet.fleet, stop=False)
    assert events[-1].type == "agent_end"
    assert events[-1].data["last_message"]["content"] == checkpoint_resume.CHAPTER
    history = await fleet.history(events[-1].sid)
    contents = [m["content"] for m in history]
    assert contents[:2] == [
        "Design an agent framework in Python; start with an outline.",
        checkpoint_resume.OUTLINE,
    ]
    assert contents[-2:] == ["Go on: write chapter 2 in detail.", checkpoint_resume.CHAPTER]


async def test_a_large_result_is_offloaded_and_paged_with_read_file(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await (await harness_factory(tool_result_max_chars=2000)).start_fleet("w1")
    assert harness.fleet is not None
    events = await large_results.main(harness.fleet, log_lines=300, stop=False)
    ends = {e["call_id"]: e for e in of_type(events, "tool_execution_end")}
    grep = ends[large_results.GREP_CALL]["result"]
    assert len(grep) <= 2000
    assert f"The full output is in {large_results.RESULT_PATH}" in grep
    matches = [
        f"access.log:{i + 1}:{line}"
        for i, line in enumerate(large_results.access_log(300).splitlines())
        if '" 5' in line
    ]
    assert len(matches) == 100 and len("\n".join(matches)) > 2000
    page1, page2 = ends["page-1"]["result"], ends["page-2"]["result"]
    assert page1.split("\n")[:20] == matches[:20]
    assert page2.split("\n")[:20] == matches[20:40]
    assert "continue with offset=41" in page2
    history = await harness.history(events[0].sid)
    seen_by_llm = next(m for m in history if m.get("call_id") == large_results.GREP_CALL)
    assert seen_by_llm["content"] == grep

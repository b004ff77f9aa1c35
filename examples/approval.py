"""Recipe 2, human in the loop: every file write waits for a person's yes in the terminal.

The `human_approval` plugin stops each `write_file` call with `approval_required`; the answer
goes back as `approve` (once or always) or `reject`. "Always" puts (tool, command family) on
the session's allowlist, so the later writes of this session run without asking. A rejection
ends the turn (`agent_end{reason: "rejected"}`), as in CMDC.

    python -m examples.approval
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from examples._run import run_example, turn_events
from flotilla import Fleet, Session
from schemas import Event

Answer = Callable[[Event], Awaitable[str]]
"""Given an `approval_required` event: "o" (once), "a" (always) or anything else (reject)."""


def _write(path: str, content: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


SCRIPT: dict[str, Any] = {
    "script": [
        {"text": "First the project file.", "tool_calls": [_write("hello/mix.exs", "...")]},
        {
            "tool_calls": [
                _write("hello/lib/hello.ex", 'defmodule Hello do\n  def hi, do: "hi"\nend\n')
            ]
        },
        {"tool_calls": [_write("hello/test/hello_test.exs", "...")]},
        {"text": "Created hello/ with mix.exs, lib/hello.ex and a test."},
    ]
}
APPROVAL_WAIT_S = 600.0
"""A person may take a while to answer."""


async def ask_in_terminal(event: Event) -> str:
    """Print the call the agent wants to make and read the answer from the terminal."""
    data = event.data
    print(f"\n[the agent wants to run] {data['tool']} {orjson.dumps(data['args']).decode()}")
    try:
        line = await asyncio.to_thread(input, "(o)nce / (a)lways / (r)eject ? ")
    except EOFError:
        return "r"
    return line.strip().lower()


async def decide(session: Session, event: Event, answer: Answer) -> None:
    """Send the decision for one `approval_required` event."""
    approval_id = str(event.data["approval_id"])
    choice = await answer(event)
    if choice in ("o", "once", "y", "yes"):
        await session.approve(approval_id, kind="once")
    elif choice in ("a", "always"):
        await session.approve(approval_id, kind="always")
    else:
        await session.reject(approval_id, reason="refused in the terminal")


async def main(fleet: Fleet, *, answer: Answer = ask_in_terminal) -> list[Event]:
    """Run one turn whose writes need approval; `answer` decides each one."""
    session = await fleet.create_agent(
        model="mock:script",
        tools=["write_file", "read_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
        provider_opts=SCRIPT,
    )

    async def on_event(event: Event) -> None:
        if event.type == "approval_required":
            await decide(session, event, answer)
        elif event.type == "tool_execution_end":
            print(f"  {event.data['name']}: {event.data['status']} - {event.data['result']}")
        elif event.type == "agent_end":
            print(f"\n{event.data['reason']}: {event.data['last_message']['content']}")

    try:
        await session.prompt("Create an Elixir Hello World project in hello/")
        return await turn_events(session, timeout=APPROVAL_WAIT_S, on_event=on_event)
    finally:
        await session.stop()


if __name__ == "__main__":
    run_example(main)

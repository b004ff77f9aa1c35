"""Recipe 6.1, automatic checkpoints: every N turns, after key tools, when the session ends.

`auto_checkpoint` saves a checkpoint (label "auto", metadata {trigger, plugin, turn}) when any
of its triggers fires and announces it with `auto_checkpoint_saved {checkpoint_id, trigger}`.
How many checkpoints a session keeps and for how long are fleet settings
(FLOTILLA_MAX_CHECKPOINTS, FLOTILLA_CHECKPOINT_TTL_S); the plugin accepts CMDC's
`max_checkpoints` / `ttl_seconds` without overriding them. The last checkpoint, taken at
`session_end`, outlives the stopped session.

    python -m examples.auto_checkpoint
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import run_example
from flotilla import Fleet, Session
from schemas import Event

PLUGIN: dict[str, Any] = {
    "name": "auto_checkpoint",
    "opts": {
        "every_n_turns": 2,
        "on_tools": ["write_file"],
        "on_events": ["session_end"],
        "max_checkpoints": 50,
        "ttl_seconds": 30 * 86_400,
    },
}
WRITE = {"name": "write_file", "arguments": {"path": "outline.md", "content": "1. sessions\n"}}
SCRIPT: dict[str, Any] = {
    "script": [{"tool_calls": [WRITE]}, {"text": "Outline saved."}, {"text": "Chapter 1 ..."}]
}
TRIGGERS = ("tool:write_file", "every_n_turns", "session_end")
"""What saves, in order: the write, the second turn's end, the stop."""


async def _until_saved(session: Session, seen: list[Event], count: int) -> None:
    """Read the session's events until `count` automatic checkpoints were announced."""
    while sum(_is_saved(e) for e in seen) < count:
        seen.append(await session.next_event(timeout=30))


def _is_saved(event: Event) -> bool:
    return event.type == "plugin_event" and event.data["kind"] == "auto_checkpoint_saved"


async def main(fleet: Fleet) -> list[Event]:
    """Two turns and a stop under auto_checkpoint; returns every event of the session."""
    session = await fleet.create_agent(
        session_id=f"s-{secrets.token_hex(4)}",
        model="mock:script",
        tools=["write_file"],
        plugins=[PLUGIN],
        provider_opts=SCRIPT,
    )
    events: list[Event] = []
    await session.prompt("Outline an agent framework and save it.")
    await _until_saved(session, events, 1)
    await session.prompt("Write chapter 1.")
    await _until_saved(session, events, 2)
    await session.send("stop")  # the events of the stop are read below, to the end
    await _until_saved(session, events, 3)
    while events[-1].type != "session_stopped":
        events.append(await session.next_event(timeout=30))
    await session.close()
    for event in filter(_is_saved, events):
        print(f"{session.sid}: {event.data['payload']}")
    return events


if __name__ == "__main__":
    run_example(main)

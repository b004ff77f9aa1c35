"""Recipe 3, long sessions that do not forget: MemoryFlush writes, MemoryLoader reads back.

`memory_flush` runs before each compaction: the user's preferences and decisions among the
messages about to be summarised are appended to MEMORY.md in the session's workspace.
`memory_loader` puts AGENTS.md and MEMORY.md into the system prompt. A session resumed from a
checkpoint carries the workspace, so the new session starts out knowing the preference. The
compactor here triggers at 5 prompt tokens and keeps 2 messages (the recipe's 50,000 / 10), so
the third turn compacts.

    python -m examples.memory_loop
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import TURN_END, read_until, run_example, turn_events
from flotilla import Fleet
from schemas import Event

PREFERENCE = "I prefer Phoenix LiveView over React for frontends, remember that."
PROMPTS = (PREFERENCE, "Let's design the database schema.", "Now the routes.")
PLUGINS: list[dict[str, Any]] = [
    {"name": "memory_loader", "opts": {"files": ["AGENTS.md", "MEMORY.md"]}},
    {"name": "memory_flush", "opts": {"file": "MEMORY.md", "max_facts_per_flush": 10}},
]
COMPACTOR = {"trigger_tokens": 5, "keep_messages": 2}


def plugin_events(events: list[Event], kind: str) -> list[dict[str, Any]]:
    """The payloads of the `plugin_event`s of one kind."""
    return [
        e.data["payload"] for e in events if e.type == "plugin_event" and e.data["kind"] == kind
    ]


async def main(fleet: Fleet, *, stop: bool = True) -> list[Event]:
    """A long chat that compacts, then a session resumed from it; returns the resumed events.

    With `stop=False` the resumed session stays, to read its state afterwards.
    """
    sid = f"s-{secrets.token_hex(4)}"
    first = await fleet.create_agent(
        session_id=sid, model="mock:echo", plugins=PLUGINS, compactor=COMPACTOR
    )
    flushed: list[dict[str, Any]] = []
    for text in PROMPTS:
        await first.prompt(text)
        flushed += plugin_events(await turn_events(first), "memory_flush")
    for flush in flushed:
        print(
            f"{sid}: compaction kept {flush['count']} fact(s) in {flush['file']}: {flush['facts']}"
        )
    checkpoint_id = await first.checkpoint("long-chat")
    await first.stop()

    second = await fleet.create_agent(
        session_id=f"{sid}-next",
        model="mock:echo",
        from_checkpoint={"session_id": sid, "checkpoint_id": checkpoint_id},
    )
    try:
        await second.prompt("Write me a login page.")
        await turn_events(second)
        # from its creation on: memory_loader reads the copied MEMORY.md at session_start
        events = await read_until(second.subscribe(since=0), lambda e: e.type in TURN_END)
        for loaded in plugin_events(events, "memory_loaded"):
            print(f"{second.sid}: memory loaded from {loaded['files']} ({loaded['chars']} chars)")
        return events
    finally:
        if stop:
            await second.stop()


if __name__ == "__main__":
    run_example(main)

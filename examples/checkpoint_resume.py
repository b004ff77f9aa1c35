"""Recipe 6, checkpoint and resume: save a conversation, stop it, continue it elsewhere.

`checkpoint` saves a labelled copy of the session (history, tools, plugins, workspace, the
mock script's position) in Redis; it outlives the session. `create_agent(from_checkpoint=...)`
starts a new session from it, on whatever worker owns the new id, and the conversation goes
on where it was.

    python -m examples.checkpoint_resume
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

OUTLINE = "Outline: 1. sessions  2. the turn loop  3. tools  4. plugins  5. persistence"
CHAPTER = "Chapter 2, the turn loop: each step calls the LLM, then runs the tools it asked for."
SCRIPT: dict[str, Any] = {"script": [{"text": OUTLINE}, {"text": CHAPTER}]}


async def main(fleet: Fleet, *, stop: bool = True) -> list[Event]:
    """Checkpoint a session after one answer, stop it, resume it; returns the resumed events.

    With `stop=False` the resumed session stays, to read its history afterwards.
    """
    sid = f"s-{secrets.token_hex(4)}"
    first = await fleet.create_agent(session_id=sid, model="mock:script", provider_opts=SCRIPT)
    await first.prompt("Design an agent framework in Python; start with an outline.")
    print(f"{sid}: {await first.collect_reply(timeout=30)}")
    checkpoint_id = await first.checkpoint("after-outline")
    await first.stop()  # the checkpoint stays until its TTL
    print(f"checkpoint {checkpoint_id} saved, {sid} stopped")

    restored = await fleet.create_agent(
        session_id=f"{sid}-resumed",
        model="mock:script",
        from_checkpoint={"session_id": sid, "checkpoint_id": checkpoint_id},
    )
    try:
        await restored.prompt("Go on: write chapter 2 in detail.")
        events = await turn_events(restored)
        print(f"{restored.sid}: {events[-1].data['last_message']['content']}")
        return events
    finally:
        if stop:
            await restored.stop()


if __name__ == "__main__":
    run_example(main)

"""Recipe 9, content policy: an LLM judge reads every prompt and every answer.

`content_policy` asks `judge_model` for a verdict on the user's prompt (`before_prompt`) and
on the model's answer (`after_response`): ALLOW lets it through, `BLOCK: reason` rejects the
prompt or aborts the turn. A judge that fails or times out lets the text through and emits
`content_policy_error`. Here the judge is a `mock:script` that allows, then, after a hot
update of its options (`update_plugin_opts`), one that blocks.

    python -m examples.content_policy
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

ANSWER = "MyProduct syncs your notes across devices."
BLOCKED = "BLOCK: off-brand"


def judge(verdict: str) -> dict[str, Any]:
    """The plugin's options with a scripted judge that always answers `verdict`."""
    return {"judge_provider_opts": {"script": [{"text": verdict}]}}


POLICY: dict[str, Any] = {
    "name": "content_policy",
    "opts": {
        "judge_model": "mock:script",
        **judge("ALLOW"),
        "brand_keywords": ["MyProduct"],
        "timeout_ms": 5000,
    },
}


async def main(fleet: Fleet) -> list[Event]:
    """One allowed exchange, then a prompt the judge blocks; returns every event read."""
    session = await fleet.create_agent(
        session_id=f"s-{secrets.token_hex(4)}",
        model="mock:script",
        plugins=[POLICY],
        provider_opts={"script": [{"text": ANSWER}]},
    )
    try:
        await session.prompt("What does MyProduct do?")
        events = await turn_events(session)
        print(f"allowed: {events[-1].data['last_message']['content']}")
        await session.update_plugin_opts("content_policy", judge(BLOCKED))
        while events[-1].type != "plugin_opts_updated":
            events.append(await session.next_event(timeout=30))
        await session.prompt("Tell me why OtherProduct is better than MyProduct.")
        while events[-1].type != "prompt_rejected":
            events.append(await session.next_event(timeout=30))
        print(f"rejected: {events[-1].data['reason']}")
        return events
    finally:
        await session.stop()


if __name__ == "__main__":
    run_example(main)

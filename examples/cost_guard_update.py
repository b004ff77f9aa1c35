"""Recipe 15 (CostGuard part), hot plugin updates: raise a session's cost limit mid-way.

The `cost_guard` plugin refuses LLM requests once the session has cost `max_usd` (the turn
ends with `agent_abort`) and warns once at `soft_warning_pct` of it; the answer that
crosses the limit ends its turn, and later requests are refused until the limit is raised.
`update_plugin_opts` changes the limit of the live session;
CostGuard takes it through its `on_config_update` callback (mode "callback"), so the cost
already accrued and the warnings already sent are kept. The mock model's `price` makes each
scripted step cost $1.

    python -m examples.cost_guard_update
"""

from __future__ import annotations

from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

ONE_DOLLAR = {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 10}}
SCRIPT: dict[str, Any] = {
    "script": [
        {"text": "A first, costly answer.", **ONE_DOLLAR},
        {"text": "A second answer, past the first limit.", **ONE_DOLLAR},
        {"text": "A third one, under the raised limit."},
    ],
    "price": {"input_per_mtok": 1.0, "output_per_mtok": 0.0},
}
QUESTIONS = ("First question", "Second question", "Third question", "Fourth question")


async def main(fleet: Fleet) -> list[Event]:
    """Prompts under a $1.50 limit until one is refused, then the limit raised to $20."""
    session = await fleet.create_agent(
        model="mock:script",
        plugins=[{"name": "cost_guard", "opts": {"max_usd": 1.5, "soft_warning_pct": 0.5}}],
        provider_opts=SCRIPT,
    )
    events: list[Event] = []
    try:
        for prompt in QUESTIONS[:3]:  # $1 and a warning, then $2: aborted, then refused
            await session.prompt(prompt)
            events += await turn_events(session)
        await session.update_plugin_opts("cost_guard", {"max_usd": 20.0, "soft_warning_pct": 0.9})
        while events[-1].type != "plugin_opts_updated":
            events.append(await session.next_event(timeout=30.0))
        await session.prompt(QUESTIONS[3])
        events += await turn_events(session)
    finally:
        await session.stop()
    for event in events:
        if event.type in ("agent_end", "agent_abort"):
            print(f"  {event.type}: {event.data.get('reason')}")
        elif event.type in ("plugin_opts_updated", "cost_warning"):
            print(f"  {event.type}: {event.data}")
        elif event.type == "plugin_event":
            print(f"  {event.data['kind']}: {event.data['payload']}")
    return events


if __name__ == "__main__":
    run_example(main)

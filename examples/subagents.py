"""Recipe 4, several agents: a parent hands work to sub-agents with the `task` tool.

Each sub-agent runs as a session of its own (`<parent>-<random>`) in the parent's group, on
any worker, under the parent's plugins, and stops once its task is done; its failure is only
an error result for the parent. The parent's stream shows
`subagent_start` / `subagent_end`; the group's stream shows every session at once, replayed
here from the start of the stream once the parent has answered.

    python -m examples.subagents
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import TURN_END, read_until, run_example, turn_events
from flotilla import Fleet
from schemas import Event


def _task(description: str, subagent_type: str) -> dict[str, Any]:
    arguments = {"description": description, "subagent_type": subagent_type}
    return {"name": "task", "arguments": arguments}


def _script(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"script": list(steps)}


NOTES = "notes: the session actor lives in workers/_actor.py; tools in workers/tools/."
REPORT = "Report: Flotilla runs agent sessions on a fleet; each session has one actor."
SUBAGENTS: list[dict[str, Any]] = [
    {
        "name": "researcher",
        "description": "collects and summarises material, without commenting",
        "system_prompt": "Only collect and summarise material; do not comment.",
        "tools": ["grep", "read_file"],
        "provider_opts": _script(
            {"tool_calls": [{"name": "grep", "arguments": {"pattern": "actor"}}]},
            {"text": NOTES},
        ),
    },
    {
        "name": "writer",
        "description": "turns material into a structured report",
        "system_prompt": "Write the material up as a structured report.",
        "prompt_mode": "task",
        "provider_opts": _script({"text": REPORT}),
    },
]
PARENT = _script(
    {"tool_calls": [_task("Collect what the repository says about actors.", "researcher")]},
    {"tool_calls": [_task(f"Write a short report from these notes: {NOTES}", "writer")]},
    {"text": f"Done. {REPORT}"},
)


async def main(fleet: Fleet) -> list[Event]:
    """Run a parent with two sub-agents; returns the group's events (parent and children)."""
    group = f"report-{secrets.token_hex(4)}"
    parent = await fleet.create_agent(
        model="mock:script",
        tools=["task"],
        subagents=SUBAGENTS,
        group_id=group,
        provider_opts=PARENT,
    )
    children: list[str] = []
    try:
        await parent.prompt("Research the repository, then have the findings written up.")
        for event in await turn_events(parent):
            if event.type == "subagent_start":
                children.append(str(event.data["child_sid"]))
                print(f"-> {event.data['child_sid']}: {event.data['description']}")
            elif event.type == "subagent_end":
                print(f"<- {event.data['child_sid']}: {event.data['result']}")
            elif event.type == "agent_end":
                print(f"parent: {event.data['last_message']['content']}")
        return await read_until(
            fleet.subscribe_group(group, since=0),
            lambda event: event.sid == parent.sid and event.type in TURN_END,
        )
    finally:
        await parent.stop()  # each sub-agent stopped itself when its task ended


if __name__ == "__main__":
    run_example(main)

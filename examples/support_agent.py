"""Recipe 10, the end-to-end template: a customer support agent.

The single recipes put together on one session, as CMDC's `MyApp.SupportAgent` blueprint
does: a system prompt, file tools and `ask_user`, `human_approval` on the refund (here a
`write_file` into `refunds/`), a `content_policy` judge on every prompt and answer,
`memory_loader` putting the tenant's KB.md into the system prompt, `model_router` sending
free-tier users to the small model, a `cost_guard` limit, `event_logger`, and compactor
settings. `mock:echo` stands in for the big model and `mock:script` for the small one, whose
script reads the KB, asks for the refund and answers; the judge is a scripted `mock:script`.

The tenant's knowledge base is published once into a checkpoint (a session writes KB.md and
is checkpointed); each support session starts `from_checkpoint`, so its workspace holds KB.md.
Events are kept by the fleet's event stream, so a front end that lost its connection replays
them with `subscribe(since=seq)` (CMDC's `event_buffer_size`).

    python -m examples.support_agent
"""

from __future__ import annotations

import secrets
from typing import Any

from examples._run import TURN_END, read_until, run_example, turn_events
from flotilla import Fleet
from schemas import Event

TENANT = "acme"
KB = (
    "# Acme support knowledge base\n"
    "- Refunds: orders under $100 are refunded on request, within 30 days.\n"
    "- Shipping: 3-5 business days.\n"
)
PUBLISH_KB: dict[str, Any] = {
    "script": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "KB.md", "content": KB}}]},
        {"text": "Knowledge base published."},
    ]
}
REFUND = {
    "name": "write_file",
    "arguments": {"path": "refunds/ORD-1042.json", "content": '{"order": "ORD-1042", "usd": 42}'},
}
ANSWER = "Your refund of $42 for order ORD-1042 is on its way."
SCRIPT: dict[str, Any] = {
    "script": [
        {
            "text": "Let me check the refund policy.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "KB.md"}}],
        },
        {"tool_calls": [REFUND]},
        {"text": ANSWER},
    ]
}
"""The small model's turn: read the KB, refund (approval required), answer."""
TOOLS = ["read_file", "write_file", "ask_user"]
"""Given to the publishing session too: a session started from a checkpoint runs with the
checkpoint's tools, whatever `tools` its `create` names."""
BIG_MODEL = "mock:echo"
SMALL_MODEL = "mock:script"
JUDGE: dict[str, Any] = {
    "judge_model": "mock:script",
    "judge_provider_opts": {"script": [{"text": "ALLOW"}]},
    "brand_keywords": ["Acme"],
}
PLUGINS: list[str | dict[str, Any]] = [
    # safety
    {"name": "human_approval", "opts": {"tools": ["write_file"]}},
    {"name": "content_policy", "opts": JUDGE},
    # optimisation
    {"name": "memory_loader", "opts": {"files": ["KB.md"]}},
    {
        "name": "model_router",
        "opts": {
            "rules": [
                {"condition": ["user_tier", "free"], "model": SMALL_MODEL},
                {"condition": ["cost_gt", 0.10], "model": SMALL_MODEL},
            ]
        },
    },
    # monitoring
    {"name": "cost_guard", "opts": {"max_usd": 0.50}},
    "event_logger",
]


def support_agent(*, tenant_id: str, user_tier: str) -> dict[str, Any]:
    """The session options of the recipe's `MyApp.SupportAgent.build/1`."""
    return {
        "model": BIG_MODEL,
        "system_prompt": "You are Acme's support agent. Only answer questions about Acme products.",
        "user_data": {"tenant_id": tenant_id, "user_tier": user_tier},
        "tools": TOOLS,
        "plugins": PLUGINS,
        "compactor": {"trigger_tokens": 50_000, "keep_messages": 10},
        "provider_opts": SCRIPT,
    }


async def publish_kb(fleet: Fleet) -> dict[str, str]:
    """Write KB.md in a session of its own and checkpoint it; the `from_checkpoint` ref.

    A session started from the checkpoint carries its workspace and its short conversation.
    """
    sid = f"kb-{secrets.token_hex(4)}"
    session = await fleet.create_agent(
        session_id=sid, model="mock:script", tools=TOOLS, provider_opts=PUBLISH_KB
    )
    try:
        await session.prompt("Publish the knowledge base.")
        await turn_events(session)
        return {"session_id": sid, "checkpoint_id": await session.checkpoint("kb")}
    finally:
        await session.stop()


async def main(fleet: Fleet, *, user_tier: str = "free") -> list[Event]:
    """One customer's refund request, approved; returns the session's events.

    A "free" customer is routed to the small model; any other tier stays on the big one.
    """
    kb = await publish_kb(fleet)
    session = await fleet.create_agent(
        session_id=f"s-{secrets.token_hex(4)}",
        from_checkpoint=kb,
        **support_agent(tenant_id=TENANT, user_tier=user_tier),
    )

    async def on_event(event: Event) -> None:
        if event.type == "approval_required":  # a person in the support console says yes
            print(f"  approve {event.data['tool']} {event.data['args']['path']}")
            await session.approve(str(event.data["approval_id"]))
        elif event.type == "model_switched":
            print(f"  model {event.data['from']} -> {event.data['to']}")
        elif event.type == "plugin_event":
            print(f"  {event.data['kind']}: {event.data['payload']}")
        elif event.type == "agent_end":
            print(f"  {event.data['reason']}: {event.data['last_message']['content']}")

    try:
        await session.prompt("I want a refund for order ORD-1042, it arrived broken.")
        await turn_events(session, on_event=on_event)
        # the whole session, from its creation: memory_loader read KB.md at session_start
        return await read_until(session.subscribe(since=0), lambda e: e.type in TURN_END)
    finally:
        await session.stop()


if __name__ == "__main__":
    run_example(main)

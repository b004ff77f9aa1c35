"""Recipe 1, a streaming UI: every token of the reply reaches the client as it is produced.

The session's events become server-sent-event frames, as a web handler would forward them:
one frame per `message_delta`, one per tool call, and a last one with the token usage when
`agent_end` arrives; a turn silent for too long is aborted. (The gateway serves this as
`GET /v1/sessions/:id/events`; this is the same thing by hand, over the SDK.)

    python -m examples.streaming
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from examples._run import run_example, turn_events
from flotilla import Fleet, ReplyTimeout
from schemas import Event

REPLY = (
    "Tokens drift in one by one,\n"
    "each frame a small wave on the wire -\n"
    "the answer builds as you read."
)
SCRIPT: dict[str, Any] = {
    "script": [
        {
            "thinking": "A poem about streaming. Let me see what is in the workspace first.",
            "tool_calls": [{"name": "list_dir", "arguments": {}}],
        },
        {"text": REPLY, "chunk_delay_ms": 15, "usage": {"prompt_tokens": 240}},
    ],
    "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
}
SILENCE_S = 30.0
"""How long the stream may stay silent before the turn is aborted (CMDC's `after 30_000`)."""


def sse_frame(event: Event) -> str | None:
    """The SSE frame a browser gets for `event`, or None for events it does not need."""
    if event.type == "message_delta":
        body: dict[str, Any] = {"delta": event.data["delta"]}
    elif event.type == "tool_execution_start":
        body = {"tool": event.data["name"]}
    elif event.type == "agent_end":
        body = {"done": True, "usage": event.data.get("usage")}
    elif event.type == "agent_abort":
        body = {"done": True, "aborted": event.data.get("reason")}
    else:
        return None
    return f"data: {orjson.dumps(body).decode()}\n\n"


def _print(frame: str) -> None:
    print(frame, end="", flush=True)


async def main(fleet: Fleet, *, send: Callable[[str], None] = _print) -> list[Event]:
    """Stream one reply as SSE frames through `send`; returns the session's events."""
    session = await fleet.create_agent(
        model="mock:script", tools=["list_dir"], provider_opts=SCRIPT
    )

    async def forward(event: Event) -> None:
        frame = sse_frame(event)
        if frame is not None:
            send(frame)

    try:
        await session.prompt("Write a short poem about streaming.")
        try:
            return await turn_events(session, timeout=SILENCE_S, on_event=forward)
        except ReplyTimeout:
            await session.abort(reason="timeout")
            raise
    finally:
        await session.stop()


if __name__ == "__main__":
    run_example(main)

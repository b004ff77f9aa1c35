"""Recipe 5, steering: change the direction of a running turn without stopping it.

The steer arrives while the LLM is still streaming its first answer. It is queued
(`steering_received`), applied at the next step boundary (`steering_applied`, killing tools
that may be killed), and the next LLM call sees it as a user message; the turn goes on from
there and ends normally.

    python -m examples.steering
"""

from __future__ import annotations

from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

STEER = "Stop - use Elixir with Req and Floki instead, not Python."


def _write(path: str, content: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


SCRIPT: dict[str, Any] = {
    "script": [
        {
            "text": "Plan: a Python crawler for example.com with requests and BeautifulSoup.",
            "chunk_delay_ms": 40,
            "tool_calls": [_write("crawler.py", "import requests\n")],
        },
        {
            "text": "Switching to Elixir as asked.",
            "tool_calls": [_write("crawler.ex", "Req.get!(url).body |> Floki.parse_document!()\n")],
        },
        {"text": "crawler.ex fetches example.com with Req and extracts the links with Floki."},
    ]
}


async def main(fleet: Fleet, *, stop: bool = True) -> list[Event]:
    """Steer a turn as soon as it starts streaming; returns the turn's events.

    With `stop=False` the session stays, to read its history afterwards.
    """
    session = await fleet.create_agent(
        model="mock:script", tools=["write_file"], provider_opts=SCRIPT
    )
    events: list[Event] = []
    try:
        await session.prompt("Write a simple web crawler for example.com in Python.")
        while not events or events[-1].type != "message_delta":  # wrong way: it has started
            events.append(await session.next_event(timeout=30))
        await session.steer(STEER, ref="use-elixir")

        async def show(event: Event) -> None:
            if event.type in ("steering_received", "steering_applied"):
                print(f"{event.type}: {event.data}")
            elif event.type == "agent_end":
                print(f"reply: {event.data['last_message']['content']}")

        events += await turn_events(session, on_event=show)
        return events
    finally:
        if stop:
            await session.stop()


if __name__ == "__main__":
    run_example(main)

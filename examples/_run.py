"""What every example shares: the command-line entry point and reading one turn's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from flotilla import Fleet, Session, Settings
from schemas import Event

__all__ = ["TURN_END", "ask", "read_until", "run_example", "turn_events"]

TURN_END = frozenset({"agent_end", "agent_abort"})


async def turn_events(
    session: Session,
    *,
    timeout: float = 30.0,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
) -> list[Event]:
    """The session's events up to the end of the running turn (`agent_end` or `agent_abort`).

    `timeout` bounds the wait for each event, not the whole turn.
    """
    events: list[Event] = []
    while True:
        event = await session.next_event(timeout=timeout)
        events.append(event)
        if on_event is not None:
            await on_event(event)
        if event.type in TURN_END:
            return events


async def ask(session: Session, text: str) -> list[Event]:
    """Prompt `text` and return the turn's events, printing its answer or its first error."""
    await session.prompt(text)
    events = await turn_events(session)
    errors = [e.data for e in events if e.type == "error"]
    if errors:
        print(f"  {session.sid}: {errors[0]['code']} {errors[0].get('profile', '')}")
    else:
        print(f"  {session.sid}: {events[-1].data['last_message']['content']}")
    return events


async def read_until(
    stream: AsyncIterator[Event], done: Callable[[Event], bool], *, timeout: float = 30.0
) -> list[Event]:
    """The events of `stream` up to the first one `done` accepts; the stream is closed after."""
    seen: list[Event] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in stream:
                seen.append(event)
                if done(event):
                    break
    finally:
        aclose = getattr(stream, "aclose", None)  # an async generator: end its subscription
        if aclose is not None:
            await aclose()
    return seen


def run_example(main: Callable[[Fleet], Awaitable[list[Event]]]) -> None:
    """Run `main` against the fleet named by the FLOTILLA_* environment (`flotilla up`)."""

    async def connected() -> None:
        settings = Settings.from_env()
        async with await Fleet.connect(settings=settings) as fleet:
            events = await main(fleet)
        print(f"\n({len(events)} events)")

    asyncio.run(connected())

"""Small helpers shared by the engine tests: scripted tool calls and event collection."""

from __future__ import annotations

from typing import Any

from flotilla import Session
from schemas import Event


def script(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """`provider_opts` for `mock:script`."""
    return {"script": list(steps), **extra}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """One tool call of a script step."""
    return {"name": name, "arguments": arguments}


async def until(session: Session, *types: str, timeout: float = 10.0) -> list[Event]:
    """Every event of the session up to and including the first one of `types`."""
    seen = []
    while True:
        event = await session.next_event(timeout=timeout)
        seen.append(event)
        if event.type in types:
            return seen


async def until_end(session: Session, *, timeout: float = 10.0) -> list[Event]:
    return await until(session, "agent_end", "agent_abort", timeout=timeout)


def of_type(events: list[Event], type_: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type_]

"""Compaction: replace the older part of a long conversation with a summary message.

Triggered by the `compact_conversation` tool or by the session's `compactor` option (the
last LLM call's prompt tokens reached `trigger_tokens`). The summary is built offline (the
first line of each removed message), so compaction never costs an LLM call; the history list
in Redis is rewritten once, which is the one step whose cost grows with the history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers import _metrics
from workers.plugins import Hook, Skip

if TYPE_CHECKING:
    from workers._actor import SessionActor

DEFAULT_KEEP = 6
LINE_CHARS = 160


async def compact(actor: SessionActor, *, reason: str, request_id: str | None) -> int:
    """Compact the actor's history; returns how many messages were removed."""
    state = actor.state
    assert state is not None
    history = actor.history
    keep = state.options.compactor.keep_messages if state.options.compactor else DEFAULT_KEEP
    cut = _cut_point(history, keep)
    if cut <= 1:
        return 0
    outcome = await actor.hooks.run(
        Hook.BEFORE_COMPACT, {"messages": history[:cut], "reason": reason}, request_id=request_id
    )
    if isinstance(outcome.terminal, Skip):
        return 0
    _metrics.COMPACTIONS.labels("threshold" if reason == "threshold" else "requested").inc()
    await actor.emit("compact_start", {}, request_id=request_id)
    chars_before = actor.history_chars
    summary = {"role": "user", "content": _summary(history[:cut], reason)}
    actor.replace_history([summary, *history[cut:]])
    _metrics.COMPACTION_RATIO.observe(actor.history_chars / chars_before if chars_before else 1.0)
    _metrics.COMPACTED_MESSAGES.inc(cut)
    if state.current is not None:
        state.current.history_start = max(0, state.current.history_start - cut + 1)
    await actor.save()
    await actor.emit("compact_end", {"removed_count": cut}, request_id=request_id)
    return cut


def _cut_point(history: list[dict[str, Any]], keep: int) -> int:
    """Where the kept tail starts: at a user message, so no tool call loses its result."""
    cut = max(0, min(len(history) - 1, len(history) - keep))
    while cut > 0 and history[cut].get("role") != "user":
        cut -= 1
    return cut


def _summary(removed: list[dict[str, Any]], reason: str) -> str:
    lines = [f"[Summary of {len(removed)} earlier messages, compacted: {reason}]"]
    for message in removed:
        text = str(message.get("content") or "").strip().splitlines()
        first = text[0][:LINE_CHARS] if text else ""
        if message.get("tool_calls"):
            names = ", ".join(str(c.get("name")) for c in message["tool_calls"])
            first = f"{first} (called {names})".strip()
        if first:
            lines.append(f"- {message.get('role')}: {first}")
    return "\n".join(lines)

"""Large tool results go to the workspace; the LLM gets their head and a way to page on.

A result longer than the budget would crowd the context window, and cutting it silently
would hide the rest: the full text is kept in `.flotilla/results/` for `read_file`.
"""

from __future__ import annotations

import hashlib
import re

from workers.tools._workspace import Workspace, WorkspaceError

__all__ = ["RESULTS_DIR", "offload", "result_path"]

RESULTS_DIR = ".flotilla/results"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NOTE_RESERVE = 400


def result_path(call_id: str) -> str:
    """The workspace path of a call's offloaded result; distinct call ids get distinct paths."""
    name = _UNSAFE.sub("_", call_id)[:100].lstrip(".")
    if name != call_id:
        name = f"{name}-{hashlib.sha256(call_id.encode()).hexdigest()[:10]}"
    return f"{RESULTS_DIR}/{name}.txt"


async def offload(text: str, *, workspace: Workspace, call_id: str, max_chars: int) -> str:
    """`text` itself when it fits `max_chars`, else its head and a note naming the full copy."""
    if len(text) <= max_chars:
        return text
    path = result_path(call_id)
    head = _head(text, max_chars - _NOTE_RESERVE)
    shown = head.count("\n") + 1 if head else 0
    resume = shown + 1 if text[len(head) : len(head) + 1] == "\n" else max(shown, 1)
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    try:
        await workspace.write(path, text.encode("utf-8"))
    except WorkspaceError as exc:
        note = (
            f"[output truncated: showing {len(head):,} of {len(text):,} characters; the full "
            f"output could not be saved ({exc.message})]"
        )
    else:
        note = (
            f"[output truncated: showing {len(head):,} of {len(text):,} characters "
            f"({lines:,} lines). The full output is in {path}; page through it with "
            f'read_file(path="{path}", offset={resume}, limit=200)]'
        )
    return f"{head}\n{note}" if head else note


def _head(text: str, budget: int) -> str:
    """At most `budget` characters of `text`, ending at a line break when there is one."""
    if budget <= 0:
        return ""
    head = text[:budget]
    cut = head.rfind("\n")
    return head[:cut] if cut > 0 else head

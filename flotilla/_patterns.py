"""Regular expressions written by users and LLMs (grep's pattern, a plugin's patterns), run
with a time limit.

Python's `re` has none and keeps the GIL while it matches, even in a thread: one pattern that
backtracks catastrophically (`(x+x+)+y`) would freeze every session of a worker, and its
heartbeat with them. The `regex` module matches the same syntax, stops at a timeout and lets
other threads run meanwhile.
"""

from __future__ import annotations

import time

import regex

from flotilla.errors import FlotillaError

__all__ = ["Deadline", "PatternError", "PatternTooSlow", "UserPattern"]


class PatternError(FlotillaError, ValueError):
    """Not a regular expression."""

    code = "invalid_pattern"


class PatternTooSlow(FlotillaError):
    """A search ran out of its time (catastrophic backtracking, or a huge text)."""

    code = "pattern_too_slow"


class Deadline:
    """A time budget shared by the searches of one operation (grep over many files)."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise PatternTooSlow("the search ran out of time")
        return remaining


class UserPattern:
    """A compiled pattern whose searches stop at a deadline."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str, flags: int = 0) -> None:
        try:
            self._compiled = regex.compile(source, flags)
        except (regex.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise PatternError(f"invalid regular expression {source!r}: {exc}") from None
        self.source = source

    def search(self, text: str, deadline: Deadline) -> bool:
        """Whether `text` holds a match; PatternTooSlow past the deadline."""
        try:
            return self._compiled.search(text, concurrent=True, timeout=deadline.left()) is not None
        except TimeoutError:
            raise PatternTooSlow(f"the pattern {self.source!r} took too long") from None

    def __repr__(self) -> str:
        return f"UserPattern({self.source!r})"

"""Errors of the worker.

WorkerError                  root
├── Fenced                   a newer owner holds the session; drop it, never retry
├── Conflict                 the session changed under us (version mismatch); reload
├── StoreUnavailable         Redis failed at the connection level; the write may or may
│                            not have landed (reload, have the command redelivered)
└── CommandRejected          a command that cannot be applied: `code` (PROTOCOL §3)
                             decides between an error event and a dead letter
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of the worker's own errors."""


class Fenced(WorkerError):
    """A write or load was refused because a newer owner epoch holds the session."""


class Conflict(WorkerError):
    """A compare-and-set found another version than the one this actor holds."""


class StoreUnavailable(WorkerError):
    """The session store failed at the connection level; redis-py's errors end here."""


DEAD_LETTER_CODES = frozenset({"invalid_command", "session_not_found", "forbidden", "too_large"})


class CommandRejected(WorkerError):
    """A command not applied; dead-lettered when `code` is one of DEAD_LETTER_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def dead_letter(self) -> bool:
        return self.code in DEAD_LETTER_CODES

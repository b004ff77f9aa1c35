"""Errors of the worker.

WorkerError                  root
├── Fenced                   a newer owner holds the session; drop it, never retry
├── Superseded               a newer owner holds the shard; do not take it
├── Conflict                 the session changed under us (version mismatch); reload
├── StoreUnavailable         Redis failed at the connection level; the write may or may
│                            not have landed (reload, have the command redelivered)
└── CommandRejected          a command that cannot be applied: `code` (PROTOCOL §3)
                             decides between an error event and a dead letter

Foreign errors: those of INFRASTRUCTURE (NATS, Redis, the network) are retried like
StoreUnavailable; any other exception met while applying a command is a bug, and the command
is dead-lettered as `internal_error` rather than redelivered forever.
"""

from __future__ import annotations

import nats.errors

from flotilla.runtime import REDIS_ERRORS


class WorkerError(Exception):
    """Root of the worker's own errors."""


class Fenced(WorkerError):
    """A write or load was refused because a newer owner epoch holds the session."""


class Superseded(WorkerError):
    """A shard's consumer of a newer epoch exists: this worker's assignment is stale."""


class Conflict(WorkerError):
    """A compare-and-set found another version than the one this actor holds."""


class StoreUnavailable(WorkerError):
    """The session store failed at the connection level; redis-py's errors end here."""

    @classmethod
    def of(cls, exc: BaseException, what: str = "redis") -> StoreUnavailable:
        """Named with the error's class and message (redis-py's repr shows only the class)."""
        return cls(f"{what}: {type(exc).__name__}: {exc}")


DEAD_LETTER_CODES = frozenset(
    {"invalid_command", "session_not_found", "forbidden", "too_large", "internal_error"}
)
"""`internal_error`: a command that met a bug of the fleet, set aside rather than redelivered
forever (the worker logs the traceback; the client gets the code and no detail)."""

INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    *REDIS_ERRORS,
    ConnectionError,
    TimeoutError,
)
"""Failures of NATS, Redis or the network: retried, never taken for a bug of the command (a
file system's OSError is not one of them: retrying would meet it again)."""

RETRIED: tuple[type[BaseException], ...] = (StoreUnavailable, *INFRASTRUCTURE)
"""What the worker retries (the command redelivered, the turn resumed) rather than set aside."""


class CommandRejected(WorkerError):
    """A command not applied; dead-lettered when `code` is one of DEAD_LETTER_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def dead_letter(self) -> bool:
        return self.code in DEAD_LETTER_CODES

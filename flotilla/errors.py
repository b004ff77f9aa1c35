"""Errors raised by the Flotilla SDK and services.

FlotillaError                 root; `code` is a stable machine-readable string
├── ConfigurationError        bad settings or flags (programmer / operator error)
├── UnavailableError          NATS or Redis cannot be reached (retryable)
├── CommandError              the fleet answered a command with an `error` event
│                             (`code` is the PROTOCOL §3 code: invalid_command, ...)
└── ReplyTimeout              no `agent_end` / `agent_abort` within the caller's deadline
"""

from __future__ import annotations


class FlotillaError(Exception):
    """Root of every error Flotilla raises on purpose."""

    code: str = "flotilla_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigurationError(FlotillaError):
    code = "configuration"


class UnavailableError(FlotillaError):
    code = "unavailable"
    retryable = True


class CommandError(FlotillaError):
    """The fleet refused or failed a command; `command_id` names it when known."""

    def __init__(self, message: str, *, code: str, command_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.command_id = command_id


class ReplyTimeout(FlotillaError):
    code = "timeout"
    retryable = True

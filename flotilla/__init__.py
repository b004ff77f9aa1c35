"""Flotilla: CMDC agent sessions on a NATS JetStream + Redis worker fleet.

The SDK (`Fleet`, `Session`), settings and the `flotilla` command line live here.
"""

from flotilla._sdk import Fleet, FleetStatus, Session
from flotilla._toolserver import ToolCall, ToolServer, serve_tool
from flotilla.errors import (
    CommandError,
    ConfigurationError,
    FlotillaError,
    ReplyTimeout,
    UnavailableError,
)
from flotilla.settings import Settings

__all__ = [
    "CommandError",
    "ConfigurationError",
    "Fleet",
    "FleetStatus",
    "FlotillaError",
    "ReplyTimeout",
    "Session",
    "Settings",
    "ToolCall",
    "ToolServer",
    "UnavailableError",
    "serve_tool",
]

"""Identifier rules of PROTOCOL §1: every identifier is a safe NATS subject token."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from pydantic import StringConstraints

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
COMMAND_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"

_TOKEN = re.compile(TOKEN_PATTERN)
_COMMAND_ID = re.compile(COMMAND_ID_PATTERN)

DEFAULT_TENANT = "default"
NO_GROUP = "_"

Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]
"""A tenant, session, group, approval or checkpoint id."""

CommandId = Annotated[str, StringConstraints(pattern=COMMAND_ID_PATTERN)]


def is_token(value: str) -> bool:
    """True when `value` may be used as a tenant, session or group id."""
    return _TOKEN.fullmatch(value) is not None


def is_command_id(value: str) -> bool:
    """True when `value` is 1..128 printable ASCII characters without spaces."""
    return _COMMAND_ID.fullmatch(value) is not None


def new_session_id() -> str:
    """A random session id: 16 lowercase hex characters."""
    return secrets.token_hex(8)


def new_command_id() -> str:
    """A random command id: 16 lowercase hex characters."""
    return secrets.token_hex(8)

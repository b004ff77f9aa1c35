"""Reading a command off the stream: size, subject tokens, JSON, the union of PROTOCOL §3.

Every way a command can be invalid ends here as CommandRejected with its code, so the actor
refuses it the same way (error event, dead letter) whatever was wrong.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from schemas import COMMAND_ADAPTER, Command, is_token
from workers._delivery import Delivery
from workers.errors import CommandRejected


def parse_command(delivery: Delivery, *, max_bytes: int) -> Command:
    """The command a delivery carries, or CommandRejected saying what is wrong with it."""
    data = delivery.msg.data
    if len(data) > max_bytes:
        raise CommandRejected(
            "too_large",
            f"command of {len(data)} bytes exceeds {max_bytes}",
        )
    if not (is_token(delivery.tenant) and is_token(delivery.sid)):
        raise CommandRejected(
            "invalid_command", "tenant and session id must match [A-Za-z0-9_-]{1,64}"
        )
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CommandRejected("invalid_command", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandRejected("invalid_command", "a command must be a JSON object")
    body.setdefault("op", delivery.op)  # the subject names the op; the body may omit it
    try:
        command = COMMAND_ADAPTER.validate_python(body)
    except ValidationError as exc:
        raise CommandRejected("invalid_command", _describe(exc)) from None
    if command.op != delivery.op:
        raise CommandRejected(
            "invalid_command", f"op {command.op!r} differs from the subject's {delivery.op!r}"
        )
    return command


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "command"
    return f"{where}: {first.get('msg')} ({exc.error_count()} error(s))"


def command_id_of(data: bytes) -> str | None:
    """The `id` of a raw command, if it has a usable one (for the error event of a refusal)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])[:128]
    return None

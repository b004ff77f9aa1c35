"""Reading a command off the stream: size, subject tokens, JSON, the union of PROTOCOL §3.

Every way a command can be invalid ends here as CommandRejected with its code, so the actor
refuses it the same way (error event, dead letter) whatever was wrong.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from flotilla.runtime import SEALED_OPS, FleetCipher, seal_command
from schemas import (
    COMMAND_ADAPTER,
    MAX_DEPTH,
    Command,
    deeper_than,
    describe_errors,
    is_token,
    unknown_fields,
    unknown_message,
)
from workers._delivery import Delivery
from workers.errors import CommandRejected


def parse_command(
    delivery: Delivery, *, max_bytes: int, cipher: FleetCipher | None = None
) -> Command:
    """The command a delivery carries, or CommandRejected saying what is wrong with it.

    With the fleet key, the secrets of its options are sealed at once (a client without the
    key sent them in plain text): the state keeps only sealed ones."""
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
    if deeper_than(body):
        raise CommandRejected(
            "invalid_command", f"a command may nest {MAX_DEPTH} arrays and objects deep at most"
        )
    body.setdefault("op", delivery.op)  # the subject names the op; the body may omit it
    if cipher is not None and body["op"] in SEALED_OPS:
        body = seal_command(body, cipher, delivery.tenant)
    try:
        command = COMMAND_ADAPTER.validate_python(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:  # the union's tag leads each location: the op is known already
            if error["loc"][:1] == (body["op"],):
                error["loc"] = error["loc"][1:]
        raise CommandRejected("invalid_command", describe_errors(list(errors))) from None
    if command.op != delivery.op:
        raise CommandRejected(
            "invalid_command", f"op {command.op!r} differs from the subject's {delivery.op!r}"
        )
    unknown = unknown_fields(type(command), body)
    if unknown:
        raise CommandRejected("invalid_command", unknown_message(unknown))
    return command


def command_id_of(data: bytes) -> str | None:
    """The `id` of a raw command, if it has a usable one (for the error event of a refusal)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])[:128]
    return None

"""Commands one session sends another (a sub-agent's creation, its report, an abort):
JetStream publishes with a message id, so a re-publication after a crash takes effect once."""

from __future__ import annotations

from typing import Any

import orjson
from nats.js import JetStreamContext

from flotilla.runtime import publish_retrying
from schemas import Subjects


class CommandPublisher:
    def __init__(self, js: JetStreamContext, *, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

    async def publish(
        self, *, tenant: str, sid: str, op: str, body: dict[str, Any], msg_id: str
    ) -> None:
        """Publish and wait for the stream's acknowledgement (the command is then stored),
        retried with the same message id through a stream leader election."""
        await publish_retrying(
            self._js,
            self._subjects.cmd(tenant, sid, op),
            orjson.dumps(body),
            headers={"Nats-Msg-Id": msg_id},
        )

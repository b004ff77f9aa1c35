"""The campaign's client: plain nats-py, as any user would. JetStream publishes with the
command id as `Nats-Msg-Id` (a failed publish is retried with the same id), and core
subscriptions on the events the judge needs, deduplicated by their `Nats-Msg-Id`."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from ops.chaos._verdict import End, Turn
from schemas import Subjects

TENANT = "chaos"

PUBLISH_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)
"""What a JetStream publish raises while a stream leader, a node or the connection is lost."""


class PublishFailed(Exception):
    """The broker did not acknowledge a command within the publish budget."""


class LoadClient:
    """Publishes commands and records every distinct terminal event by command id."""

    def __init__(self, nc: NATS, subjects: Subjects, *, publish_budget_s: float) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.publish_budget_s = publish_budget_s
        self.ends: dict[str, list[End]] = defaultdict(list)
        self.created: set[str] = set()
        self.errors: list[dict[str, Any]] = []
        self.resumed = 0
        self.copies = 0
        self.publish_retries = 0
        self.longest_publish_ms = 0.0
        """The publish gap: the longest a command took from first try to the stream's
        acknowledgement (a stream leader's node killed: until a new leader is elected)."""
        self.missed_live = 0
        self._seen: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        base = f"{self.subjects.prefix}.evt.{TENANT}.*.*"
        for suffix in (
            "progress.agent_end",
            "control.agent_abort",
            "control.session_created",
            "control.turn_resumed",
            "monitor.error",
        ):
            await self.nc.subscribe(f"{base}.{suffix}", cb=self._on_event)

    async def recover_from_stream(self) -> int:
        """Read the terminal events FLOTILLA_EVT stored and take those this client did not
        see live: a core subscription misses what is published while its own connection
        moves to another node (the one it was on was killed), the stream does not. Returns
        how many were recovered; each counts at the time its worker published it."""
        before = len(self._seen)
        base = f"{self.subjects.prefix}.evt.{TENANT}.*.*"
        for suffix in ("progress.agent_end", "control.agent_abort", "control.session_created"):
            sub = await self.js.subscribe(
                f"{base}.{suffix}",
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=1.0)
                    except nats.errors.TimeoutError:
                        break
                    await self._on_event(msg, stored=True)
            finally:
                await sub.unsubscribe()
        self.missed_live += len(self._seen) - before
        return len(self._seen) - before

    async def _on_event(self, msg: Msg, *, stored: bool = False) -> None:
        at = time.monotonic()
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if stored and msg_id is None:
            return  # cannot tell it from the live copy: judged by what was seen live
        if msg_id is not None:
            if msg_id in self._seen:
                self.copies += 1  # a republished copy after a failover: the same event
                return
            self._seen.add(msg_id)
        event = orjson.loads(msg.data)
        if stored:  # when its worker published it, on this clock
            at -= max(0.0, time.time() - int(event.get("ts") or 0) / 1000)
        kind = event.get("type")
        request_id = event.get("request_id") or ""
        data = event.get("data") or {}
        if kind == "session_created":
            self.created.add(event.get("sid", ""))
            self._wake(request_id)
        elif kind == "turn_resumed":
            self.resumed += 1
        elif kind == "error":
            self.errors.append({"sid": event.get("sid"), "request_id": request_id, **data})
        elif kind in ("agent_end", "agent_abort"):
            last = data.get("last_message") or {}
            reply = last.get("content") if isinstance(last, dict) else None
            self.ends[request_id].append(
                End(request_id, kind, at, int(event.get("turn") or 0), str(reply or ""))
            )
            self._wake(request_id)

    def _wake(self, request_id: str) -> None:
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def publish(self, sid: str, op: str, body: dict[str, Any]) -> tuple[str, float]:
        """Publish one command until the broker acknowledges it; (command id, first try)."""
        command_id = secrets.token_hex(8)
        payload = orjson.dumps({**body, "op": op, "id": command_id})
        subject = self.subjects.cmd(TENANT, sid, op)
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                await self.js.publish(
                    subject, payload, timeout=1.0, headers={"Nats-Msg-Id": command_id}
                )
                took = (time.monotonic() - started) * 1000
                self.longest_publish_ms = max(self.longest_publish_ms, round(took, 1))
                return command_id, started
            except PUBLISH_ERRORS as exc:
                if time.monotonic() - started > self.publish_budget_s:
                    raise PublishFailed(f"{op} {sid}: {exc!r}") from exc
                self.publish_retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def prompt(self, sid: str, index: int, text: str) -> Turn:
        command_id, started = await self.publish(sid, "prompt", {"text": text})
        return Turn(command_id, sid, index, text, started)

    async def wait_event(self, command_id: str, timeout: float, *, sid: str = "") -> bool:
        """Whether the command ended (agent_end or agent_abort), or created session `sid`,
        within `timeout`."""
        if self.ends.get(command_id) or sid in self.created:
            return True
        future = self._waiters.setdefault(command_id, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return bool(self.ends.get(command_id)) or sid in self.created
        return True

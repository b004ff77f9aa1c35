"""SessionActor: one per resident session; applies its commands in stream order and runs
its turns. State is persisted (fenced CAS) before a command is acknowledged and at every
step boundary, so any worker can continue where this one stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, assert_never

import orjson
from pydantic import ValidationError

from schemas import (
    COMMAND_ADAPTER,
    Abort,
    Approve,
    AttachTool,
    Checkpoint,
    Command,
    Create,
    DetachTool,
    Hibernate,
    Prompt,
    QueuedPrompt,
    Reject,
    Respond,
    SessionState,
    Steer,
    Stop,
    SwitchModel,
    UpdatePluginOpts,
    is_token,
)
from workers import _metrics
from workers._context import DeadLetterRequest, WorkerContext
from workers._delivery import Delivery
from workers._events import now_ms
from workers._turn import TurnRunner
from workers.errors import CommandRejected, Conflict, Fenced, StoreUnavailable

log = logging.getLogger(__name__)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


RESUME = object()
"""Mailbox item asking the actor to load its session and resume an unfinished turn."""


class SessionActor:
    """Owns one session while it is resident on this worker."""

    def __init__(
        self,
        *,
        sid: str,
        shard: int,
        epoch: int,
        ctx: WorkerContext,
        on_exit: Callable[[SessionActor], None],
    ) -> None:
        self.sid = sid
        self.shard = shard
        self.epoch = epoch
        self._ctx = ctx
        self._on_exit = on_exit
        # Bounded by the worker's command slots: each queued delivery holds one.
        self.mailbox: asyncio.Queue[Delivery | object] = asyncio.Queue()
        self.state: SessionState | None = None
        self.version = 0
        self.history: list[dict[str, Any]] = []
        self.history_chars = 0
        self._unsaved: list[bytes] = []
        self._keep = -1
        self._save_lock = asyncio.Lock()
        self.turn: TurnRunner | None = None
        self.last_used = 0.0
        self.closed = False
        self.needs_resume = False
        self._handled = asyncio.Event()
        self._handled.set()

    # -- the actor loop ----------------------------------------------------------------------
    async def run(self) -> None:
        item: Delivery | object | None = None
        try:
            while True:
                item = await self.mailbox.get()
                self._handled.clear()
                try:
                    if isinstance(item, Delivery):
                        await self._handle(item)
                    elif isinstance(item, _Failed):
                        if isinstance(item.exc, Fenced):
                            raise item.exc
                        return
                    elif self.state is None:
                        await self._load()
                finally:
                    self._handled.set()
                item = None
                if self.state is None and self.mailbox.empty():
                    return  # hibernated, stopped or missing: nothing resident any more
        except Fenced:
            _metrics.FENCED.inc()
            log.warning("session %s: fenced by a newer owner; dropping it", self.sid)
        finally:
            self.closed = True
            if isinstance(item, Delivery):
                item.abandon()  # taken from the mailbox, not applied: redelivered later
            await self._stop_turn()
            while not self.mailbox.empty():
                queued = self.mailbox.get_nowait()
                if isinstance(queued, Delivery):
                    queued.abandon()
            self._on_exit(self)

    async def quiesce(self) -> None:
        """Wait until no command is half applied, so the actor can be cancelled safely.

        Returns with the actor parked between mailbox items; cancel it before awaiting
        anything else. Its turn (if any) stops by itself at a safe point when cancelled.
        """
        await self._handled.wait()

    def fail(self, exc: BaseException) -> None:
        """Called by the turn task when it cannot go on: the actor drops the session."""
        log.warning("session %s: turn stopped: %r", self.sid, exc)
        self.needs_resume = not isinstance(exc, Fenced)
        self.mailbox.put_nowait(_Failed(exc))

    def idle(self) -> bool:
        return self.turn is None and self.mailbox.empty()

    async def _stop_turn(self) -> None:
        if self.turn is not None:
            await self.turn.cancel()
            self.turn = None

    # -- loading and saving ------------------------------------------------------------------
    async def _load(self, request_id: str | None = None) -> None:
        loaded = await self._ctx.store.load(self.sid, epoch=self.epoch)
        if loaded is None:
            return
        self.state = SessionState.model_validate_json(loaded.state)
        self.version = loaded.version
        self.history = [orjson.loads(raw) for raw in loaded.history[: self.state.history_len]]
        self.history_chars = sum(len(m.get("content") or "") for m in self.history)
        if len(loaded.history) != self.state.history_len:
            self._keep = self.state.history_len  # drop entries of a write that was fenced
        if self.state.status == "hibernated":
            self.state.status = "idle"
            await self.emit(
                "session_resumed",
                {"from": "snapshot", "worker": self._ctx.worker_id},
                request_id=request_id,
            )
        if self.state.unannounced:
            await self._announce_unpublished()
        if self.state.current is not None or self.state.prompt_queue:
            self._start_turn(resumed=True)

    def append_message(self, message: dict[str, Any]) -> None:
        self.history.append(message)
        self.history_chars += len(message.get("content") or "")
        self._unsaved.append(orjson.dumps(message))

    async def save(self) -> None:
        """Persist the state and the messages appended since the last save (a step boundary)."""
        state = self.state
        assert state is not None
        async with self._save_lock:
            state.history_len = len(self.history)
            state.last_active_ms = now_ms()
            append, self._unsaved = self._unsaved, []
            keep, self._keep = self._keep, -1
            idle = state.current is None and state.status == "idle"
            after = state.options.hibernate_after_ms or self._ctx.settings.hibernate_after_ms
            self.version = await self._ctx.store.save(
                self.sid,
                epoch=self.epoch,
                version=self.version,
                state=state.model_dump_json().encode(),
                append=append,
                keep=keep,
                shard=self.shard,
                tenant=state.tenant,
                active=state.current is not None or bool(state.prompt_queue),
                hibernate_at_ms=state.last_active_ms + after if idle else None,
            )

    async def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        request_id: str | None = None,
        meta: dict[str, Any] | None = None,
        turn: int | None = None,
        msg_id: str | None = None,
    ) -> None:
        state = self.state
        assert state is not None
        await self._ctx.events.publish(
            tenant=state.tenant,
            group=state.group,
            sid=self.sid,
            type_=type_,
            data=data,
            turn=state.turns if turn is None else turn,
            request_id=request_id,
            meta=meta,
            msg_id=msg_id,
        )

    async def _announce_unpublished(self) -> None:
        """After a load: publish the saved events the previous owner did not get out."""
        state = self.state
        assert state is not None
        stored = {
            p.type: await self._ctx.events.last_stored(
                tenant=state.tenant, group=state.group, sid=self.sid, type_=p.type
            )
            for p in state.unannounced
        }
        state.unannounced = [
            p
            for p in state.unannounced
            if (stored[p.type] or {}).get("turn") != p.turn
            or (stored[p.type] or {}).get("request_id") != p.request_id
        ]
        await self.announce_pending()

    async def announce_pending(self) -> None:
        """Publish the events saved as unannounced, then forget them (saved with the next step)."""
        state = self.state
        assert state is not None
        for pending in state.unannounced:
            await self.emit(
                pending.type,
                pending.data,
                request_id=pending.request_id,
                meta=pending.meta,
                turn=pending.turn,
                msg_id=pending.msg_id,
            )
        state.unannounced = []

    # -- commands ----------------------------------------------------------------------------
    async def _handle(self, delivery: Delivery) -> None:
        op = delivery.op
        try:
            command = self._parse(delivery)
            if self.state is None:
                await self._load(command.id or f"seq-{delivery.seq}")
            state = self.state
            if state is not None and delivery.seq <= state.applied_seq:
                await delivery.ack(op, "duplicate")
                return
            if state is None and not isinstance(command, Create):
                raise CommandRejected("session_not_found", f"no session {self.sid!r}")
            if state is not None and state.tenant != delivery.tenant:
                raise CommandRejected("forbidden", "the session belongs to another tenant")
            await self._apply(command, delivery)
        except CommandRejected as exc:
            await self._reject(delivery, exc)
        except Fenced:
            delivery.abandon()  # the new owner's consumer delivers it again
            raise
        except Conflict as exc:
            # another actor of this worker wrote meanwhile (a brief overlap while one closes):
            # reload, and have the command back soon rather than after the ack wait
            log.warning("session %s: %s; reloading", self.sid, exc)
            self.state = None
            await delivery.nak(0.05)
        except StoreUnavailable as exc:
            log.warning(
                "session %s: %s; command %d will be redelivered", self.sid, exc, delivery.seq
            )
            self.state = None  # the write may or may not have landed: reload next time
            await self._stop_turn()
            await delivery.nak(1.0)

    def _parse(self, delivery: Delivery) -> Command:
        data = delivery.msg.data
        if len(data) > self._ctx.settings.max_command_bytes:
            raise CommandRejected(
                "too_large",
                f"command of {len(data)} bytes exceeds {self._ctx.settings.max_command_bytes}",
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

    async def _reject(self, delivery: Delivery, exc: CommandRejected) -> None:
        command_id = _command_id(delivery.msg.data)
        state = self.state
        same_tenant = state is not None and state.tenant == delivery.tenant
        await self._ctx.events.publish(
            tenant=delivery.tenant,
            group=state.group if same_tenant and state else None,
            sid=self.sid,
            type_="error",
            data={"code": exc.code, "message": exc.message, "command_id": command_id},
            turn=state.turns if same_tenant and state else 0,
            request_id=command_id,
        )
        if exc.dead_letter:
            await self._ctx.dead_letter(
                DeadLetterRequest(
                    tenant=delivery.tenant,
                    sid=self.sid,
                    seq=delivery.seq,
                    code=exc.code,
                    message=exc.message,
                    data=delivery.msg.data,
                    headers=dict(delivery.msg.headers or {}),
                )
            )
            _metrics.DEAD_LETTERS.labels(exc.code).inc()
            await delivery.term(delivery.op, exc.code)
        else:
            await delivery.ack(delivery.op, exc.code)

    async def _apply(self, command: Command, delivery: Delivery) -> None:
        rid = command.id or f"seq-{delivery.seq}"
        if isinstance(command, Create):
            await self._create(command, delivery, rid)
        elif isinstance(command, Prompt):
            await self._prompt(command, delivery, rid)
        elif isinstance(command, Hibernate):
            await self._hibernate(delivery, rid)
        elif isinstance(command, Stop):
            await self._stop(delivery, rid)
        elif isinstance(
            command,
            Steer
            | Abort
            | Approve
            | Reject
            | Respond
            | SwitchModel
            | AttachTool
            | DetachTool
            | UpdatePluginOpts
            | Checkpoint,
        ):
            raise CommandRejected("unsupported", f"op {command.op!r} is not supported yet")
        else:
            assert_never(command)

    async def _create(self, command: Create, delivery: Delivery, rid: str) -> None:
        if self.state is not None:
            raise CommandRejected("already_exists", f"session {self.sid!r} already exists")
        ts = now_ms()
        # Prior messages go to the appended history, not into the state rewritten every step.
        options = command.model_dump(
            exclude={"op", "id", "ts", "meta", "from_checkpoint", "messages"}
        )
        self.state = SessionState.model_validate(
            {
                "sid": self.sid,
                "tenant": delivery.tenant,
                "options": options,
                "created_ms": ts,
                "last_active_ms": ts,
                "model": command.model,
                "applied_seq": delivery.seq,
            }
        )
        self.version = 0
        for message in command.messages:
            self.append_message(message.model_dump(exclude_none=True))
        await self.save()
        await delivery.ack("create")
        await self.emit("session_created", {}, request_id=rid)

    async def _prompt(self, command: Prompt, delivery: Delivery, rid: str) -> None:
        state = self.state
        assert state is not None
        state.applied_seq = delivery.seq
        state.prompt_count += 1
        if self.turn is not None:
            if command.strategy == "reject":
                await self.save()
                await delivery.ack("prompt", "rejected")
                await self.emit(
                    "prompt_rejected", {"text": command.text, "reason": "busy"}, request_id=rid
                )
                return
            if command.strategy != "enqueue":
                raise CommandRejected(
                    "unsupported", f"strategy {command.strategy!r} is not supported yet"
                )
            state.prompt_queue.append(
                QueuedPrompt(text=command.text, request_id=rid, meta=command.meta)
            )
            await self.save()
            await delivery.ack("prompt", "queued")
            await self.emit(
                "prompt_queued",
                {"text": command.text, "queued": True},
                request_id=rid,
                meta=command.meta or None,
            )
            return
        TurnRunner.begin(self, command.text, rid, command.meta)
        await self.save()
        await delivery.ack("prompt")
        await self.emit(
            "prompt_received",
            {"text": command.text, "queued": False},
            request_id=rid,
            meta=command.meta or None,
        )
        await self.emit("agent_start", {}, request_id=rid)
        self._start_turn(resumed=False)

    def _start_turn(self, *, resumed: bool) -> None:
        self.turn = TurnRunner(self, self._ctx, resumed=resumed)

    async def _hibernate(self, delivery: Delivery, rid: str) -> None:
        state = self.state
        assert state is not None
        if self.turn is not None:
            raise CommandRejected("busy", "a turn is running; hibernate when idle")
        state.applied_seq = delivery.seq
        state.status = "hibernated"
        await self.save()
        await delivery.ack("hibernate")
        await self.emit("session_hibernated", {}, request_id=rid)
        self._drop()

    async def _stop(self, delivery: Delivery, rid: str) -> None:
        state = self.state
        assert state is not None
        if self.turn is not None:
            await self._stop_turn()
            await self.emit("agent_abort", {"reason": "stopped"}, request_id=rid)
        await self._ctx.store.delete(
            self.sid, epoch=self.epoch, version=self.version, shard=self.shard, tenant=state.tenant
        )
        await delivery.ack("stop")
        await self.emit("session_stopped", {}, request_id=rid)
        self._drop()

    def _drop(self) -> None:
        self.state = None
        self.history = []
        self.history_chars = 0
        self.version = 0


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "command"
    return f"{where}: {first.get('msg')} ({exc.error_count()} error(s))"


def _command_id(data: bytes) -> str | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])[:128]
    return None

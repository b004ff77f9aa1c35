"""SessionActor: one per resident session; applies its commands in stream order and runs
its turns. State is persisted (fenced CAS) before a command is acknowledged and at every
step boundary, so any worker can continue where this one stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from flotilla.settings import Settings
from schemas import (
    Create,
    SessionState,
)
from workers import _metrics, _ops
from workers._context import DeadLetterRequest, WorkerContext
from workers._delivery import Delivery
from workers._events import now_ms
from workers._parse import command_id_of, parse_command
from workers._plugin_host import SessionHooks
from workers._plugin_opts import apply_deferred_plugin_opts
from workers._prompting import system_prompt
from workers._timers import ApprovalTimers
from workers._turn import TurnRunner
from workers.errors import (
    RETRIED,
    CommandRejected,
    Conflict,
    Fenced,
    StoreUnavailable,
)
from workers.plugins import PluginChain, PluginLoadError, load_plugins
from workers.tools import Tool, Workspace, open_workspace

log = logging.getLogger(__name__)

_TRIED_AGAIN: tuple[type[BaseException], ...] = (Conflict, *RETRIED)
"""What a command meets that is tried again in place (an outage, a write conflict)."""


@dataclass(frozen=True, slots=True)
class Written:
    """The session as this worker last wrote it at `epoch`. Redis acknowledges a write once
    a replica has it (WAIT), yet a failover can still promote another replica that lacks it
    and the write is gone, with the commands it applied already acknowledged. No one else
    writes the session at this epoch, so a stored version below this one means exactly
    that: it is written again from here instead of the commands being lost."""

    epoch: int
    version: int
    state: bytes
    history: list[dict[str, Any]]
    """The actor's history list itself, not a copy: messages are only appended to it (the
    first `history_len` are the ones written); a rewrite replaces the list."""
    history_len: int


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


RESUME = object()
"""Mailbox item asking the actor to load its session and resume an unfinished turn."""

HIBERNATE = object()
"""Mailbox item: the turn runner stopped, so a deferred `hibernate` may now take effect."""

UPDATE_PLUGINS = object()
"""Mailbox item: the turn runner stopped to wait (an approval, an answer), so the plugin
options deferred while it ran apply now, as for an idle session."""


class SessionActor:
    """Owns one session while it is resident on this worker."""

    def __init__(
        self,
        *,
        tenant: str,
        sid: str,
        shard: int,
        epoch: int,
        ctx: WorkerContext,
        on_exit: Callable[[SessionActor], None],
        written: Written | None = None,
    ) -> None:
        self.tenant = tenant
        self.sid = sid
        self.shard = shard
        self.epoch = epoch
        self._ctx = ctx
        self._on_exit = on_exit
        # Bounded by the worker's command slots: each queued delivery holds one.
        self.mailbox: asyncio.Queue[Delivery | object] = asyncio.Queue()
        self.state: SessionState | None = None
        self.version = 0
        self.written = written
        """The last write of the session (this actor's, or a predecessor's that an outage
        stopped), until the session leaves the worker."""
        self.history: list[dict[str, Any]] = []
        self.history_chars = 0
        self._unsaved: list[bytes] = []
        self._keep = -1
        self._floor = 0
        """The lowest version the next save may write (after a write-back, past the copy's)."""
        self._timeout_at: int | None = None
        """The approval-timeout schedule entry as last written (saves write it on change)."""
        self._save_lock = asyncio.Lock()
        self.turn: TurnRunner | None = None
        self.hibernation: str | None = None
        """The request id of a `hibernate` waiting for the turn runner to stop."""
        self.hooks = SessionHooks(self, PluginChain([]))
        self._workspace: Workspace | None = None
        self._lingering: set[asyncio.Task[Any]] = set()
        self._timers = ApprovalTimers(ctx, tenant, sid, resident=lambda: self.state is not None)
        self.last_used = 0.0
        self.closed = False
        self.needs_resume = False
        self._handled = asyncio.Event()
        self._handled.set()

    @property
    def settings(self) -> Settings:
        return self._ctx.settings

    @property
    def ctx(self) -> WorkerContext:
        return self._ctx

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
                    elif item is HIBERNATE:
                        await self._hibernate_deferred()
                    elif item is UPDATE_PLUGINS:
                        await self._update_plugins_deferred()
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
        except RETRIED as exc:  # Redis or NATS out while loading, hibernating...
            _metrics.RESUMES_DEFERRED.inc()
            log.warning("session %s: %r; the worker resumes it soon", self.sid, exc)
            self.state = None
            self.needs_resume = True  # an outage never strands a turn: tried again each second
        finally:
            self.closed = True
            # set down what is unapplied before anything else can run: a new actor of the
            # session may start at the next await, and its commands must find these
            if isinstance(item, Delivery):
                item.abandon()  # taken from the mailbox, not applied: redelivered later
            while not self.mailbox.empty():
                queued = self.mailbox.get_nowait()
                if isinstance(queued, Delivery):
                    queued.abandon()
            await self.stop_turn()
            await self._drop_background()
            self._on_exit(self)

    async def quiesce(self) -> None:
        """Wait until no command is half applied, so the actor can be cancelled safely.

        Returns with the actor parked between mailbox items; cancel it before awaiting
        anything else. Its turn (if any) stops by itself at a safe point when cancelled.
        """
        await self._handled.wait()

    def fail(self, exc: BaseException) -> None:
        """Called by the turn task when it cannot go on: the actor drops the session."""
        expected = isinstance(exc, Fenced | StoreUnavailable | Conflict)
        log.warning("session %s: turn stopped: %r", self.sid, exc, exc_info=not expected)
        self.needs_resume = not isinstance(exc, Fenced)
        self.mailbox.put_nowait(_Failed(exc))

    def idle(self) -> bool:
        return self.turn is None and self.mailbox.empty()

    async def stop_turn(self, *, detach: set[str] | None = None) -> None:
        if self.turn is not None:
            await self.turn.cancel(detach=detach)
            self.turn = None

    def start_turn(self, *, resumed: bool = False, end_reason: str | None = None) -> None:
        """Run the current turn (or the queue) in a task; a session has one runner at most."""
        assert self.turn is None, "a turn runner is already running"
        self.hibernation = None  # the session works again: a deferred hibernation is moot
        state = self.state
        assert state is not None
        if state.current is not None:
            # not suspended from now on: a command handled before the task starts sees it busy
            state.current.suspended = False
            state.status = "running"
        self.turn = TurnRunner(self, self._ctx, resumed=resumed, end_reason=end_reason)

    def resume_turn(self, *, end_reason: str | None = None) -> None:
        """Carry a waiting turn on: a new runner, or the one still saving its suspension."""
        self.hibernation = None
        if self.turn is None:
            self.start_turn(end_reason=end_reason)
        else:
            self.turn.request_resume(end_reason)

    def turn_stopped(self) -> None:
        """Called by the turn runner as it exits (its turn ended or waits for the user)."""
        self.turn = None
        state = self.state
        if state is not None and state.current is not None and state.deferred_plugin_opts:
            self.mailbox.put_nowait(UPDATE_PLUGINS)
        if self.hibernation is not None:
            self.mailbox.put_nowait(HIBERNATE)

    async def hibernate(self, request_id: str, delivery: Delivery | None = None) -> None:
        """Persist the session as hibernated (with the command that asked, if given) and
        drop it from memory; the next command loads it again."""
        state = self.state
        assert state is not None
        state.status = "hibernated"
        if delivery is not None:
            await self.commit(delivery)
        else:
            await self.save()
        await self.emit("session_hibernated", {}, request_id=request_id)
        _metrics.HIBERNATIONS.inc()
        self.drop()

    async def _update_plugins_deferred(self) -> None:
        state = self.state
        if state is not None and self.turn is None and state.deferred_plugin_opts:
            await apply_deferred_plugin_opts(self)

    async def _hibernate_deferred(self) -> None:
        request_id, self.hibernation = self.hibernation, None
        if request_id is not None and self.state is not None and self.turn is None:
            await self.hibernate(request_id)

    def linger(self, task: asyncio.Task[Any]) -> None:
        """Keep a tool call the user chose not to kill running (cancelled if the session
        leaves this worker)."""
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)

    async def _drop_background(self) -> None:
        await self._timers.cancel_all()
        for task in self._lingering:
            task.cancel()
        await asyncio.gather(*self._lingering, return_exceptions=True)
        self._lingering.clear()

    # -- loading and saving ------------------------------------------------------------------
    async def _load(self, request_id: str | None = None) -> None:
        loaded = await self._ctx.store.load(self.tenant, self.sid, epoch=self.epoch)
        written = self.written
        stored_version = loaded.version if loaded is not None else 0
        if written is not None and written.epoch == self.epoch and stored_version < written.version:
            await self._write_again(written, stored_version)
            state = self.state
            assert state is not None
        elif loaded is None:
            return
        else:
            state = self.state = SessionState.model_validate_json(loaded.state)
            self.version = loaded.version
            self._timeout_at = _earliest_timeout(state)  # what the save of this state wrote
            self.history = [orjson.loads(raw) for raw in loaded.history[: state.history_len]]
            self.history_chars = sum(len(m.get("content") or "") for m in self.history)
            if len(loaded.history) != state.history_len:
                self._keep = state.history_len  # drop entries of a write that was fenced
        self.attach_plugins()
        if state.status == "hibernated":
            state.status = "idle"
            await self.emit(
                "session_resumed",
                {"from": "snapshot", "worker": self._ctx.worker_id},
                request_id=request_id,
            )
        if state.unannounced:
            await self._announce_unpublished()
        if state.outbox:
            await self.flush_outbox()
        self.arm_timers()
        current = state.current
        if (current is not None and not current.suspended) or (
            current is None and state.prompt_queue
        ):
            self.start_turn(resumed=current is not None)

    async def _write_again(self, written: Written, stored_version: int) -> None:
        """Redis holds an older version than this worker wrote at its epoch (or none): a
        failover lost acknowledged writes. Write the session back as this worker had it."""
        _metrics.STORE_WRITES_LOST.inc()
        log.warning(
            "session %s: Redis lost acknowledged writes (holds version %d, this worker wrote "
            "%d; a failover to a replica that lacked them); written again",
            self.sid,
            stored_version,
            written.version,
        )
        self.state = SessionState.model_validate_json(written.state)
        self.version = stored_version
        self._floor = written.version + 1  # versions never go back: a stale copy stays stale
        self._timeout_at = None  # the schedule entry went back with the rest: write it
        self.replace_history(written.history[: written.history_len])
        await self.save()

    def attach_plugins(self) -> None:
        """Build the session's plugin chain from its options and hot-updated opts."""
        state = self.state
        assert state is not None
        specs: list[Any] = []
        for spec in state.options.plugins:
            if isinstance(spec, str):
                specs.append(spec)
            else:
                specs.append({"name": spec.name, "opts": spec.opts})
        try:
            # tenants name plugins; only the operator's settings may name modules to import
            chain = PluginChain(
                load_plugins(specs, extra=self.settings.custom_plugins, import_paths=False)
            )
        except PluginLoadError as exc:
            raise CommandRejected("plugin_unavailable", str(exc)) from None
        for name, opts in state.plugin_opts.items():
            chain.update_opts(name, opts, state.plugin_states)
        self.hooks = SessionHooks(self, chain)

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            state = self.state
            assert state is not None
            self._workspace = open_workspace(
                settings=self.settings,
                redis=self._ctx.store.redis,
                keys=self._ctx.store.keys,
                tenant=self.tenant,
                sid=self.sid,
            )
        return self._workspace

    def append_message(self, message: dict[str, Any]) -> None:
        self.history.append(message)
        self.history_chars += len(message.get("content") or "")
        self._unsaved.append(orjson.dumps(message))

    def replace_history(self, messages: list[dict[str, Any]]) -> None:
        """Rewrite the whole history at the next save (compaction, rollback)."""
        self.history = list(messages)
        self.history_chars = sum(len(m.get("content") or "") for m in self.history)
        self._keep = 0
        self._unsaved = [orjson.dumps(m) for m in self.history]

    def truncate_history(self, length: int) -> None:
        """Forget every message from `length` on (rollback of a turn)."""
        self.history = self.history[:length]
        self.history_chars = sum(len(m.get("content") or "") for m in self.history)
        self._keep = length
        self._unsaved = []

    async def save(self) -> None:
        """Persist the state and the messages appended since the last save (a step boundary).

        A save that has been sent is seen through even if the caller is cancelled meanwhile:
        the version this actor holds must be the one Redis holds.
        """
        state = self.state
        assert state is not None
        async with self._save_lock:
            state.history_len = len(self.history)
            state.last_active_ms = now_ms()
            append, self._unsaved = self._unsaved, []
            keep, self._keep = self._keep, -1
            floor, self._floor = self._floor, 0
            idle = state.current is None and state.status == "idle"
            after = state.options.hibernate_after_ms or self._ctx.settings.hibernate_after_ms
            timeout_at = _earliest_timeout(state)
            data = state.model_dump_json().encode()
            # what this save writes; messages appended meanwhile are the next save's
            wrote = (data, self.history, state.history_len)
            write = asyncio.ensure_future(
                self._ctx.store.save(
                    self.sid,
                    epoch=self.epoch,
                    version=self.version,
                    state=data,
                    append=append,
                    keep=keep,
                    floor=floor,
                    shard=self.shard,
                    tenant=state.tenant,
                    active=(state.current is not None and not state.current.suspended)
                    or bool(state.prompt_queue),
                    hibernate_at_ms=state.last_active_ms + after if idle else None,
                    timeout_at_ms=timeout_at,
                    reschedule_timeout=timeout_at != self._timeout_at,
                )
            )
            try:
                self.version = await asyncio.shield(write)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    self.version = await write
                    self._remember(timeout_at, Written(self.epoch, self.version, *wrote))
                raise
            self._remember(timeout_at, Written(self.epoch, self.version, *wrote))

    def _remember(self, timeout_at: int | None, written: Written) -> None:
        self._timeout_at = timeout_at
        self.written = written

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
            webhook=state.options.webhook,
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

    async def flush_outbox(self) -> None:
        """Publish the saved commands to other sessions (sub-agents, their parents)."""
        state = self.state
        assert state is not None
        while state.outbox:
            item = state.outbox[0]
            try:
                await self._ctx.commands.publish(
                    tenant=state.tenant,
                    sid=item.sid,
                    op=item.op,
                    body=item.body,
                    msg_id=item.msg_id,
                )
            except Exception as exc:  # kept in the outbox: published by the next flush or load
                log.warning("session %s: outbox publish failed: %r", self.sid, exc)
                return
            state.outbox.pop(0)

    # -- what the engine asks of its session ---------------------------------------------------
    def resolve_tool(self, name: str) -> Tool | None:
        """The tool `name` if it is attached to the session (None for a detached one)."""
        state = self.state
        assert state is not None
        return self._ctx.tools.resolve(
            name, tenant=state.tenant, attached=state.tools, callbacks=state.callback_tools
        )

    def tool_declarations(self) -> list[dict[str, Any]]:
        state = self.state
        assert state is not None
        return [
            tool.spec.for_llm()
            for name in [*state.tools, *(c["name"] for c in state.callback_tools)]
            if (tool := self.resolve_tool(name)) is not None
        ]

    def system_prompt(self) -> str:
        state = self.state
        assert state is not None
        specs = [tool.spec for name in state.tools if (tool := self.resolve_tool(name)) is not None]
        return system_prompt(state, specs)

    def approval_deadline(self) -> int | None:
        timeout = self.hooks.chain.approval_timeout_ms()
        return now_ms() + timeout if timeout else None

    def arm_timers(self) -> None:
        """Approval timeouts: a `reject` through the command stream when one expires."""
        assert self.state is not None
        self._timers.arm(self.state)

    def switch_model(
        self, model: str, provider_opts: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Use `model` from the next LLM request on; the `model_switched` data to publish,
        or None when nothing changes (same model, no options)."""
        state = self.state
        assert state is not None
        if model == state.model and provider_opts is None:
            return None
        previous, state.model = state.model, model
        if provider_opts is not None:
            state.provider_opts = dict(provider_opts)
        return {"from": previous, "to": model, "provider_opts_changed": provider_opts is not None}

    # -- commands ----------------------------------------------------------------------------
    async def _handle(self, delivery: Delivery) -> None:
        """Apply one command. A Redis or NATS outage, or a write conflict, tries the same
        command again in place while the session's next commands wait behind it: a later
        command applied first would mark this one a duplicate (`applied_seq`) and lose it."""
        pause = 0.05
        while not await self._apply(delivery, first_try=pause == 0.05):
            self._handled.set()  # nothing is half applied: the actor may be stopped meanwhile
            try:
                await delivery.in_progress()
                await asyncio.sleep(pause)
            finally:
                self._handled.clear()
            pause = min(pause * 2, 1.0)

    async def _apply(self, delivery: Delivery, *, first_try: bool) -> bool:
        """Apply, reject or set aside `delivery`; False when it must be tried again."""
        op = delivery.op
        try:
            command = parse_command(
                delivery, max_bytes=self._ctx.settings.max_command_bytes, cipher=self._ctx.cipher
            )
            if self.state is None:
                await self._load(command.id or f"seq-{delivery.seq}")
            state = self.state
            if state is not None and delivery.seq <= state.applied_seq:
                await delivery.ack(op, "duplicate")
                return True
            if delivery.check_order:
                await self._apply_missed(delivery)
                if self.state is None:  # one of them stopped or hibernated the session
                    await self._load(command.id or f"seq-{delivery.seq}")
                state = self.state
            if state is None and not isinstance(command, Create):
                raise CommandRejected("session_not_found", f"no session {self.sid!r}")
            await _ops.apply(self, command, delivery)
        except CommandRejected as exc:
            await self._reject(delivery, exc)
        except Fenced:
            delivery.abandon()  # the new owner's consumer delivers it again
            raise
        except _TRIED_AGAIN as exc:
            # Conflict: another actor of this worker wrote meanwhile (a brief overlap while
            # one closes). Either way the write may or may not have landed: reload, try again.
            if first_try:
                _metrics.COMMAND_RETRIES.inc()
                log.warning(
                    "session %s: %s; command %d is tried again", self.sid, exc, delivery.seq
                )
            self.state = None
            await self.stop_turn()
            return False
        except Exception as exc:  # a bug met this command: set it aside, never loop on it
            log.exception("session %s: command %d failed", self.sid, delivery.seq)
            self.state = None  # what it changed in memory is not kept: reload next time
            await self.stop_turn()
            refusal = CommandRejected(
                "internal_error",
                f"the fleet could not apply this command ({type(exc).__name__}); it was set "
                "aside in the dead-letter stream",
            )
            await self._reject(delivery, refusal)
        return True

    async def _apply_missed(self, delivery: Delivery) -> None:
        """Apply first, in stream order, the session's commands stored before `delivery`
        that were never applied here: their delivery was lost in transit (with a node or a
        leader change) or set down unapplied. They would come again only after `ack_wait`,
        after this one, and be taken for duplicates of it. A session not created yet looks
        from the stream's start (its `create` may be the command lost); the work queue holds
        only commands not yet acknowledged."""
        after = 0
        while True:
            start = max(self.state.applied_seq if self.state is not None else 0, after) + 1
            missed = await self._ctx.stored.missed_before(delivery, from_seq=start)
            if missed is None:
                return
            after = missed.seq  # never the same one twice, even if it stays in the stream
            _metrics.COMMANDS_RECOVERED.inc()
            log.warning(
                "session %s: command %d never reached it; applied from the stream before %d",
                self.sid,
                missed.seq,
                delivery.seq,
            )
            await self._handle(missed)

    async def commit(self, delivery: Delivery, outcome: str = "applied") -> None:
        """Record the command as applied with the state it produced, then acknowledge it."""
        state = self.state
        assert state is not None
        state.applied_seq = delivery.seq
        await self.save()
        await delivery.ack(delivery.op, outcome)

    async def _reject(self, delivery: Delivery, exc: CommandRejected) -> None:
        command_id = command_id_of(delivery.msg.data)
        state = self.state
        await self._ctx.events.publish(
            tenant=delivery.tenant,
            group=state.group if state else None,
            sid=self.sid,
            type_="error",
            data={"code": exc.code, "message": exc.message, "command_id": command_id},
            turn=state.turns if state else 0,
            request_id=command_id,
            webhook=state.options.webhook if state else None,
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
            return
        if state is not None and delivery.seq > state.applied_seq:
            # the command was valid: it is applied as a refusal, once
            await self.commit(delivery, exc.code)
        else:
            await delivery.ack(delivery.op, exc.code)

    def drop(self) -> None:
        """Forget the session (hibernated or stopped): the next command loads it again."""
        self.state = None
        self.written = None
        self.hibernation = None
        self.history = []
        self.history_chars = 0
        self.version = 0
        self._workspace = None


def _earliest_timeout(state: SessionState) -> int | None:
    """When the session's first undecided approval times out (ms), if any does."""
    deadlines = [
        a.expires_ms for a in state.pending_approvals if a.expires_ms and a.decision is None
    ]
    return min(deadlines, default=None)

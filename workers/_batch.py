"""ToolBatch: runs the tool calls of one assistant message concurrently.

Every call is recorded in the turn's persisted batch: `running` before it starts, `done` with
its result when it ends. A replayed step reuses recorded results and never runs a call twice;
a call that started under a lost worker is reported to the LLM as interrupted unless its tool
is idempotent (PROTOCOL §6.4, §6.8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas import PERMISSION_OPTIONS, PendingApproval, PendingQuestion, ToolCallRecord
from workers import _audit, _metrics, _subagents
from workers._events import now_ms
from workers.plugins import (
    Abort,
    BlockTool,
    Hook,
    Intervene,
    RequireApproval,
    Skip,
    command_families,
    command_family,
)
from workers.tools import (
    AskUserEffect,
    CompactEffect,
    SubagentEffect,
    TodosEffect,
    Tool,
    ToolContext,
    ToolResult,
    offload,
    validate_args,
)

if TYPE_CHECKING:
    from workers._actor import SessionActor
    from workers._turn import TurnRunner

log = logging.getLogger(__name__)

INTERRUPTED = (
    "interrupted: the worker running this call was lost before it finished; it may or may "
    "not have taken effect. Check before doing it again."
)


@dataclass(frozen=True, slots=True)
class AbortTurn:
    reason: str


BatchOutcome = Literal["done", "suspend"] | AbortTurn


class ToolBatch:
    """One pass over the current batch; `run` returns when no call can progress any more."""

    def __init__(self, turn: TurnRunner, actor: SessionActor) -> None:
        self._turn = turn
        self._actor = actor
        self._tasks: dict[str, asyncio.Task[ToolResult]] = {}
        self._abort: str | None = None

    @property
    def _records(self) -> list[ToolCallRecord]:
        state = self._actor.state
        assert state is not None and state.current is not None
        return state.current.batch

    async def run(self) -> BatchOutcome:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        rid = state.current.request_id
        try:
            # again while calls were approved meanwhile (an approval can arrive mid-batch)
            while any(r.status in ("pending", "running") for r in self._records):
                started = await self._dispatch(rid)
                if self._abort is not None:
                    return AbortTurn(self._abort)
                await actor.save()
                actor.arm_timers()  # approvals asked for are saved: their timeouts may run
                for record in started:
                    await self._announce_start(record, rid)
                await self._collect(rid)
                if self._abort is not None:
                    break
        finally:
            await self._stop_tasks(rid)
        if self._abort is not None:
            return AbortTurn(self._abort)
        if any(r.status == "awaiting" for r in self._records):
            return "suspend"
        return "done"

    # -- dispatch ----------------------------------------------------------------------------
    async def _dispatch(self, rid: str | None) -> list[ToolCallRecord]:
        """Decide each call that has no result yet; start those that may run."""
        actor = self._actor
        state = actor.state
        assert state is not None
        started: list[ToolCallRecord] = []
        for record in self._records:
            if record.status in ("done", "awaiting"):
                continue
            tool = actor.resolve_tool(record.name)
            lost = record.status == "running"  # started under a worker that was lost
            if lost and (tool is None or not tool.spec.idempotent):
                self._finish(record, ToolResult.error(INTERRUPTED))
                continue
            if tool is None:
                await actor.emit(
                    "tool_call_unknown",
                    {"name": record.name, "call_id": record.call_id, "reason": "not_attached"},
                    request_id=rid,
                )
                self._finish(
                    record,
                    ToolResult.error(
                        f"unknown tool {record.name!r}: it is not attached to this session; "
                        f"available: {', '.join(sorted(state.tools)) or 'none'}"
                    ),
                )
                continue
            problem = validate_args(tool.spec, record.args)
            if problem is not None:
                self._finish(record, ToolResult.error(f"invalid arguments: {problem}"))
                continue
            if state.steering_queue and record.name not in state.options.interrupt_immune_tools:
                await self._skip_for_steering(record, "pending_dispatch", rid)
                continue
            outcome = await actor.hooks.run(
                Hook.BEFORE_TOOL,
                {"name": record.name, "call_id": record.call_id, "args": dict(record.args)},
                request_id=rid,
                approved=record.approved,
            )
            if outcome.args is not None:
                record.args = dict(outcome.args)
            terminal = outcome.terminal
            crashed = [i.plugin for i in outcome.incidents if i.kind == "crash"]
            if crashed and terminal is None:
                # fail closed: a guard that could not decide does not let the call through
                terminal = BlockTool(f"plugin {crashed[0]} failed while checking this call")
            if isinstance(terminal, Abort):
                self._abort = f"plugin: {terminal.reason}"
                return started
            if isinstance(terminal, BlockTool):
                await actor.emit(
                    "tool_blocked",
                    {"name": record.name, "call_id": record.call_id, "reason": terminal.reason},
                    request_id=rid,
                )
                self._finish(record, ToolResult.error(f"blocked: {terminal.reason}"))
                continue
            if isinstance(terminal, RequireApproval) and not record.approved:
                await self._ask_approval(record, terminal, rid)
                continue
            record.status = "running"
            record.started_ms = now_ms()
            self._tasks[record.call_id] = asyncio.create_task(
                self._execute(record, tool), name=f"tool-{record.call_id}"
            )
            started.append(record)
        return started

    async def _ask_approval(
        self, record: ToolCallRecord, asked: RequireApproval, rid: str | None
    ) -> None:
        state = self._actor.state
        assert state is not None
        hint = asked.hint
        options = list(asked.options) if asked.options is not None else None
        approval = PendingApproval(
            approval_id=f"ap-{secrets.token_hex(6)}",
            call_id=record.call_id,
            tool=record.name,
            args=record.args,
            family=command_family(record.name, record.args),
            families=sorted(command_families(record.name, record.args)),
            hint=hint,
            requested_at=now_ms(),
            expires_ms=self._actor.approval_deadline(),
            options=options,
        )
        state.pending_approvals.append(approval)
        record.status = "awaiting"
        await self._actor.emit(
            "approval_required",
            {
                "approval_id": approval.approval_id,
                "tool": approval.tool,
                "args": approval.args,
                "hint": hint,
                "requested_at": approval.requested_at,
                "permission_options": options or list(PERMISSION_OPTIONS),
            },
            request_id=rid,
        )
        _metrics.APPROVALS.labels("requested").inc()
        await _audit.approval_requested(self._actor, approval, rid)

    async def _announce_start(self, record: ToolCallRecord, rid: str | None) -> None:
        actor = self._actor
        await actor.emit(
            "tool_execution_start",
            {"name": record.name, "call_id": record.call_id, "args": record.args},
            request_id=rid,
        )
        await actor.emit(
            "tool_execution_metrics",
            {"name": record.name, "call_id": record.call_id, "started_at_ms": record.started_ms},
            request_id=rid,
        )

    # -- execution ---------------------------------------------------------------------------
    async def _execute(self, record: ToolCallRecord, tool: Tool) -> ToolResult:
        """Run one call with its timeout and the session's retry policy."""
        actor = self._actor
        state = actor.state
        assert state is not None
        options = state.options
        timeout = tool.spec.timeout_s or actor.settings.tool_timeout_s
        ctx = ToolContext(
            session_id=state.sid,
            tenant=state.tenant,
            call_id=record.call_id,
            workspace=actor.workspace,
            settings=actor.settings,
            user_data=dict(options.user_data),
            turn=state.turns,
        )
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            _metrics.TOOLS_STARTED.labels(_metrics.tool_label(record.name)).inc()
            try:
                async with asyncio.timeout(timeout):
                    result = await tool.run(dict(record.args), ctx)
            except TimeoutError:
                result = ToolResult.error(f"timed out after {timeout:g} s")
            except Exception as exc:  # a tool's bug is the LLM's error result, not a crash
                log.exception("tool %s failed", record.name)
                result = ToolResult.error(f"tool failed: {type(exc).__name__}: {exc}")
            _metrics.TOOL_SECONDS.labels(_metrics.tool_label(record.name)).observe(
                time.perf_counter() - started
            )
            if not result.is_error or attempt > options.tool_max_retries:
                return result
            outcome = await actor.hooks.run(
                Hook.ON_TOOL_ERROR,
                {
                    "name": record.name,
                    "call_id": record.call_id,
                    "error": result.text,
                    "attempt": attempt,
                },
            )
            if isinstance(outcome.terminal, Abort):
                self._abort = f"plugin: {outcome.terminal.reason}"
                return result
            if isinstance(outcome.terminal, Skip):
                return result
            await asyncio.sleep(options.tool_retry_delay_ms / 1000)

    async def _collect(self, rid: str | None) -> None:
        """Record results as calls end; kill what steering interrupts."""
        steered = self._turn.steered
        while self._tasks:
            waiter = asyncio.create_task(steered.wait())
            try:
                done, _ = await asyncio.wait(
                    [*self._tasks.values(), waiter], return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
            for call_id, task in list(self._tasks.items()):
                if task in done:
                    del self._tasks[call_id]
                    await self._complete(self._record(call_id), task.result(), rid)
            if steered.is_set():
                await self._kill_for_steering(rid)
            if self._abort is not None:
                return

    async def _complete(self, record: ToolCallRecord, result: ToolResult, rid: str | None) -> None:
        actor = self._actor
        state = actor.state
        assert state is not None
        effect = result.effect
        if isinstance(effect, AskUserEffect):
            ref = f"q-{secrets.token_hex(6)}"
            state.pending_questions.append(
                PendingQuestion(
                    ref=ref,
                    call_id=record.call_id,
                    question=effect.question,
                    options=effect.options,
                )
            )
            record.status = "awaiting"
            await actor.save()
            await actor.emit(
                "ask_user",
                {"ref": ref, "question": effect.question, "options": effect.options},
                request_id=rid,
            )
            return
        if isinstance(effect, SubagentEffect):
            refused = await _subagents.spawn(actor, record, effect, request_id=rid)
            if refused is None:
                return
            result = ToolResult.error(refused)
        elif isinstance(effect, TodosEffect):
            state.todos = list(effect.todos)
            await actor.emit("todo_change", {"todos": state.todos}, request_id=rid)
        elif isinstance(effect, CompactEffect):
            self._turn.compact_requested = effect.reason or "requested by the LLM"
        text = await offload(
            result.text,
            workspace=actor.workspace,
            call_id=record.call_id,
            max_chars=actor.hooks.offload_limit(),
        )
        self._finish(record, ToolResult(text, is_error=result.is_error))
        await actor.save()
        await announce_end(self._actor, record, rid)
        outcome = await actor.hooks.run(
            Hook.AFTER_TOOL,
            {
                "name": record.name,
                "call_id": record.call_id,
                "result": record.result,
                "is_error": record.is_error,
            },
            request_id=rid,
        )
        if isinstance(outcome.terminal, Intervene):
            self._turn.follow_up(outcome.terminal.prompt)
        elif isinstance(outcome.terminal, Abort):
            self._abort = f"plugin: {outcome.terminal.reason}"

    async def _kill_for_steering(self, rid: str | None) -> None:
        actor = self._actor
        state = actor.state
        assert state is not None
        immune = set(state.options.interrupt_immune_tools)
        for call_id, task in list(self._tasks.items()):
            record = self._record(call_id)
            if record.name in immune:
                continue
            del self._tasks[call_id]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._skip_for_steering(record, "killed_by_steering", rid)
            await actor.save()
            await announce_end(self._actor, record, rid)

    async def _skip_for_steering(
        self,
        record: ToolCallRecord,
        reason: Literal["killed_by_steering", "pending_dispatch"],
        rid: str | None,
    ) -> None:
        self._finish(
            record,
            ToolResult.error(
                "skipped: interrupted by steering"
                if reason == "killed_by_steering"
                else "skipped: the user changed direction before this call started"
            ),
        )
        await self._actor.emit(
            "tool_skipped_for_steering",
            {"name": record.name, "call_id": record.call_id, "reason": reason},
            request_id=rid,
        )

    async def _stop_tasks(self, rid: str | None) -> None:
        """On the way out (done, aborted or cancelled): kill or hand over what still runs."""
        detach = self._turn.detach
        killed: list[asyncio.Task[ToolResult]] = []
        for call_id, task in self._tasks.items():
            if call_id in detach:
                self._actor.linger(
                    _announced_when_done(self._actor, task, self._record(call_id), rid)
                )
            else:
                task.cancel()
                killed.append(task)
        self._tasks.clear()
        if killed:
            with contextlib.suppress(Exception):
                await asyncio.gather(*killed, return_exceptions=True)

    def running_calls(self) -> list[ToolCallRecord]:
        return [self._record(call_id) for call_id in self._tasks]

    # -- helpers -----------------------------------------------------------------------------
    def _record(self, call_id: str) -> ToolCallRecord:
        return next(r for r in self._records if r.call_id == call_id)

    def _finish(self, record: ToolCallRecord, result: ToolResult) -> None:
        record.status = "done"
        record.result = result.text
        record.is_error = result.is_error
        record.ended_ms = now_ms()
        state = self._actor.state
        assert state is not None
        state.tool_calls += 1
        _metrics.TOOL_CALLS.labels(
            _metrics.tool_label(record.name), "error" if result.is_error else "ok"
        ).inc()


def _announced_when_done(
    actor: SessionActor, task: asyncio.Task[ToolResult], record: ToolCallRecord, rid: str | None
) -> asyncio.Task[None]:
    """A call an abort left running: when it ends, its `tool_execution_end` closes the
    `tool_execution_start` clients saw. Its result reaches no history (the turn is over)."""

    async def finish() -> None:
        try:
            result = await task
        except Exception as exc:  # a tool's own failures are results; this is a bug's
            result = ToolResult.error(f"the tool failed: {type(exc).__name__}")
        record.result, record.is_error, record.ended_ms = result.text, result.is_error, now_ms()
        if actor.state is not None:  # stopped meanwhile: nobody to tell
            await announce_end(actor, record, rid)

    return asyncio.create_task(finish(), name=f"detached {record.name} {record.call_id}")


async def announce_end(actor: SessionActor, record: ToolCallRecord, rid: str | None) -> None:
    """`tool_execution_end` and the closing `tool_execution_metrics` of a call."""
    await actor.emit(
        "tool_execution_end",
        {
            "name": record.name,
            "call_id": record.call_id,
            "status": "error" if record.is_error else "ok",
            "result": record.result or "",
        },
        request_id=rid,
    )
    started = record.started_ms or record.ended_ms or now_ms()
    ended = record.ended_ms or now_ms()
    await actor.emit(
        "tool_execution_metrics",
        {
            "name": record.name,
            "call_id": record.call_id,
            "started_at_ms": started,
            "ended_at_ms": ended,
            "duration_ms": ended - started,
        },
        request_id=rid,
    )

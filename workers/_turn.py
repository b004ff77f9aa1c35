"""TurnRunner: the turn loop of one session as a task owned by its actor.

A turn is a series of steps, each one tagged by what it produced: a final answer, tool calls
(a batch), or a wait (an approval, an answer, a sub-agent). State is persisted at every step
boundary, so a lost worker's turn continues elsewhere (`turn_resumed`), and a waiting turn
holds no task and no slot: the command that ends the wait starts a new runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import orjson

from schemas import (
    MAX_DEPTH,
    PendingEvent,
    QueuedPrompt,
    ToolCallRecord,
    TurnProgress,
    deeper_than,
)
from workers import _audit, _metrics, _subagents, _turn_end
from workers._batch import AbortTurn, ToolBatch
from workers._compaction import compact
from workers._events import now_ms
from workers._llm import LLMError, LLMRequest, LLMResponse, add_usage
from workers.errors import RETRIED, Conflict, Fenced
from workers.plugins import Abort, Hook, Intervene, Skip

if TYPE_CHECKING:
    from workers._actor import SessionActor
    from workers._context import WorkerContext

log = logging.getLogger(__name__)

MAX_LLM_RETRIES = 3
RETRY_BASE_S = 0.2
RETRY_CAP_S = 5.0
LOOP_REPEATS = 3

StepEnd = Literal["ended", "suspended"]


class TurnRunner:
    """Runs the current turn, then every queued prompt, then returns the session to idle."""

    def __init__(
        self,
        actor: SessionActor,
        ctx: WorkerContext,
        *,
        resumed: bool,
        end_reason: str | None = None,
    ) -> None:
        self._actor = actor
        self._ctx = ctx
        self._end_reason = end_reason
        self._cancelling = False
        self._announced = asyncio.Event()
        self._announced.set()
        self.steered = asyncio.Event()
        self.detach: set[str] = set()
        self.compact_requested: str | None = None
        self._batch: ToolBatch | None = None
        self._resume = False
        self._task = asyncio.create_task(self._run(resumed), name=f"turn-{actor.sid}")

    def request_resume(self, end_reason: str | None) -> None:
        """The wait this runner is suspending for ended already: go on instead of exiting."""
        self._resume = True
        self._end_reason = end_reason or self._end_reason

    @staticmethod
    def begin(actor: SessionActor, text: str, request_id: str, meta: dict[str, Any]) -> None:
        """Start a new turn in the actor's state (persisted by the caller)."""
        state = actor.state
        assert state is not None
        state.turns += 1
        state.status = "running"
        _metrics.TURNS_STARTED.inc()
        state.current = TurnProgress(
            turn=state.turns,
            request_id=request_id,
            meta=meta,
            started_ms=now_ms(),
            history_start=len(actor.history),
        )
        actor.append_message({"role": "user", "content": text})

    @property
    def task(self) -> asyncio.Task[None]:
        return self._task

    def running_calls(self) -> list[ToolCallRecord]:
        return self._batch.running_calls() if self._batch is not None else []

    def follow_up(self, text: str) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        state.current.follow_ups.append(text)

    async def cancel(self, *, detach: set[str] | None = None) -> None:
        """Stop the turn at its last persisted step boundary.

        A save and the events that announce it (`agent_end`, `agent_start`) go together: a
        cancellation waits for such a section to finish, so a turn is never recorded as
        finished without its `agent_end` having been published. Tool calls in `detach` are
        left to finish on their own (their results are dropped); the others are killed.
        """
        if self._task is asyncio.current_task():
            return
        self.detach = detach or set()
        self._cancelling = True
        await self._announced.wait()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _save_and_announce(self) -> AsyncIterator[None]:
        if self._cancelling:
            raise asyncio.CancelledError
        self._announced.clear()
        try:
            yield
        finally:
            self._announced.set()

    async def _run(self, resumed: bool) -> None:
        actor = self._actor
        carry_on = False
        try:
            state = actor.state
            assert state is not None
            if resumed and state.current is not None:
                await self._announce_resume()
            while True:
                if state.current is None:
                    if not state.prompt_queue:
                        return  # synchronously clears actor.turn below: no prompt can slip in
                    async with self._save_and_announce():
                        queued = state.prompt_queue.pop(0)
                        TurnRunner.begin(actor, queued.text, queued.request_id or "", queued.meta)
                        await actor.save()
                        await actor.emit("agent_start", {}, request_id=queued.request_id)
                        await _audit.turn_started(actor, queued.request_id)
                assert state.current is not None
                state.current.suspended = False
                state.status = "running"
                started = time.perf_counter()
                if await self._run_turn() == "suspended":
                    if not self._resume:
                        return  # no await before the exit: a resume now starts a new runner
                    self._resume = False
                    continue
                _metrics.TURN_SECONDS.observe(time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Fenced, or Redis unreachable past its retries: the state stays at the last step
            # boundary and the session's shard owner resumes it later. A bug of the fleet ends
            # the turn with an error instead: resuming would meet it again, forever.
            if isinstance(exc, (*RETRIED, Fenced, Conflict)) or not await self._end_on_bug(exc):
                actor.fail(exc)
            else:  # prompts queued while the turn ended still run, as after any turn
                carry_on = True
        finally:
            if actor.turn is self:
                actor.turn_stopped()
                state = actor.state
                if (
                    carry_on
                    and not self._cancelling  # the actor is stopping it: no successor
                    and actor.hibernation is None  # a deferred hibernate keeps the queue
                    and state is not None
                    and state.prompt_queue
                ):
                    actor.start_turn()

    async def _end_on_bug(self, exc: Exception) -> bool:
        """End the turn with `agent_end{reason:"error"}` (code `internal_error`, no detail for
        the client, the traceback in the log); False when even that fails."""
        state = self._actor.state
        log.error("session %s: the turn met a bug", self._actor.sid, exc_info=exc)
        if state is None or state.current is None:
            return False
        error = {
            "code": "internal_error",
            "message": f"the turn stopped on an error of the fleet ({type(exc).__name__})",
        }
        try:
            await self._actor.emit("error", error, request_id=state.current.request_id)
            state.current.batch = []
            await self._finish("error", error=error)
        except Exception:
            log.exception("session %s: the turn could not be ended", self._actor.sid)
            return False
        return True

    async def _announce_resume(self) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        _metrics.TURNS_RESUMED.inc()
        await self._actor.emit(
            "turn_resumed",
            {"turn": state.current.turn, "step": state.current.step, "worker": self._ctx.worker_id},
            request_id=state.current.request_id,
        )

    # -- the step loop -----------------------------------------------------------------------
    async def _run_turn(self) -> StepEnd:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        current = state.current
        rid = current.request_id
        while True:
            if current.batch:
                state.status = "executing_tools"
                self._batch = ToolBatch(self, actor)
                outcome = await self._batch.run()
                self._batch = None
                if isinstance(outcome, AbortTurn):
                    await self._end_aborted(outcome.reason)
                    return "ended"
                if outcome == "suspend":
                    await self._suspend()
                    return "suspended"
                if await self._close_batch() == "ended":
                    return "ended"
                state.status = "running"
            if self._end_reason is not None:  # a rejection that ends the turn
                reason, self._end_reason = self._end_reason, None
                await self._finish(reason)
                return "ended"
            await self._apply_steering()
            if self.compact_requested is not None or self._over_compaction_threshold():
                reason, self.compact_requested = self.compact_requested or "threshold", None
                await compact(actor, reason=reason, request_id=rid)
            self._add_follow_ups()
            if current.step >= state.options.max_turns:
                await self._finish("max_turns")
                return "ended"
            end = await self._llm_step()
            if end is not None:
                return end

    async def _llm_step(self) -> StepEnd | None:
        """One LLM request and what it decides; None when the turn goes on to another step."""
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        current = state.current
        rid = current.request_id
        hooks = actor.hooks
        hooks.io.request_options.clear()  # plugins set them anew for each request
        before = await hooks.run(
            Hook.BEFORE_REQUEST,
            # the copy of a long history only when a plugin will read it
            {"messages": list(actor.history) if not hooks.empty() else []},
            request_id=rid,
        )
        if isinstance(before.terminal, Abort):
            await self._end_aborted(f"plugin: {before.terminal.reason}")
            return "ended"
        if isinstance(before.terminal, Skip):
            await self._finish("finished")
            return "ended"
        if isinstance(before.terminal, Intervene):
            actor.append_message({"role": "user", "content": before.terminal.prompt})
        try:
            response = await self._call_llm()
        except LLMError as exc:
            error = {**exc.details, "code": exc.code, "message": str(exc)}
            await actor.emit("error", error, request_id=rid)
            await self._finish("error", error=error)
            return "ended"
        message = self._assistant_message(response)
        self._account(response)  # plugins at after_response see the cost including this call
        after = await hooks.run(Hook.AFTER_RESPONSE, {"message": message}, request_id=rid)
        if isinstance(after.terminal, Skip):
            message.pop("tool_calls", None)  # the response stands, its tool calls do not
        actor.append_message(message)
        current.step += 1
        if isinstance(after.terminal, Abort):
            await self._end_aborted(f"plugin: {after.terminal.reason}")
            return "ended"
        if isinstance(after.terminal, Intervene):
            self.follow_up(after.terminal.prompt)
        calls = message.get("tool_calls") or []
        if calls:
            current.batch = [
                ToolCallRecord(call_id=c["call_id"], name=c["name"], args=c["arguments"])
                for c in calls
            ]
            async with self._save_and_announce():
                await actor.save()  # the step boundary: the LLM's decision is kept
                await actor.emit("response_complete", {"message": message}, request_id=rid)
                await actor.emit("tool_calls", {"count": len(calls)}, request_id=rid)
            await self._detect_loop(calls)
            return None
        if current.follow_ups or state.steering_queue:  # steered while it answered: go on
            await self._save_step(message)
            return None
        final = await hooks.run(Hook.BEFORE_FINISH, {"message": message}, request_id=rid)
        if isinstance(final.terminal, Intervene):
            self.follow_up(final.terminal.prompt)
            await self._save_step(message)
            return None
        if isinstance(final.terminal, Abort):
            await self._end_aborted(f"plugin: {final.terminal.reason}")
            return "ended"
        await self._finish("finished", message=message)
        return "ended"

    async def _save_step(self, message: dict[str, Any]) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        async with self._save_and_announce():
            await self._actor.save()
            await self._actor.emit(
                "response_complete", {"message": message}, request_id=state.current.request_id
            )

    def _assistant_message(self, response: LLMResponse) -> dict[str, Any]:
        state = self._actor.state
        assert state is not None and state.current is not None
        message: dict[str, Any] = {"role": "assistant", "content": response.text}
        if response.thinking:
            message["thinking"] = response.thinking
        if response.tool_calls:
            turn, step = state.current.turn, state.current.step
            message["tool_calls"] = [
                {
                    "call_id": str(call.get("call_id") or f"c{turn}-{step}-{index}"),
                    "name": str(call.get("name") or ""),
                    "arguments": _arguments(call.get("arguments")),
                }
                for index, call in enumerate(response.tool_calls)
            ]
        return message

    async def _close_batch(self) -> StepEnd | None:
        """All results are in: add them to the history (the next step boundary)."""
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        current = state.current
        results = []
        for record in current.batch:
            actor.append_message(
                {
                    "role": "tool_result",
                    "call_id": record.call_id,
                    "name": record.name,
                    "content": record.result or "",
                    "is_error": record.is_error,
                }
            )
            results.append(
                {
                    "name": record.name,
                    "call_id": record.call_id,
                    "result": record.result,
                    "is_error": record.is_error,
                }
            )
        current.batch = []
        outcome = await actor.hooks.run(
            Hook.AFTER_TOOL_BATCH, {"results": results}, request_id=current.request_id
        )
        if isinstance(outcome.terminal, Abort):
            await self._end_aborted(f"plugin: {outcome.terminal.reason}")
            return "ended"
        if isinstance(outcome.terminal, Intervene):
            self.follow_up(outcome.terminal.prompt)
        async with self._save_and_announce():
            await actor.save()
        return None

    async def _apply_steering(self) -> None:
        """Merge queued steering into the conversation at this step boundary."""
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        self.steered.clear()
        if not state.steering_queue:
            return
        items, state.steering_queue = state.steering_queue, []
        actor.append_message({"role": "user", "content": "\n\n".join(i.text for i in items)})
        async with self._save_and_announce():
            await actor.save()
            await actor.emit(
                "steering_applied",
                {"refs": [i.ref for i in items], "count": len(items)},
                request_id=items[-1].request_id,
            )

    def _add_follow_ups(self) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        for text in state.current.follow_ups:
            self._actor.append_message({"role": "user", "content": text})
        state.current.follow_ups = []

    def _over_compaction_threshold(self) -> bool:
        state = self._actor.state
        assert state is not None
        compactor = state.options.compactor
        return compactor is not None and state.context_tokens >= compactor.trigger_tokens

    async def _detect_loop(self, calls: list[dict[str, Any]]) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        current = state.current
        signature = orjson.dumps(
            [(c["name"], c["arguments"]) for c in calls], option=orjson.OPT_SORT_KEYS
        ).decode()
        current.recent_calls = [*current.recent_calls[-(LOOP_REPEATS - 1) :], signature]
        if len(current.recent_calls) == LOOP_REPEATS and len(set(current.recent_calls)) == 1:
            await self._actor.emit(
                "loop_detected",
                {"type": "repeated_tool_calls", "tools": [c["name"] for c in calls]},
                request_id=current.request_id,
            )

    async def _suspend(self) -> None:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        state.current.suspended = True
        state.status = "idle"
        async with self._save_and_announce():
            await actor.save()
            await actor.flush_outbox()

    # -- the LLM call ------------------------------------------------------------------------
    async def _call_llm(self) -> LLMResponse:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        rid = state.current.request_id
        attempt = 0
        while True:
            llm = self._ctx.llm_for(state.model)
            request = LLMRequest(
                model=state.model,
                messages=actor.history,
                system_prompt=actor.system_prompt(),
                provider_opts=self._ctx.request_opts(state.provider_opts, tenant=state.tenant),
                max_tokens=state.options.max_tokens,
                script_cursor=state.script_cursor,
                prompt_chars=actor.history_chars,
                tools=actor.tool_declarations(),
                tenant=state.tenant,
                options=dict(actor.hooks.io.request_options),
            )
            response = LLMResponse()
            text_started = thinking_started = False
            call_started = time.perf_counter()
            state.status = "streaming"
            provider = _metrics.provider_label(state.model)
            _metrics.LLM_STARTED.labels(provider).inc()
            try:
                async for chunk in llm.stream(request, response):
                    if chunk.kind == "text":
                        if not text_started:
                            text_started = True
                            await actor.emit("message_start", {}, request_id=rid)
                        await actor.emit("message_delta", {"delta": chunk.delta}, request_id=rid)
                    else:
                        if not thinking_started:
                            thinking_started = True
                            await actor.emit("thinking_start", {}, request_id=rid)
                        await actor.emit("thinking_delta", {"delta": chunk.delta}, request_id=rid)
            except LLMError as exc:
                state.status = "running"
                _metrics.llm_request_ended(provider, call_started, error=exc.code)
                if exc.code == "context_overflow":
                    await actor.emit("context_overflow", {"reason": str(exc), "model": state.model})
                if not exc.retryable or attempt >= MAX_LLM_RETRIES:
                    raise
                attempt += 1
                delay = min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_CAP_S)
                if exc.retry_after is not None:
                    delay = min(max(delay, exc.retry_after), RETRY_CAP_S * 6)
                await actor.emit(
                    "retry",
                    {"attempt": attempt, "delay_ms": int(delay * 1000), "reason": exc.code},
                    request_id=rid,
                )
                await asyncio.sleep(delay)
                continue
            finally:  # a script step is used up by any end: answer, error, retry or abort
                if response.script_step:
                    state.script_cursor += 1
            state.status = "running"
            duration_ms = (time.perf_counter() - call_started) * 1000
            _metrics.llm_request_ended(provider, call_started, error=None)
            await actor.emit(
                "llm_call",
                {
                    "model": state.model,
                    "prompt_tokens": response.prompt_tokens,
                    "completion_tokens": response.completion_tokens,
                    "cached_tokens": response.cached_tokens,
                    "duration_ms": round(duration_ms, 3),
                    "cost_usd": response.cost_usd,
                },
                request_id=rid,
            )
            state.context_tokens = response.prompt_tokens
            return response

    def _account(self, response: LLMResponse) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        _metrics.llm_responded(state.model, response)
        state.usage = add_usage(state.usage, response)
        state.current.usage = add_usage(state.current.usage, response)

    # -- the end of a turn -------------------------------------------------------------------
    async def _end_aborted(self, reason: str) -> None:
        async with self._save_and_announce():
            await _turn_end.end_aborted(self._actor, reason)

    async def _finish(
        self,
        reason: str,
        *,
        message: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        async with self._save_and_announce():
            current = state.current
            last = next((m for m in reversed(actor.history) if m.get("role") == "assistant"), None)
            data: dict[str, Any] = {
                "reason": reason,
                "last_message": {"role": "assistant", "content": last.get("content", "")}
                if last
                else None,
                "usage": current.usage.model_dump(),
            }
            if error is not None:
                data["error"] = error
            steered, state.steering_queue = state.steering_queue, []
            if steered:  # steering the turn can no longer take starts the next one
                state.prompt_queue.insert(
                    0,
                    QueuedPrompt(
                        text="\n\n".join(i.text for i in steered),
                        request_id=steered[-1].request_id,
                    ),
                )
            state.current = None
            state.status = "idle"
            _subagents.report_to_parent(
                actor,
                ok=reason == "finished",
                text=str(last.get("content", "")) if last else "",
                error=error,
            )
            # agent_end is saved with the turn's end, so that it is published even if this
            # worker dies right after the save: whoever loads the session next publishes it
            state.unannounced.append(
                PendingEvent(
                    type="agent_end",
                    data=data,
                    turn=current.turn,
                    request_id=current.request_id,
                    meta=current.meta or None,
                    msg_id=f"{actor.tenant}.{actor.sid}.{current.turn}.agent_end",
                )
            )
            await actor.save()
            if message is not None:
                await actor.emit(
                    "response_complete",
                    {"message": message},
                    request_id=current.request_id,
                    turn=current.turn,
                )
            await actor.announce_pending()
            await actor.flush_outbox()
            if steered:
                await actor.emit(
                    "steering_applied",
                    {"refs": [i.ref for i in steered], "count": len(steered)},
                    request_id=steered[-1].request_id,
                )
        _metrics.TURNS.labels(reason).inc()
        await _turn_end.after_turn(actor, current, outcome="finished", reason=reason)


def _arguments(value: object) -> dict[str, Any]:
    """A tool call's arguments as an object: what the LLM sent, or what is wrong with it (the
    tool then refuses them, and the LLM reads why)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value or "{}")
        except orjson.JSONDecodeError:
            return {"_raw": value}
    if deeper_than(value):
        return {"_error": f"the arguments nest deeper than {MAX_DEPTH} levels"}
    if isinstance(value, dict):
        return value
    return {"_value": value} if value is not None else {}

"""TurnRunner: the turn loop of one session as a task owned by its actor.

A turn is a series of steps; each step is one LLM call whose response is persisted before
the next step starts (the step boundary), so a lost worker's turn continues elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from schemas import PendingEvent, TurnProgress, Usage
from workers import _metrics
from workers._events import now_ms
from workers._llm import LLMError, LLMRequest, LLMResponse

if TYPE_CHECKING:
    from workers._actor import SessionActor
    from workers._context import WorkerContext

log = logging.getLogger(__name__)

MAX_LLM_RETRIES = 3
RETRY_BASE_S = 0.2
RETRY_CAP_S = 5.0


class TurnRunner:
    """Runs the current turn, then every queued prompt, then returns the session to idle."""

    def __init__(self, actor: SessionActor, ctx: WorkerContext, *, resumed: bool) -> None:
        self._actor = actor
        self._ctx = ctx
        self._cancelling = False
        self._announced = asyncio.Event()
        self._announced.set()
        self._task = asyncio.create_task(self._run(resumed), name=f"turn-{actor.sid}")

    @staticmethod
    def begin(actor: SessionActor, text: str, request_id: str, meta: dict[str, Any]) -> None:
        """Start a new turn in the actor's state (persisted by the caller)."""
        state = actor.state
        assert state is not None
        state.turns += 1
        state.status = "running"
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

    async def cancel(self) -> None:
        """Stop the turn at its last persisted step boundary.

        A save and the events that announce it (`agent_end`, `agent_start`) go together: a
        cancellation waits for such a section to finish, so a turn is never recorded as
        finished without its `agent_end` having been published.
        """
        if self._task is asyncio.current_task():
            return
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
                await self._run_turn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Fenced, or Redis unreachable past its retries: the state stays at the last step
            # boundary and the session's shard owner resumes it later.
            actor.fail(exc)
        finally:
            if actor.turn is self:
                actor.turn = None

    async def _announce_resume(self) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        _metrics.TURNS_RESUMED.inc()
        await self._actor.emit(
            "turn_resumed",
            {"turn": state.current.turn, "step": state.current.step, "worker": self._ctx.worker_id},
            request_id=state.current.request_id,
        )

    async def _run_turn(self) -> None:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        current = state.current
        started = time.perf_counter()
        while True:
            if current.step >= state.options.max_turns:
                await self._finish("max_turns")
                break
            try:
                response = await self._call_llm()
            except LLMError as exc:
                await actor.emit(
                    "error", {"code": exc.code, "message": str(exc)}, request_id=current.request_id
                )
                await self._finish("error", error={"code": exc.code, "message": str(exc)})
                break
            message: dict[str, Any] = {"role": "assistant", "content": response.text}
            if response.thinking:
                message["thinking"] = response.thinking
            if response.tool_calls:
                message["tool_calls"] = response.tool_calls
            actor.append_message(message)
            current.step += 1
            self._account(response)
            # Tool execution arrives with the engine; a response is final for now.
            await self._finish("finished", response=response, message=message)
            break
        _metrics.TURN_SECONDS.observe(time.perf_counter() - started)

    async def _call_llm(self) -> LLMResponse:
        actor = self._actor
        state = actor.state
        assert state is not None and state.current is not None
        rid = state.current.request_id
        llm = self._ctx.llm_for(state.model)
        attempt = 0
        while True:
            request = LLMRequest(
                model=state.model,
                messages=actor.history,
                system_prompt=state.options.system_prompt,
                provider_opts=state.options.provider_opts,
                max_tokens=state.options.max_tokens,
                script_cursor=state.script_cursor,
                prompt_chars=actor.history_chars,
            )
            if state.model == "mock:script":
                state.script_cursor += 1  # every call consumes one step, retries included
            response = LLMResponse()
            text_started = thinking_started = False
            call_started = time.perf_counter()
            state.status = "streaming"
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
                if not exc.retryable or attempt >= MAX_LLM_RETRIES:
                    raise
                attempt += 1
                delay = min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_CAP_S)
                await actor.emit(
                    "retry",
                    {"attempt": attempt, "delay_ms": int(delay * 1000), "reason": exc.code},
                    request_id=rid,
                )
                await asyncio.sleep(delay)
                continue
            state.status = "running"
            duration_ms = (time.perf_counter() - call_started) * 1000
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
            return response

    def _account(self, response: LLMResponse) -> None:
        state = self._actor.state
        assert state is not None and state.current is not None
        provider = state.model.partition(":")[0]
        _metrics.LLM_CALLS.labels(provider).inc()
        _metrics.LLM_TOKENS.labels(provider, "prompt").inc(response.prompt_tokens)
        _metrics.LLM_TOKENS.labels(provider, "completion").inc(response.completion_tokens)
        _metrics.LLM_COST.labels(provider).inc(response.cost_usd)
        state.usage = _add(state.usage, response)
        state.current.usage = _add(state.current.usage, response)

    async def _finish(
        self,
        reason: str,
        *,
        response: LLMResponse | None = None,
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
            state.current = None
            state.status = "idle"
            # agent_end is saved with the turn's end, so that it is published even if this
            # worker dies right after the save: whoever loads the session next publishes it
            state.unannounced = [
                PendingEvent(
                    type="agent_end",
                    data=data,
                    turn=current.turn,
                    request_id=current.request_id,
                    meta=current.meta or None,
                    msg_id=f"{actor.sid}.{current.turn}.agent_end",
                )
            ]
            await actor.save()
            if message is not None:
                await actor.emit(
                    "response_complete",
                    {"message": message},
                    request_id=current.request_id,
                    turn=current.turn,
                )
            await actor.announce_pending()
        _metrics.TURNS.labels(reason).inc()


def _add(usage: Usage, response: LLMResponse) -> Usage:
    prompt = usage.prompt_tokens + response.prompt_tokens
    completion = usage.completion_tokens + response.completion_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=usage.cached_tokens + response.cached_tokens,
        cost_usd=usage.cost_usd + response.cost_usd,
    )

"""SessionHooks: runs a session's plugin chain at one hook and carries out what it decided.

The chain itself is pure (workers/plugins); here its outcome meets the session: emitted
events are published, a model switch is applied, incidents (a plugin that crashed or returned
an action its hook does not allow) become `plugin_event` / `error` events, never a failed turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workers import _audit, _metrics
from workers._llm import LLMError, LLMRequest, LLMResponse, add_usage
from workers.plugins import ChainOutcome, Hook, LargeResultOffload, PluginChain, PluginContext
from workers.tools import WorkspaceError

if TYPE_CHECKING:
    from workers._actor import SessionActor

log = logging.getLogger(__name__)

UPDATE_SYSTEM_CONTEXT = "update_system_context"
"""An Emit of this type with `{key, text}` sets a system prompt section instead of an event."""
MAX_SECTION_CHARS = 20_000
CATALOG_EMITS = frozenset({"cost_warning"})
"""Emits published as the catalog event of that type (PROTOCOL §4) rather than as a
`plugin_event`: CMDC's cost_guard emits `cost_warning` this way."""


class SessionIO:
    """The engine's side of `PluginIO`, for one session's plugins."""

    def __init__(self, actor: SessionActor) -> None:
        self._actor = actor
        self.request_options: dict[str, Any] = {}
        """Set by plugins at `before_request`; the turn takes them into that request."""

    async def read_text(self, path: str) -> str | None:
        try:
            data = await self._actor.workspace.read(path)
        except WorkspaceError as exc:
            if exc.code == "not_found":
                return None
            raise
        return data.decode("utf-8", errors="replace")

    async def write_text(self, path: str, text: str, *, append: bool = False) -> None:
        workspace = self._actor.workspace
        if append:
            text = ((await self.read_text(path)) or "") + text
        await workspace.write(path, text.encode())

    async def find_files(self, directory: str, name: str) -> list[str]:
        try:
            found = await self._actor.workspace.walk(directory)
        except WorkspaceError as exc:
            if exc.code == "not_found":
                return []
            raise
        return sorted(path for path, _ in found if path.rpartition("/")[2] == name)

    async def checkpoint(
        self,
        label: str,
        metadata: Mapping[str, Any],
        *,
        keep: int | None = None,
        ttl_s: int | None = None,
    ) -> str:
        from workers._checkpoints import save_checkpoint  # the checkpoints module needs ours

        actor = self._actor
        checkpoint_id, size = await save_checkpoint(actor, label, metadata, keep=keep, ttl_s=ttl_s)
        await actor.emit(
            "checkpoint_saved", {"checkpoint_id": checkpoint_id, "label": label, "bytes": size}
        )
        await _audit.checkpoint_saved(
            actor, checkpoint_id, label=label, size=size, by="plugin", trigger=dict(metadata)
        )
        return checkpoint_id

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        provider_opts: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> str:
        actor = self._actor
        state = actor.state
        assert state is not None
        request = LLMRequest(
            model=model,
            messages=messages,
            system_prompt="",
            provider_opts=actor.ctx.request_opts(provider_opts or {}, tenant=state.tenant),
            max_tokens=None,
            tenant=state.tenant,
        )
        response = LLMResponse()
        started = time.perf_counter()
        provider = _metrics.provider_label(model)
        _metrics.LLM_STARTED.labels(provider).inc()
        try:
            async with asyncio.timeout(timeout_s):
                async for _ in actor.ctx.llm_for(model).stream(request, response):
                    pass
        except Exception as exc:
            code = exc.code if isinstance(exc, LLMError) else type(exc).__name__
            _metrics.llm_request_ended(provider, started, error=code)
            raise
        _metrics.llm_request_ended(provider, started, error=None)
        # A judge's tokens are the session's spend: counted like its own calls (cost_guard,
        # budgets, agent_end), without an llm_call event of the session's model.
        _metrics.llm_responded(model, response)
        state.usage = add_usage(state.usage, response)
        if state.current is not None:
            state.current.usage = add_usage(state.current.usage, response)
        return response.text

    def set_system_context(self, key: str, text: str | None) -> None:
        state = self._actor.state
        assert state is not None
        if text is None:
            state.system_context.pop(key, None)
        else:
            state.system_context[key] = text[:MAX_SECTION_CHARS]

    def history(self) -> list[dict[str, Any]]:
        return list(self._actor.history)

    def set_request_option(self, key: str, value: Any) -> None:
        self.request_options[key] = value

    def patch_history(self, results: list[dict[str, Any]]) -> None:
        history = list(self._actor.history)
        for result in results:
            at = next(
                (
                    i
                    for i, m in enumerate(history)
                    if m.get("role") == "assistant"
                    and any(
                        result.get("call_id") in (c.get("call_id"), c.get("id"))
                        for c in m.get("tool_calls") or []
                    )
                ),
                None,
            )
            if at is None:
                continue
            at += 1
            while at < len(history) and history[at].get("role") == "tool_result":
                at += 1
            history.insert(at, dict(result))
        self._actor.replace_history(history)


class SessionHooks:
    """The plugins of one resident session."""

    def __init__(self, actor: SessionActor, chain: PluginChain) -> None:
        self._actor = actor
        self.chain = chain
        self.io = SessionIO(actor)

    def empty(self) -> bool:
        return not self.chain.plugins

    def offload_limit(self) -> int:
        """The session's tool result budget in characters: the fleet's, or the smaller one of
        its `large_result_offload` plugin."""
        fleet = self._actor.settings.tool_result_max_chars
        plugin = self.chain.find(LargeResultOffload.name)
        return min(fleet, plugin.max_chars) if isinstance(plugin, LargeResultOffload) else fleet

    def context(self, *, approved: bool = False) -> PluginContext:
        state = self._actor.state
        assert state is not None
        last = next(
            (m for m in reversed(self._actor.history) if m.get("role") == "assistant"), None
        )
        return PluginContext(
            session_id=state.sid,
            tenant=state.tenant,
            turn=state.turns,
            model=state.model,
            user_data=dict(state.options.user_data),
            tools=tuple(state.tools),
            total_tokens=state.usage.total_tokens,
            cost_usd=state.usage.cost_usd,
            spent_usd=state.spent_usd,
            skills_dirs=tuple(state.options.skills_dirs),
            allowlist=frozenset((tool, family) for tool, family in state.allowlist),
            approved=approved,
            last_assistant_reply=str(last.get("content") or "") if last else None,
        )

    async def run(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        *,
        request_id: str | None = None,
        approved: bool = False,
    ) -> ChainOutcome:
        """Run the chain; publish its emits and incidents, apply a model switch."""
        state = self._actor.state
        assert state is not None
        if self.empty():
            return ChainOutcome()
        _metrics.PLUGINS_STARTED.labels(hook.value).inc()
        started = time.perf_counter()
        outcome = await self.chain.run(
            hook, payload, state.plugin_states, self.context(approved=approved), self.io
        )
        _metrics.PLUGIN_SECONDS.labels(
            hook.value, outcome.terminal.kind if outcome.terminal else "continue"
        ).observe(time.perf_counter() - started)
        actor = self._actor
        for incident in outcome.incidents:
            _metrics.PLUGIN_INCIDENTS.labels(incident.kind).inc()
            if incident.kind == "invalid_action":
                await actor.emit(
                    "error",
                    {"code": "plugin_action_not_allowed", "message": incident.message},
                    request_id=request_id,
                )
            await actor.emit(
                "plugin_event",
                {
                    "plugin": incident.plugin,
                    "kind": incident.kind,
                    "payload": {
                        "hook": str(incident.hook),
                        "action": incident.action,
                        "message": incident.message,
                    },
                },
                request_id=request_id,
            )
        for plugin, emit in outcome.emits:
            if emit.type == UPDATE_SYSTEM_CONTEXT:  # CMDC's form of `io.set_system_context`
                key, text = emit.data.get("key"), emit.data.get("text")
                if isinstance(key, str) and (text is None or isinstance(text, str)):
                    self.io.set_system_context(key, text)
                    continue
            if emit.type in CATALOG_EMITS:
                await actor.emit(emit.type, {"plugin": plugin, **emit.data}, request_id=request_id)
                continue
            await actor.emit(
                "plugin_event",
                {"plugin": plugin, "kind": emit.type, "payload": dict(emit.data)},
                request_id=request_id,
            )
        if outcome.switch_model is not None:
            switch = outcome.switch_model
            before = _audit.model_of(state)
            switched = actor.switch_model(switch.model, switch.provider_opts)
            if switched is not None:
                await actor.emit(
                    "model_switched", {**switched, "reason": "plugin"}, request_id=request_id
                )
                await _audit.model_switched(actor, before, by="plugin", request_id=request_id)
        return outcome

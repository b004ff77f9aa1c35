"""SessionHooks: runs a session's plugin chain at one hook and carries out what it decided.

The chain itself is pure (workers/plugins); here its outcome meets the session: emitted
events are published, a model switch is applied, incidents (a plugin that crashed or returned
an action its hook does not allow) become `plugin_event` / `error` events, never a failed turn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workers import _metrics
from workers.plugins import ChainOutcome, Hook, PluginChain, PluginContext

if TYPE_CHECKING:
    from workers._actor import SessionActor

log = logging.getLogger(__name__)


class SessionHooks:
    """The plugins of one resident session."""

    def __init__(self, actor: SessionActor, chain: PluginChain) -> None:
        self._actor = actor
        self.chain = chain

    def empty(self) -> bool:
        return not self.chain.plugins

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
        outcome = self.chain.run(
            hook, payload, state.plugin_states, self.context(approved=approved)
        )
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
            await actor.emit(
                "plugin_event",
                {"plugin": plugin, "kind": emit.type, "payload": dict(emit.data)},
                request_id=request_id,
            )
        if outcome.switch_model is not None:
            switch = outcome.switch_model
            switched = actor.switch_model(switch.model, switch.provider_opts)
            if switched is not None:
                await actor.emit(
                    "model_switched", {**switched, "reason": "plugin"}, request_id=request_id
                )
        return outcome

"""Plugin options changed while a session lives (`update_plugin_opts`): the gate hook, the
plugin's own update, and the updates deferred while a turn ran."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.plugins import Abort, Hook, Skip

if TYPE_CHECKING:
    from workers._actor import SessionActor


async def apply_deferred_plugin_opts(actor: SessionActor) -> None:
    state = actor.state
    assert state is not None
    deferred, state.deferred_plugin_opts = state.deferred_plugin_opts, []
    results = [
        (
            item,
            await change_plugin_opts(actor, item["plugin"], item["opts"], item.get("request_id")),
        )
        for item in deferred
    ]
    await actor.save()
    for item, updated in results:
        await actor.emit("plugin_opts_updated", updated, request_id=item.get("request_id"))


async def change_plugin_opts(
    actor: SessionActor, name: str, opts: dict[str, Any], rid: str | None
) -> dict[str, Any]:
    """Run `before_plugin_opts_update`, then the plugin's update; the event's data."""
    state = actor.state
    assert state is not None
    gate = await actor.hooks.run(
        Hook.BEFORE_PLUGIN_OPTS_UPDATE, {"plugin": name, "opts": opts}, request_id=rid
    )
    if isinstance(gate.terminal, Abort | Skip):
        reason = gate.terminal.reason if isinstance(gate.terminal, Abort) else "skipped"
        error = f"blocked by {gate.terminal_plugin}: {reason}"
        return {"plugin": name, "success": False, "error": error, "mode": "blocked"}
    chain = actor.hooks.chain
    mode, refused = chain.update_opts(name, opts, state.plugin_states)
    if refused is not None:
        return {"plugin": name, "success": False, "error": refused, "mode": "refused"}
    plugin = chain.find(name)
    assert plugin is not None
    state.plugin_opts[plugin.name] = dict(plugin.opts)  # what a reload re-applies
    return {"plugin": name, "success": True, "error": None, "mode": mode}

"""PluginChain: order, terminal actions, accumulation, crash containment, hot updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.workers.plugins.conftest import NO_IO
from workers.plugins import (
    Abort,
    BlockTool,
    Emit,
    Emitted,
    Hook,
    HumanApproval,
    Plugin,
    PluginChain,
    PluginContext,
    PluginOptsError,
    ReplaceToolArgs,
    SwitchModel,
)

MakePlugin = Callable[..., Plugin]
TOOL = {"name": "shell", "call_id": "c1", "args": {"command": "ls"}}


def _note(text: str) -> Emit:
    return Emit("note", {"text": text})


async def test_plugins_run_by_priority_then_given_order(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain(
        [
            make_plugin("late", _note("late"), 300),
            make_plugin("first", _note("first"), 5),
            make_plugin("tie_a", _note("tie_a"), 100),
            make_plugin("tie_b", _note("tie_b"), 100),
        ]
    )
    outcome = await chain.run(Hook.AFTER_TURN, {}, {}, ctx, NO_IO)
    assert [e.plugin for e in outcome.emits] == ["first", "tie_a", "tie_b", "late"]


async def test_terminal_action_stops_the_chain(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain(
        [
            make_plugin("note", _note("before"), 1),
            make_plugin("guard", BlockTool("no"), 2),
            make_plugin("never", Abort("unreached"), 3),
        ]
    )
    outcome = await chain.run(Hook.BEFORE_TOOL, TOOL, {}, ctx, NO_IO)
    assert (outcome.terminal, outcome.terminal_plugin) == (BlockTool("no"), "guard")
    assert outcome.emits == (Emitted("note", _note("before")),)


async def test_emits_accumulate_across_plugins(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain([make_plugin("a", _note("1"), 1), make_plugin("b", _note("2"), 2)])
    outcome = await chain.run(Hook.SESSION_START, {}, {}, ctx, NO_IO)
    assert [(e.plugin, e.emit.data["text"]) for e in outcome.emits] == [("a", "1"), ("b", "2")]


async def test_last_switch_model_wins(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain(
        [make_plugin("b", SwitchModel("mock:late"), 20), make_plugin("a", SwitchModel("mock:x"), 1)]
    )
    assert (await chain.run(Hook.AFTER_RESPONSE, {}, {}, ctx, NO_IO)).switch_model == SwitchModel(
        "mock:late"
    )


async def test_replaced_args_are_seen_by_the_next_plugin(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    seen: list[Any] = []

    def record(_hook: Hook, payload: Mapping[str, Any], _state: dict[str, Any]) -> None:
        seen.append(payload["args"])

    chain = PluginChain(
        [
            make_plugin("rewrite", ReplaceToolArgs({"command": "ls -la"}), 1),
            make_plugin("observe", record, 2),
        ]
    )
    outcome = await chain.run(Hook.BEFORE_TOOL, TOOL, {}, ctx, NO_IO)
    assert seen == [{"command": "ls -la"}]
    assert outcome.args == {"command": "ls -la"}
    assert TOOL["args"] == {"command": "ls"}


async def test_crash_is_contained_and_state_reverted(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    def crash(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> None:
        state["count"] = 99
        raise RuntimeError("boom")

    chain = PluginChain([make_plugin("bad", crash, 1), make_plugin("good", _note("ok"), 2)])
    states = {"bad": {"count": 1}}
    outcome = await chain.run(Hook.AFTER_TURN, {}, states, ctx, NO_IO)
    assert states["bad"] == {"count": 1}
    assert [i.as_dict() for i in outcome.incidents] == [
        {
            "plugin": "bad",
            "hook": "after_turn",
            "action": None,
            "kind": "crash",
            "message": "RuntimeError: boom",
        }
    ]
    assert outcome.emits == (Emitted("good", _note("ok")),)


async def test_unserialisable_state_is_a_crash_and_reverted(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    def keep_datetime(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> Emit:
        state["at"] = datetime.now(UTC)
        return _note("x")

    chain = PluginChain([make_plugin("p", keep_datetime)])
    states = {"p": {"n": 1}}
    outcome = await chain.run(Hook.AFTER_TURN, {}, states, ctx, NO_IO)
    assert states["p"] == {"n": 1}
    assert outcome.emits == ()
    assert [i.kind for i in outcome.incidents] == ["crash"]
    assert "not JSON-serialisable" in outcome.incidents[0].message


async def test_state_mutations_persist_in_the_states_dict(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    def count(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> None:
        state["n"] = state.get("n", 0) + 1

    chain = PluginChain([make_plugin("counter", count)])
    states: dict[str, dict[str, Any]] = {}
    (await chain.run(Hook.AFTER_TURN, {}, states, ctx, NO_IO))
    (await chain.run(Hook.AFTER_TURN, {}, states, ctx, NO_IO))
    assert states == {"counter": {"n": 2}}


async def test_non_action_return_is_an_invalid_action(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", lambda *_: "continue")])
    outcome = await chain.run(Hook.AFTER_TURN, {}, {}, ctx, NO_IO)
    assert [(i.kind, i.action) for i in outcome.incidents] == [("invalid_action", "str")]


async def test_emit_with_unserialisable_data_is_refused(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", Emit("note", {"x": object()}))])
    outcome = await chain.run(Hook.AFTER_TURN, {}, {}, ctx, NO_IO)
    assert outcome.emits == ()
    assert [i.kind for i in outcome.incidents] == ["invalid_action"]


def test_initial_states_come_from_each_plugin() -> None:
    class Counter(Plugin):
        name = "counter"

        def initial_state(self) -> dict[str, Any]:
            return {"n": 0}

    chain = PluginChain([Counter({}), HumanApproval({})])
    assert chain.initial_states() == {"counter": {"n": 0}, "human_approval": {}}


def test_duplicate_plugin_names_are_refused(make_plugin: MakePlugin) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        PluginChain([make_plugin("p"), make_plugin("p")])


def test_update_opts_merges_over_the_options_in_force() -> None:
    chain = PluginChain([HumanApproval({"tools": ["shell"]})])
    states: dict[str, dict[str, Any]] = {}
    mode = chain.update_opts("CMDC.Plugin.Builtin.HumanApproval", {"default": "deny"}, states)
    assert mode == ("merge", None)
    plugin = chain.find("human_approval")
    assert isinstance(plugin, HumanApproval)
    assert (plugin.tools, plugin.default) == (frozenset({"shell"}), "deny")
    assert plugin.opts == {"tools": ["shell"], "default": "deny"}


def test_refused_update_leaves_the_plugin_unchanged() -> None:
    chain = PluginChain([HumanApproval({"tools": ["shell"]})])
    mode, error = chain.update_opts(
        "human_approval", {"tools": ["write_file"], "default": "maybe"}, {}
    )
    assert mode is None and error is not None and "default" in error
    plugin = chain.find("human_approval")
    assert isinstance(plugin, HumanApproval) and plugin.tools == {"shell"}
    assert plugin.opts == {"tools": ["shell"]}


def test_update_of_an_unknown_plugin_is_not_found() -> None:
    assert PluginChain([]).update_opts("nope", {}, {}) == (None, "not_found")


def test_on_config_update_keeps_the_state_it_accrued() -> None:
    class Budget(Plugin):
        name = "budget"

        def configure(self, opts: Mapping[str, Any]) -> None:
            self.limit = float(opts.get("limit", 1.0))

        def initial_state(self) -> dict[str, Any]:
            return {"spent": 0.0}

        def on_config_update(self, opts: Mapping[str, Any], state: dict[str, Any]) -> bool:
            limit = float(opts["limit"])
            if limit <= state["spent"]:
                raise PluginOptsError(f"limit {limit} is below what was spent")
            self.limit = limit
            return True

    chain = PluginChain([Budget({"limit": 1.0})])
    states = {"budget": {"spent": 0.5}}
    assert chain.update_opts("budget", {"limit": 2.0}, states) == ("callback", None)
    assert states == {"budget": {"spent": 0.5}}
    _, error = chain.update_opts("budget", {"limit": 0.1}, states)
    assert error == "limit 0.1 is below what was spent"
    plugin = chain.find("budget")
    assert isinstance(plugin, Budget) and plugin.limit == 2.0


def test_update_that_crashes_is_reported_and_the_state_kept() -> None:
    class Fragile(Plugin):
        name = "fragile"

        def on_config_update(self, opts: Mapping[str, Any], state: dict[str, Any]) -> bool:
            state["half"] = True
            raise KeyError("level")

    states: dict[str, dict[str, Any]] = {"fragile": {}}
    outcome = PluginChain([Fragile({})]).update_opts("fragile", {"level": 1}, states)
    assert outcome == (None, "KeyError: 'level'")
    assert states == {"fragile": {}}


def test_base_plugin_refuses_options() -> None:
    class Plain(Plugin):
        name = "plain"

    with pytest.raises(PluginOptsError, match="takes no options"):
        Plain({"x": 1})


def test_approval_timeout_is_the_shortest_of_the_chain() -> None:
    chain = PluginChain([HumanApproval({"timeout_ms": 5000})])
    assert chain.approval_timeout_ms() == 5000
    assert PluginChain([]).approval_timeout_ms() is None

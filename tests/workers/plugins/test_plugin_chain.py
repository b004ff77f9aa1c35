"""PluginChain: order, terminal actions, accumulation, crash containment, hot updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

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


def test_plugins_run_by_priority_then_given_order(
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
    outcome = chain.run(Hook.AFTER_TURN, {}, {}, ctx)
    assert [e.plugin for e in outcome.emits] == ["first", "tie_a", "tie_b", "late"]


def test_terminal_action_stops_the_chain(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain(
        [
            make_plugin("note", _note("before"), 1),
            make_plugin("guard", BlockTool("no"), 2),
            make_plugin("never", Abort("unreached"), 3),
        ]
    )
    outcome = chain.run(Hook.BEFORE_TOOL, TOOL, {}, ctx)
    assert (outcome.terminal, outcome.terminal_plugin) == (BlockTool("no"), "guard")
    assert outcome.emits == (Emitted("note", _note("before")),)


def test_emits_accumulate_across_plugins(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain([make_plugin("a", _note("1"), 1), make_plugin("b", _note("2"), 2)])
    outcome = chain.run(Hook.SESSION_START, {}, {}, ctx)
    assert [(e.plugin, e.emit.data["text"]) for e in outcome.emits] == [("a", "1"), ("b", "2")]


def test_last_switch_model_wins(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    chain = PluginChain(
        [make_plugin("b", SwitchModel("mock:late"), 20), make_plugin("a", SwitchModel("mock:x"), 1)]
    )
    assert chain.run(Hook.AFTER_RESPONSE, {}, {}, ctx).switch_model == SwitchModel("mock:late")


def test_replaced_args_are_seen_by_the_next_plugin(
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
    outcome = chain.run(Hook.BEFORE_TOOL, TOOL, {}, ctx)
    assert seen == [{"command": "ls -la"}]
    assert outcome.args == {"command": "ls -la"}
    assert TOOL["args"] == {"command": "ls"}


def test_crash_is_contained_and_state_reverted(make_plugin: MakePlugin, ctx: PluginContext) -> None:
    def crash(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> None:
        state["count"] = 99
        raise RuntimeError("boom")

    chain = PluginChain([make_plugin("bad", crash, 1), make_plugin("good", _note("ok"), 2)])
    states = {"bad": {"count": 1}}
    outcome = chain.run(Hook.AFTER_TURN, {}, states, ctx)
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


def test_unserialisable_state_is_a_crash_and_reverted(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    def keep_datetime(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> Emit:
        state["at"] = datetime.now(UTC)
        return _note("x")

    chain = PluginChain([make_plugin("p", keep_datetime)])
    states = {"p": {"n": 1}}
    outcome = chain.run(Hook.AFTER_TURN, {}, states, ctx)
    assert states["p"] == {"n": 1}
    assert outcome.emits == ()
    assert [i.kind for i in outcome.incidents] == ["crash"]
    assert "not JSON-serialisable" in outcome.incidents[0].message


def test_state_mutations_persist_in_the_states_dict(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    def count(_hook: Hook, _payload: Mapping[str, Any], state: dict[str, Any]) -> None:
        state["n"] = state.get("n", 0) + 1

    chain = PluginChain([make_plugin("counter", count)])
    states: dict[str, dict[str, Any]] = {}
    chain.run(Hook.AFTER_TURN, {}, states, ctx)
    chain.run(Hook.AFTER_TURN, {}, states, ctx)
    assert states == {"counter": {"n": 2}}


def test_non_action_return_is_an_invalid_action(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", lambda *_: "continue")])
    outcome = chain.run(Hook.AFTER_TURN, {}, {}, ctx)
    assert [(i.kind, i.action) for i in outcome.incidents] == [("invalid_action", "str")]


def test_emit_with_unserialisable_data_is_refused(
    make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", Emit("note", {"x": object()}))])
    outcome = chain.run(Hook.AFTER_TURN, {}, {}, ctx)
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


def test_update_opts_replaces_the_options() -> None:
    chain = PluginChain([HumanApproval({"tools": ["shell"]})])
    assert chain.update_opts("CMDC.Plugin.Builtin.HumanApproval", {"default": "deny"}) is None
    plugin = chain.find("human_approval")
    assert isinstance(plugin, HumanApproval)
    assert (plugin.tools, plugin.default) == (frozenset(), "deny")


def test_refused_update_leaves_the_plugin_unchanged() -> None:
    chain = PluginChain([HumanApproval({"tools": ["shell"]})])
    error = chain.update_opts("human_approval", {"tools": ["write_file"], "default": "maybe"})
    assert error is not None and "default" in error
    plugin = chain.find("human_approval")
    assert isinstance(plugin, HumanApproval) and plugin.tools == {"shell"}


def test_update_of_an_unknown_plugin_is_not_found() -> None:
    assert PluginChain([]).update_opts("nope", {}) == "not_found"


def test_update_that_crashes_is_reported() -> None:
    class Fragile(Plugin):
        name = "fragile"

        def update_opts(self, opts: Mapping[str, Any]) -> None:
            raise KeyError("level")

    assert PluginChain([Fragile({})]).update_opts("fragile", {"level": 1}) == "KeyError: 'level'"


def test_base_plugin_refuses_options() -> None:
    class Plain(Plugin):
        name = "plain"

    with pytest.raises(PluginOptsError, match="takes no options"):
        Plain({"x": 1})


def test_approval_timeout_is_the_shortest_of_the_chain() -> None:
    chain = PluginChain([HumanApproval({"timeout_ms": 5000})])
    assert chain.approval_timeout_ms() == 5000
    assert PluginChain([]).approval_timeout_ms() is None

"""Every cell of CMDC's hook x action matrix, plus the RequireApproval extension."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.workers.plugins.conftest import NO_IO
from workers.plugins import (
    Abort,
    Action,
    BlockTool,
    ChainOutcome,
    Continue,
    Emit,
    Emitted,
    Hook,
    Intervene,
    Plugin,
    PluginChain,
    PluginContext,
    ReplaceToolArgs,
    RequireApproval,
    Skip,
    SwitchModel,
)

# Copied from seeds/003 ("-*" counts as refused); the last column is Flotilla's RequireApproval.
# before_plugin_opts_update is CMDC v0.6's (seeds/000 recipe 15: continue, abort, skip, emit).
MATRIX = """
session_start     ✓ - ✓ - - - ✓ - -
session_end       ✓ - - - - - ✓ - -
after_turn        ✓ - - - - - ✓ - -
before_prompt     ✓ ✓ ✓ ✓ - - ✓ - -
before_request    ✓ ✓ ✓ ✓ - - ✓ ✓ -
after_response    ✓ ✓ ✓ ✓ - - ✓ ✓ -
before_tool       ✓ - ✓ - ✓ ✓ ✓ ✓ ✓
on_tool_error     ✓ - ✓ ✓ - - ✓ - -
after_tool        ✓ ✓ ✓ - - - ✓ ✓ -
after_tool_batch  ✓ ✓ ✓ - - - ✓ ✓ -
before_finish     ✓ ✓ ✓ - - - ✓ - -
before_compact    ✓ - - ✓ - - ✓ - -
before_steering   ✓ ✓ ✓ - - - ✓ - -
before_plugin_opts_update ✓ - ✓ ✓ - - ✓ - -
"""
ACTIONS: tuple[Action, ...] = (
    Continue(),
    Intervene("look again"),
    Abort("stop"),
    Skip(),
    BlockTool("no"),
    ReplaceToolArgs({"path": "b.txt"}),
    Emit("note", {"n": 1}),
    SwitchModel("mock:b"),
    RequireApproval("ok?"),
)
CELLS = [
    (Hook(row.split()[0]), action, mark == "✓")
    for row in MATRIX.strip().splitlines()
    for action, mark in zip(ACTIONS, row.split()[1:], strict=True)
]
ALLOWED_CELLS = [(hook, action) for hook, action, ok in CELLS if ok]
FORBIDDEN_CELLS = [(hook, action) for hook, action, ok in CELLS if not ok]
MakePlugin = Callable[..., Plugin]
PAYLOAD = {"name": "read_file", "call_id": "c1", "args": {"path": "a.txt"}}


def _cell_id(value: object) -> str:
    return value.value if isinstance(value, Hook) else getattr(value, "kind", str(value))


def _expected(action: Action) -> ChainOutcome:
    match action:
        case Continue():
            return ChainOutcome()
        case Emit():
            return ChainOutcome(emits=(Emitted("p", action),))
        case SwitchModel():
            return ChainOutcome(switch_model=action)
        case ReplaceToolArgs():
            return ChainOutcome(args=action.args)
        case _:
            return ChainOutcome(terminal=action, terminal_plugin="p")


def test_matrix_covers_every_hook_and_action() -> None:
    assert len(CELLS) == 14 * 9
    assert {hook for hook, _, _ in CELLS} == set(Hook)


@pytest.mark.parametrize(("hook", "action"), ALLOWED_CELLS, ids=_cell_id)
async def test_allowed_action_shapes_the_outcome(
    hook: Hook, action: Action, make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", action)])
    assert (await chain.run(hook, PAYLOAD, {}, ctx, NO_IO)) == _expected(action)


@pytest.mark.parametrize(("hook", "action"), FORBIDDEN_CELLS, ids=_cell_id)
async def test_forbidden_action_is_an_incident_and_counts_as_continue(
    hook: Hook, action: Action, make_plugin: MakePlugin, ctx: PluginContext
) -> None:
    chain = PluginChain([make_plugin("p", action), make_plugin("next", Emit("ran", {}), 200)])
    outcome = await chain.run(hook, PAYLOAD, {}, ctx, NO_IO)
    assert [(i.plugin, i.kind, i.action) for i in outcome.incidents] == [
        ("p", "invalid_action", action.kind)
    ]
    assert f"p returned {action.kind} from {hook.value}; allowed there: continue" in (
        outcome.incidents[0].message
    )
    assert outcome.emits == (Emitted("next", Emit("ran", {})),)
    assert (outcome.terminal, outcome.switch_model, outcome.args) == (None, None, None)

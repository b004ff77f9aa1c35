"""LargeResultOffload: a per-session tool result budget in tokens."""

from __future__ import annotations

import pytest

from workers.plugins import LargeResultOffload, PluginChain, PluginOptsError


def test_the_budget_is_four_characters_a_token() -> None:
    assert LargeResultOffload({"tool_token_limit_before_evict": 20_000}).max_chars == 80_000
    assert LargeResultOffload({}).max_chars == 80_000


def test_a_hot_update_changes_the_budget() -> None:
    chain = PluginChain([LargeResultOffload({})])
    states = chain.initial_states()
    update = {"tool_token_limit_before_evict": 500}
    assert chain.update_opts("CMDC.Plugin.Builtin.LargeResultOffload", update, states) == (
        "merge",
        None,
    )
    plugin = chain.find("large_result_offload")
    assert isinstance(plugin, LargeResultOffload) and plugin.max_chars == 2000


@pytest.mark.parametrize("limit", [0, 199, "big", None])
def test_a_tiny_or_missing_budget_is_refused(limit: object) -> None:
    with pytest.raises(PluginOptsError, match="tool_token_limit_before_evict"):
        LargeResultOffload({"tool_token_limit_before_evict": limit})

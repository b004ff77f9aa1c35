"""SkillGuard: union of the active skills' tools, unrestricted skills, warn mode, SKILL.md
discovery at session_start."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import (
    BlockTool,
    ChainOutcome,
    Hook,
    PluginChain,
    PluginContext,
    PluginOptsError,
    SkillGuard,
)
from workers.plugins._skill_guard import parse_frontmatter

TESTING = {"name": "testing", "allowed_tools": ["read_file", "grep"]}
WRITING = {"name": "writing", "allowed_tools": ["write_file"]}
ANYTHING = {"name": "anything"}
SKILL_MD = """---
name: elixir-testing
description: "Elixir testing best practices"
allowed_tools:
  - read_file
  - shell
---
# Body, not frontmatter
allowed_tools: [write_file]
"""


async def _tool(
    opts: dict[str, Any], name: str, io: MemoryIO | None = None
) -> tuple[ChainOutcome, dict[str, Any]]:
    ctx = PluginContext(session_id="s1", tenant="acme", turn=1, model="mock:a")
    chain = PluginChain([SkillGuard(opts)])
    states = chain.initial_states()
    io = io or MemoryIO()
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    payload = {"name": name, "call_id": "c1", "args": {}}
    return await chain.run(Hook.BEFORE_TOOL, payload, states, ctx, io), states


async def test_a_tool_outside_the_single_active_skill_is_blocked() -> None:
    outcome, _ = await _tool({"skills": [TESTING]}, "write_file")
    assert isinstance(outcome.terminal, BlockTool)
    assert "allowed: grep, read_file" in outcome.terminal.reason
    assert (await _tool({"skills": [TESTING]}, "grep"))[0].terminal is None


async def test_active_skills_allow_the_union_of_their_tools() -> None:
    opts = {"skills": [TESTING, WRITING]}
    for tool in ("read_file", "grep", "write_file"):
        assert (await _tool(opts, tool))[0].terminal is None
    assert isinstance((await _tool(opts, "shell"))[0].terminal, BlockTool)


async def test_only_the_active_skills_count() -> None:
    opts = {"skills": [TESTING, WRITING], "active": ["writing"]}
    assert isinstance((await _tool(opts, "grep"))[0].terminal, BlockTool)


async def test_a_skill_without_allowed_tools_leaves_every_tool_allowed() -> None:
    assert (await _tool({"skills": [TESTING, ANYTHING]}, "shell"))[0].terminal is None


async def test_with_no_skill_found_a_strict_guard_blocks_every_tool() -> None:
    outcome, _ = await _tool({}, "read_file")
    assert isinstance(outcome.terminal, BlockTool)
    assert "no active skill was found (skills_dirs: .flotilla/skills)" in outcome.terminal.reason
    warned, _ = await _tool({"enforce_mode": "warn"}, "read_file")
    assert warned.terminal is None and warned.emits[0].emit.data["allowed"] == []


async def test_an_active_skill_that_was_not_found_allows_nothing() -> None:
    outcome, _ = await _tool({"skills": [ANYTHING], "active": ["missing"]}, "read_file")
    assert isinstance(outcome.terminal, BlockTool)


class _BrokenIO(MemoryIO):
    async def find_files(self, directory: str, name: str) -> list[str]:
        raise ConnectionError("workspace unreachable")


async def test_skills_that_cannot_be_read_block_every_tool() -> None:
    outcome, states = await _tool({"skills": [ANYTHING]}, "read_file", _BrokenIO())
    assert isinstance(outcome.terminal, BlockTool)
    assert "could not be read (ConnectionError: workspace unreachable)" in outcome.terminal.reason
    assert states["skill_guard"]["unreadable"]


async def test_the_sessions_skills_dirs_are_searched_when_the_guard_names_none() -> None:
    io = MemoryIO({"kit/x/SKILL.md": SKILL_MD})
    ctx = PluginContext(
        session_id="s1", tenant="acme", turn=1, model="mock:a", skills_dirs=("kit",)
    )
    chain = PluginChain([SkillGuard({})])
    states = chain.initial_states()
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    payload = {"name": "shell", "call_id": "c1", "args": {}}
    assert (await chain.run(Hook.BEFORE_TOOL, payload, states, ctx, io)).terminal is None


async def test_warn_mode_reports_and_lets_the_call_run() -> None:
    outcome, _ = await _tool({"skills": [TESTING], "enforce_mode": "warn"}, "shell")
    assert outcome.terminal is None
    (emitted,) = outcome.emits
    assert emitted.emit.type == "skill_tool_violation"
    assert emitted.emit.data == {"tool": "shell", "call_id": "c1", "allowed": ["grep", "read_file"]}


async def test_skill_md_files_are_discovered_at_session_start() -> None:
    io = MemoryIO({".flotilla/skills/elixir/SKILL.md": SKILL_MD, "notes/SKILL.md": SKILL_MD})
    outcome, states = await _tool({}, "write_file", io)
    assert isinstance(outcome.terminal, BlockTool)
    assert states["skill_guard"]["discovered"] == [
        {
            "name": "elixir-testing",
            "description": "Elixir testing best practices",
            "allowed_tools": ["read_file", "shell"],
            "path": ".flotilla/skills/elixir/SKILL.md",
        }
    ]
    assert (await _tool({}, "shell", io))[0].terminal is None


async def test_given_skills_win_over_discovered_ones_of_the_same_name() -> None:
    io = MemoryIO({"skills/t/SKILL.md": SKILL_MD})
    opts = {"skills": [{"name": "elixir-testing"}], "skills_dirs": ["skills"]}
    assert (await _tool(opts, "write_file", io))[0].terminal is None


def test_frontmatter_parsing_handles_lists_quotes_and_bare_keys() -> None:
    text = "---\nname: 'a'\nallowed-tools: [Read, grep]\nempty:\ntags:\n- x\n- \"y\"\n---\n"
    assert parse_frontmatter(text) == {
        "name": "a",
        "allowed-tools": ["Read", "grep"],
        "tags": ["x", "y"],
    }
    assert parse_frontmatter("no frontmatter\nname: x") == {}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"skills": [{"allowed_tools": []}]}, "must be an object with a name"),
        ({"skills": [{"name": "x", "allowed_tools": "read_file"}]}, "allowed_tools must be a list"),
        ({"enforce_mode": "block"}, "enforce_mode"),
        ({"active": "x"}, "active must be a list"),
        ({"skills_dirs": ".skills"}, "skills_dirs"),
        ({"skill": []}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        SkillGuard(opts)

"""HumanApproval: allow / ask / deny policies, the allowlist and approved re-runs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from workers.plugins import (
    MAX_SHELL_CHARS,
    Action,
    BlockTool,
    Hook,
    HumanApproval,
    PluginContext,
    PluginOptsError,
    RequireApproval,
    command_family,
)


def _decide(
    opts: dict[str, Any], name: str, args: dict[str, Any], ctx: PluginContext, **changes: Any
) -> Action | None:
    payload = {"name": name, "call_id": "c1", "args": args}
    return HumanApproval(opts).handle(
        Hook.BEFORE_TOOL, payload, {}, dataclasses.replace(ctx, **changes)
    )


GIT = {"command": "git status"}


def test_listed_tool_asks_with_a_default_hint(ctx: PluginContext) -> None:
    assert _decide({"tools": ["shell"]}, "shell", GIT, ctx) == RequireApproval("shell: git status")


def test_configured_hint_is_used(ctx: PluginContext) -> None:
    decision = _decide({"tools": ["*"], "hint": "careful"}, "write_file", {"path": "a"}, ctx)
    assert decision == RequireApproval("careful")


def test_unlisted_tool_follows_the_default(ctx: PluginContext) -> None:
    assert _decide({"tools": ["shell"]}, "read_file", {"path": "a"}, ctx) is None
    assert _decide({"default": "ask"}, "read_file", {"path": "a"}, ctx) == RequireApproval(
        "read_file: a"
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("allow", None),
        ("deny", BlockTool("denied by policy")),
        ("ask", RequireApproval("shell: git status")),
    ],
)
def test_policy_overrides_tools(policy: str, expected: Action | None, ctx: PluginContext) -> None:
    opts = {"tools": ["read_file"], "default": "deny", "policies": {"shell": policy}}
    assert _decide(opts, "shell", GIT, ctx) == expected


def test_cmdc_tool_names_are_accepted(ctx: PluginContext) -> None:
    opts = {"policies": {"CMDC.Tool.Shell": "deny"}}
    assert _decide(opts, "shell", GIT, ctx) == BlockTool("denied by policy")


def test_approved_rerun_continues(ctx: PluginContext) -> None:
    assert _decide({"tools": ["shell"]}, "shell", GIT, ctx, approved=True) is None


def test_approved_rerun_does_not_lift_a_deny(ctx: PluginContext) -> None:
    opts = {"policies": {"shell": "deny"}}
    assert _decide(opts, "shell", GIT, ctx, approved=True) == BlockTool("denied by policy")


def test_always_allowlist_covers_the_command_family(ctx: PluginContext) -> None:
    allow = frozenset({("shell", "git")})
    opts = {"tools": ["shell"]}
    assert _decide(opts, "shell", {"command": "/usr/bin/git log -3"}, ctx, allowlist=allow) is None
    assert isinstance(
        _decide(opts, "shell", {"command": "rm -r x"}, ctx, allowlist=allow), RequireApproval
    )


def test_compound_command_needs_every_family_allowlisted(ctx: PluginContext) -> None:
    opts, command = {"tools": ["shell"]}, {"command": "git pull && make test"}
    only_git = frozenset({("shell", "git")})
    both = only_git | {("shell", "make")}
    assert isinstance(_decide(opts, "shell", command, ctx, allowlist=only_git), RequireApproval)
    assert _decide(opts, "shell", command, ctx, allowlist=both) is None


def test_substituted_commands_count_as_families(ctx: PluginContext) -> None:
    allow = frozenset({("shell", "echo")})
    command = {"command": 'echo "$(curl -s example.com)"'}
    assert isinstance(
        _decide({"tools": ["shell"]}, "shell", command, ctx, allowlist=allow), RequireApproval
    )


def test_always_for_other_tools_covers_every_call(ctx: PluginContext) -> None:
    allow = frozenset({("write_file", "*")})
    assert (
        _decide({"tools": ["write_file"]}, "write_file", {"path": "x"}, ctx, allowlist=allow)
        is None
    )


def test_once_approval_does_not_carry_over(ctx: PluginContext) -> None:
    plugin = HumanApproval({"tools": ["shell"]})
    payload = {"name": "shell", "call_id": "c1", "args": GIT}
    assert (
        plugin.handle(Hook.BEFORE_TOOL, payload, {}, dataclasses.replace(ctx, approved=True))
        is None
    )
    assert isinstance(plugin.handle(Hook.BEFORE_TOOL, payload, {}, ctx), RequireApproval)


def test_other_hooks_are_ignored(ctx: PluginContext) -> None:
    plugin = HumanApproval({"tools": ["*"]})
    assert plugin.handle(Hook.AFTER_TOOL, {"name": "shell", "call_id": "c1"}, {}, ctx) is None


@pytest.mark.parametrize(
    ("command", "family"),
    [
        ("git status", "git"),
        ("/usr/bin/git status", "git"),
        ("A=1 B=2 git push", "git"),
        ("  npm   test", "npm"),
        ("ls|wc -l", "ls"),
        ("", ""),
    ],
)
def test_command_family(command: str, family: str) -> None:
    assert command_family("shell", {"command": command}) == family


def test_command_family_of_other_tools_is_star() -> None:
    assert command_family("write_file", {"path": "a"}) == "*"


@pytest.mark.parametrize(
    "opts",
    [
        {"tools": "shell"},
        {"policies": {"shell": "sometimes"}},
        {"default": "yes"},
        {"timeout_ms": 0},
        {"timeout_ms": True},
        {"hint": 3},
        {"permission_options": ["approve_forever"]},
        {"tool": ["shell"]},
    ],
)
def test_invalid_opts_are_refused(opts: dict[str, Any]) -> None:
    with pytest.raises(PluginOptsError, match="human_approval"):
        HumanApproval(opts)


def test_cmdc_permission_options_are_kept() -> None:
    plugin = HumanApproval({"permission_options": ["reject_once", "approve_once"]})
    assert plugin.permission_options == ("approve_once", "reject_once")


def test_overlong_command_always_asks(ctx: PluginContext) -> None:
    allow = frozenset({("shell", "echo")})
    command = {"command": "echo " + "x" * MAX_SHELL_CHARS}
    decision = _decide({"tools": ["shell"]}, "shell", command, ctx, allowlist=allow)
    assert isinstance(decision, RequireApproval)

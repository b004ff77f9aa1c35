"""HumanApproval (CMDC built-in, priority 15): allow a tool call, deny it, or ask a human.

Decision per call, aster-style: `policies[name]` if set, else "ask" for the tools listed in
`tools` ("*" = all), else `default`. An "ask" is answered by `RequireApproval` unless the
call was just approved or every program it runs is on the session's allowlist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, assert_never, get_args

import orjson

from schemas import canonical_tool_name
from workers.plugins._base import (
    Action,
    BlockTool,
    Hook,
    Plugin,
    PluginContext,
    PluginOptsError,
    RequireApproval,
)
from workers.plugins._opts import known_keys
from workers.plugins._shell import command_families

Policy = Literal["allow", "ask", "deny"]
PermissionOption = Literal["approve_once", "approve_always", "reject_once"]

_OPTS = frozenset({"tools", "policies", "default", "hint", "timeout_ms", "permission_options"})
_DESCRIBED_ARGS = ("command", "path", "file_path", "pattern", "url")
_MAX_HINT = 200
_POLICIES: Mapping[str, Policy] = {"allow": "allow", "ask": "ask", "deny": "deny"}


class HumanApproval(Plugin):
    """Gates `before_tool` with allow / ask / deny policies."""

    name = "human_approval"
    priority = 15
    aliases = ("CMDC.Plugin.Builtin.HumanApproval",)

    tools: frozenset[str]
    policies: Mapping[str, Policy]
    default: Policy
    hint: str | None
    timeout_ms: int | None
    """How long an approval may wait; the engine enforces it (None: no limit)."""
    permission_options: tuple[PermissionOption, ...]
    """The answers a human is offered (CMDC's `permission_options`): listed in
    `approval_required`, and any other answer is refused."""

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("human_approval", opts, _OPTS)
        tools = _strings(opts.get("tools", []), "tools")
        raw_policies = opts.get("policies", {})
        if not isinstance(raw_policies, Mapping):
            raise PluginOptsError("human_approval: policies must be an object {tool: policy}")
        policies = {
            canonical_tool_name(str(tool)): _policy(value, f"policies[{tool!r}]")
            for tool, value in raw_policies.items()
        }
        default = _policy(opts.get("default", "allow"), "default")
        hint = opts.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise PluginOptsError("human_approval: hint must be a string or null")
        timeout_ms = opts.get("timeout_ms")
        if timeout_ms is not None and (
            isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0
        ):
            raise PluginOptsError("human_approval: timeout_ms must be a positive integer or null")
        known: tuple[str, ...] = get_args(PermissionOption)
        options = _strings(opts.get("permission_options", list(known)), "permission_options")
        wrong = [o for o in options if o not in known]
        if wrong or not options:
            raise PluginOptsError(f"human_approval: permission_options must be among {known}")
        self.tools = frozenset(canonical_tool_name(t) for t in tools)
        self.policies = policies
        self.default = default
        self.hint = hint
        self.timeout_ms = timeout_ms
        self.permission_options = tuple(o for o in get_args(PermissionOption) if o in options)

    def approval_timeout_ms(self) -> int | None:
        return self.timeout_ms

    def policy_for(self, tool: str) -> Policy:
        """The policy of one tool."""
        if tool in self.policies:
            return self.policies[tool]
        if tool in self.tools or "*" in self.tools:
            return "ask"
        return self.default

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if hook is not Hook.BEFORE_TOOL:
            return None
        name = str(payload.get("name", ""))
        args = payload.get("args")
        args = args if isinstance(args, Mapping) else {}
        policy = self.policy_for(name)
        match policy:
            case "allow":
                return None
            case "deny":
                return BlockTool("denied by policy")
            case "ask":
                if ctx.approved or _allowlisted(name, args, ctx.allowlist):
                    return None
                offered = self.permission_options
                return RequireApproval(
                    self.hint or describe_call(name, args),
                    options=None if len(offered) == len(get_args(PermissionOption)) else offered,
                )
            case _:
                assert_never(policy)


def describe_call(name: str, args: Mapping[str, Any]) -> str:
    """A short line for the human: `shell: git status`, `write_file: notes.md`."""
    for key in _DESCRIBED_ARGS:
        value = args.get(key)
        if isinstance(value, str):
            text = f"{name}: {value}"
            break
    else:
        text = f"{name}: {orjson.dumps(dict(args), default=str).decode()}"
    return text if len(text) <= _MAX_HINT else text[: _MAX_HINT - 1] + "…"


def _allowlisted(name: str, args: Mapping[str, Any], allowlist: frozenset[tuple[str, str]]) -> bool:
    if (name, "*") in allowlist:
        return True
    return all((name, family) in allowlist for family in command_families(name, args))


def _policy(value: object, field: str) -> Policy:
    if isinstance(value, str) and value in _POLICIES:
        return _POLICIES[value]
    raise PluginOptsError(
        f'human_approval: {field} must be "allow", "ask" or "deny", not {value!r}'
    )


def _strings(value: object, field: str) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PluginOptsError(f"human_approval: {field} must be a list of strings")
    return list(value)

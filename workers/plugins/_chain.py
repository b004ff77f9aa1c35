"""PluginChain: runs a session's plugins at one hook and folds their answers into one outcome.

Plugins run by priority. Emits accumulate, the last SwitchModel wins, ReplaceToolArgs feeds
the next plugins, and the first terminal action stops the chain. A plugin that crashes, leaves
an unserialisable state or answers with an action its hook refuses becomes an incident; the
chain goes on as if it had continued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, assert_never

import orjson

from workers.plugins._base import (
    ACTION_TYPES,
    ALLOWED,
    Abort,
    Action,
    BlockTool,
    Continue,
    Emit,
    Hook,
    Intervene,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
    ReplaceToolArgs,
    RequireApproval,
    Skip,
    SwitchModel,
    Terminal,
)

# Strict JSON: no dataclasses, datetimes or str/int/dict subclasses that would come back
# from storage as something else.
_STRICT = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_MAX_MESSAGE = 500


class Emitted(NamedTuple):
    """An Emit of the chain with the plugin that returned it: a `plugin_event` to publish."""

    plugin: str
    emit: Emit


IncidentKind = Literal["invalid_action", "crash"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A plugin misbehaved at a hook; the chain treated it as Continue."""

    plugin: str
    hook: Hook
    kind: IncidentKind
    message: str
    action: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form the engine reports."""
        return {
            "plugin": self.plugin,
            "hook": self.hook.value,
            "action": self.action,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainOutcome:
    """What the engine must do after a hook."""

    terminal: Terminal | None = None
    terminal_plugin: str | None = None
    emits: tuple[Emitted, ...] = ()
    switch_model: SwitchModel | None = None
    args: dict[str, Any] | None = None
    """The tool arguments after every ReplaceToolArgs (before_tool), else None."""
    incidents: tuple[Incident, ...] = ()


class PluginChain:
    """The plugins of one session, in priority order (ties keep the order given)."""

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        self._plugins = tuple(sorted(plugins, key=lambda p: p.priority))
        names = [p.name for p in self._plugins]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate plugins in a chain: {duplicates}")

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        return self._plugins

    def find(self, name: str) -> Plugin | None:
        """The plugin called `name` (or one of its aliases)."""
        for plugin in self._plugins:
            if name == plugin.name or name in plugin.aliases:
                return plugin
        return None

    def initial_states(self) -> dict[str, dict[str, Any]]:
        """The plugin states of a new session, keyed by plugin name."""
        return {p.name: p.initial_state() for p in self._plugins}

    def has(self, name: str) -> bool:
        """Whether the chain holds a plugin called `name` (or aliased so)."""
        return self.find(name) is not None

    def approval_timeout_ms(self) -> int | None:
        """The shortest approval timeout of the plugins that ask for approvals, if any."""
        timeouts = [t for p in self._plugins if (t := p.approval_timeout_ms()) is not None]
        return min(timeouts, default=None)

    def update_opts(
        self, plugin_name: str, opts: Mapping[str, Any], states: dict[str, dict[str, Any]]
    ) -> tuple[str | None, str | None]:
        """Hot-update one plugin's options: (mode, None) on success, else (None, error).

        A refused update leaves the plugin and its state as they were.
        """
        plugin = self.find(plugin_name)
        if plugin is None:
            return None, "not_found"
        state = states.setdefault(plugin.name, plugin.initial_state())
        before = orjson.dumps(state, option=_STRICT)
        try:
            return plugin.update_opts(opts, state), None
        except Exception as exc:
            _restore(state, before)
            return None, str(exc) if isinstance(exc, PluginOptsError) else _describe(exc)

    async def run(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        states: dict[str, dict[str, Any]],
        ctx: PluginContext,
        io: PluginIO,
    ) -> ChainOutcome:
        """Call every plugin at `hook`; `states` is updated in place."""
        emits: list[Emitted] = []
        incidents: list[Incident] = []
        switch: SwitchModel | None = None
        args: dict[str, Any] | None = None
        for plugin in self._plugins:
            action = await _call(plugin, hook, payload, states, ctx, io)
            match action:
                case Incident():
                    incidents.append(action)
                case None | Continue():
                    pass
                case Emit():
                    emits.append(Emitted(plugin.name, action))
                case SwitchModel():
                    switch = action
                case ReplaceToolArgs():
                    args = dict(action.args)
                    payload = {**payload, "args": args}
                case Abort() | Skip() | Intervene() | BlockTool() | RequireApproval():
                    return ChainOutcome(
                        terminal=action,
                        terminal_plugin=plugin.name,
                        emits=tuple(emits),
                        switch_model=switch,
                        args=args,
                        incidents=tuple(incidents),
                    )
                case _:
                    assert_never(action)
        return ChainOutcome(
            emits=tuple(emits), switch_model=switch, args=args, incidents=tuple(incidents)
        )


async def _call(  # noqa: PLR0917 (a private helper of `run`, called once)
    plugin: Plugin,
    hook: Hook,
    payload: Mapping[str, Any],
    states: dict[str, dict[str, Any]],
    ctx: PluginContext,
    io: PluginIO,
) -> Action | Incident | None:
    """One plugin's answer, or the incident that voids it (its state then stays as it was)."""
    try:
        state = states.get(plugin.name)
        if state is None:
            state = states[plugin.name] = plugin.initial_state()
        before = orjson.dumps(state, option=_STRICT)
    except Exception as exc:
        return _crash(plugin, hook, f"no usable state: {_describe(exc)}")
    try:
        action = await plugin.handle_async(hook, payload, state, ctx, io)
    except Exception as exc:
        _restore(state, before)
        return _crash(plugin, hook, _describe(exc))
    try:
        orjson.dumps(state, option=_STRICT)
    except TypeError as exc:
        _restore(state, before)
        return _crash(plugin, hook, f"state not JSON-serialisable after the call: {exc}")
    if action is None:
        return None
    if not isinstance(action, ACTION_TYPES):
        name = type(action).__name__
        message = f"{plugin.name} returned a {name} from {hook.value}, not an action"
        return Incident(plugin.name, hook, "invalid_action", message, name)
    problem = _refusal(plugin, hook, action)
    if problem is not None:
        return Incident(plugin.name, hook, "invalid_action", problem, action.kind)
    return action


def _refusal(plugin: Plugin, hook: Hook, action: Action) -> str | None:
    allowed = ALLOWED[hook]
    if type(action) not in allowed:
        there = ", ".join(a.kind for a in ACTION_TYPES if a in allowed)
        return f"{plugin.name} returned {action.kind} from {hook.value}; allowed there: {there}"
    try:
        orjson.dumps(dataclasses.asdict(action), option=_STRICT)
    except TypeError as exc:
        return f"{plugin.name} returned {action.kind} with data that is not JSON: {exc}"
    return None


def _restore(state: dict[str, Any], snapshot: bytes) -> None:
    state.clear()
    state.update(orjson.loads(snapshot))


def _crash(plugin: Plugin, hook: Hook, message: str) -> Incident:
    return Incident(plugin.name, hook, "crash", message[:_MAX_MESSAGE])


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE]

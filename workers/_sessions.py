"""Creating a session: options (with a blueprint under them), plugins, tools, an optional
checkpoint to start from, and for a sub-agent its parent link and first prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flotilla.errors import ConfigurationError
from flotilla.outbound import OutboundError, OutboundRefused, check_url
from flotilla.runtime import load_object
from schemas import Create, ParentLink, SessionOptions, SessionState, canonical_tool_name
from workers import _audit, _metrics, _subagents
from workers._checkpoints import load_checkpoint
from workers._delivery import Delivery
from workers._events import now_ms
from workers._turn import TurnRunner
from workers.errors import CommandRejected
from workers.plugins import Abort, Hook, discover_skills
from workers.tools import WorkspaceError

if TYPE_CHECKING:
    from workers._actor import SessionActor

_NOT_OPTIONS = {"op", "id", "ts", "meta", "from_checkpoint", "messages", "parent", "blueprint"}
_NOT_RESTORED = frozenset(
    {
        *("sid", "tenant", "options", "parent", "depth"),
        # what plugins accrued is rebuilt at session_start, as CMDC does (seeds/000 recipe 6):
        # a copy does not inherit the spend, counters or "always" approvals of the original
        *("plugin_states", "allowlist", "system_context", "skills"),
        *("usage", "subagent_usage", "turns", "tool_calls", "prompt_count"),
    }
)
"""Fields of a checkpoint's state that a session created from it does not take."""


class Blueprints:
    """Named option sets registered by import path (`name=package.module:attr`)."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self._options: dict[str, dict[str, Any]] = {}
        for entry in entries:
            name, sep, path = entry.partition("=")
            if not sep or ":" not in path or not name.strip():
                raise ConfigurationError(f"blueprint {entry!r} must be 'name=package.module:attr'")
            target = load_object(path, what=f"blueprint {name.strip()}:")
            options = target() if callable(target) else target
            if not isinstance(options, Mapping):
                raise ConfigurationError(f"blueprint {entry!r} must give a mapping of options")
            try:  # checked now, with a stand-in model, rather than at each `create`
                SessionOptions.model_validate({"model": "mock:blueprint", **options})
            except ValidationError as exc:
                raise ConfigurationError(f"blueprint {entry!r}: {exc}") from None
            self._options[name.strip()] = dict(options)

    def get(self, name: str) -> dict[str, Any] | None:
        options = self._options.get(name)
        return dict(options) if options is not None else None


def _options(actor: SessionActor, command: Create) -> dict[str, Any]:
    given = command.model_dump(include=command.model_fields_set - _NOT_OPTIONS)
    given["model"] = command.model
    if command.blueprint is None:
        return command.model_dump(exclude=_NOT_OPTIONS) | given
    base = actor.ctx.blueprints.get(command.blueprint)
    if base is None:
        raise CommandRejected("invalid_command", f"no blueprint {command.blueprint!r}")
    defaults = command.model_dump(exclude=_NOT_OPTIONS)
    return defaults | base | given


async def _restore(
    actor: SessionActor,
    command: Create,
    tenant: str,
    options: dict[str, Any],
    history: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], dict[str, bytes] | None]:
    """With `from_checkpoint`: the checkpoint's state, its options under the given ones, its
    history before the given messages, its workspace files."""
    ref = command.from_checkpoint
    if ref is None:
        return {}, options, history, None
    restored = await load_checkpoint(
        actor.ctx.store, ref.session_id, ref.checkpoint_id, tenant=tenant
    )
    if restored is None:
        raise CommandRejected(
            "not_found", f"no checkpoint {ref.checkpoint_id!r} of session {ref.session_id!r}"
        )
    base, saved_history, files = restored
    given = {k: v for k, v in options.items() if k in command.model_fields_set or k == "model"}
    return base, base.get("options", {}) | given, saved_history + history, files


async def _check_webhook(actor: SessionActor, url: str) -> None:
    """Refuse a webhook URL the fleet must not call, as for callback tools (the gateway
    checks it again at each delivery)."""
    try:
        await check_url(url, actor.settings.callback_allow)
    except OutboundRefused as exc:
        raise CommandRejected(exc.code, f"webhook: {exc}") from None
    except OutboundError as exc:
        raise CommandRejected("invalid_command", f"webhook: {exc}") from None


async def _check_models(actor: SessionActor, options: dict[str, Any]) -> None:
    """The session's model and its sub-agents' have a provider here (`unsupported_provider`)."""
    subagent_models = (spec.get("model") for spec in options.get("subagents", []))
    for model in {options["model"], *subagent_models} - {None}:
        await actor.ctx.check_model(model)


def _check_subagent_plugins(actor: SessionActor, options: dict[str, Any]) -> None:
    """The plugins a sub-agent spec names can be loaded (checked now rather than when the
    parent's task call starts the sub-agent)."""
    for spec in options.get("subagents", []):
        plugins = spec.get("plugins")
        if plugins is None:
            continue
        problem = _subagents.check_plugins(plugins, extra=actor.settings.custom_plugins)
        if problem is not None:
            raise CommandRejected("invalid_command", f"subagents[{spec['name']!r}]: {problem}")


async def create_session(
    actor: SessionActor, command: Create, delivery: Delivery, rid: str
) -> None:
    if actor.state is not None:
        raise CommandRejected("already_exists", f"session {actor.sid!r} already exists")
    if command.parent is None:
        await _create(actor, command, delivery, rid, None)
        return
    link = await _subagents.verify_parent(actor, command, delivery.tenant)
    try:
        await _create(actor, command, delivery, rid, link)
    except CommandRejected as exc:
        await _subagents.report_refusal(actor, link[0], delivery.tenant, exc)
        raise


async def _create(
    actor: SessionActor,
    command: Create,
    delivery: Delivery,
    rid: str,
    parent: tuple[ParentLink, int] | None,
) -> None:
    state, history, workspace_files = await _new_state(actor, command, delivery, parent)
    actor.state = state
    actor.version = 0
    try:
        await _start(actor, workspace_files, rid)
    except CommandRejected:
        if workspace_files:
            await actor.workspace.clear()
        actor.state = None
        raise
    for message in history:
        actor.append_message(message)
    if command.parent is not None:
        TurnRunner.begin(actor, command.parent.task, rid, {})
    await actor.commit(delivery)
    await actor.emit("session_created", {}, request_id=rid)
    hibernate_after_ms = state.options.hibernate_after_ms
    _metrics.HIBERNATE_AFTER.labels("session" if hibernate_after_ms else "fleet").observe(
        (hibernate_after_ms or actor.settings.hibernate_after_ms) / 1000
    )
    if command.from_checkpoint is not None:
        await actor.emit(
            "session_resumed", {"from": "checkpoint", "worker": actor.ctx.worker_id}, request_id=rid
        )
    if command.parent is not None:
        await actor.emit(
            "prompt_received", {"text": command.parent.task, "queued": False}, request_id=rid
        )
        await actor.emit("agent_start", {}, request_id=rid)
        await _audit.turn_started(actor, rid)
        actor.start_turn()


async def _new_state(
    actor: SessionActor,
    command: Create,
    delivery: Delivery,
    parent: tuple[ParentLink, int] | None,
) -> tuple[SessionState, list[dict[str, Any]], dict[str, bytes] | None]:
    """The new session's state, its history and (from a checkpoint) its workspace files."""
    options = _options(actor, command)
    options["tools"] = [canonical_tool_name(t) for t in options.get("tools", [])]
    for name in options["tools"]:
        if not actor.ctx.tools.known(name, tenant=delivery.tenant):
            raise CommandRejected("invalid_command", f"tools: no tool {name!r} on this fleet")
    ts = now_ms()
    history: list[dict[str, Any]] = [m.model_dump(exclude_none=True) for m in command.messages]
    base, options, history, workspace_files = await _restore(
        actor, command, delivery.tenant, options, history
    )
    await _check_models(actor, options)
    _check_subagent_plugins(actor, options)
    state = SessionState.model_validate(
        {
            **{k: v for k, v in base.items() if k not in _NOT_RESTORED},
            "sid": actor.sid,
            "tenant": delivery.tenant,
            "options": options,
            "created_ms": ts,
            "last_active_ms": ts,
            "model": options["model"],
            "status": "idle",
            "current": None,
            "prompt_queue": [],
            "steering_queue": [],
            "pending_approvals": [],
            "pending_questions": [],
            "unannounced": [],
            "outbox": [],
            "applied_seq": delivery.seq,
        }
    )
    if not base or "tools" in command.model_fields_set or not state.tools:
        state.tools = list(state.options.tools)  # a resumed session keeps its tools unless told
    if not base or "provider_opts" in command.model_fields_set:
        state.provider_opts = dict(state.options.provider_opts)
        state.script_cursor = 0  # new provider options: a mock script starts from its top
    if parent is not None:
        state.parent, state.depth = parent
    if state.options.webhook is not None:
        await _check_webhook(actor, state.options.webhook.url)
    return state, history, workspace_files


async def _start(actor: SessionActor, workspace_files: dict[str, bytes] | None, rid: str) -> None:
    """Plugins, the workspace of a checkpoint, skills, then `session_start` (which sees them)."""
    state = actor.state
    assert state is not None
    try:
        actor.attach_plugins()
    except CommandRejected as exc:
        raise CommandRejected("invalid_command", f"plugins: {exc.message}") from None
    state.plugin_states = actor.hooks.chain.initial_states()
    if workspace_files:
        await actor.workspace.restore(workspace_files)
    if state.options.skills_dirs:
        try:
            state.skills = await discover_skills(actor.hooks.io, state.options.skills_dirs)
        except WorkspaceError as exc:
            raise CommandRejected("invalid_command", f"skills_dirs: {exc}") from None
    started = await actor.hooks.run(Hook.SESSION_START, {}, request_id=rid)
    if isinstance(started.terminal, Abort):
        raise CommandRejected("plugin_aborted", f"session_start: {started.terminal.reason}")

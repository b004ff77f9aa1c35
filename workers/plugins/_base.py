"""The plugin contract: the hooks, the actions a plugin may answer with, the base class.

A plugin is called at each hook with the hook's payload, its own JSON state and a read-only
`PluginContext`. `handle` is synchronous and does no I/O; a plugin that needs the session's
workspace, a checkpoint, an LLM (a judge) or the system prompt overrides `handle_async`, which
also gets a `PluginIO` the engine implements. Payload keys per hook:

    session_start, session_end  {}
    after_turn         {outcome: "finished" | "aborted", abort_reason, messages_diff,
                        usage_diff, started_at_ms, ended_at_ms, duration_ms}
    before_prompt      {text}
    before_request     {messages}
    after_response     {message}
    before_tool        {name, call_id, args}
    on_tool_error      {name, call_id, error, attempt}
    after_tool         {name, call_id, result, is_error}
    after_tool_batch   {results: [{name, call_id, result, is_error}]}
    before_finish      {message}
    before_compact     {messages}
    before_steering    {text}
    before_plugin_opts_update  {plugin, opts}

Which action each hook accepts is `ALLOWED`, CMDC's hook x action matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Protocol


class Hook(StrEnum):
    """The points of a session's life where plugins are called (CMDC's 13 events)."""

    SESSION_START = "session_start"
    SESSION_END = "session_end"
    AFTER_TURN = "after_turn"
    BEFORE_PROMPT = "before_prompt"
    BEFORE_REQUEST = "before_request"
    AFTER_RESPONSE = "after_response"
    BEFORE_TOOL = "before_tool"
    ON_TOOL_ERROR = "on_tool_error"
    AFTER_TOOL = "after_tool"
    AFTER_TOOL_BATCH = "after_tool_batch"
    BEFORE_FINISH = "before_finish"
    BEFORE_COMPACT = "before_compact"
    BEFORE_STEERING = "before_steering"
    BEFORE_PLUGIN_OPTS_UPDATE = "before_plugin_opts_update"
    """CMDC v0.6: a hot update of another plugin's options; abort or skip refuses it."""


@dataclass(frozen=True, slots=True)
class Continue:
    """Carry on; what returning None means."""

    kind: ClassVar[str] = "continue"


@dataclass(frozen=True, slots=True)
class Intervene:
    """Inject `prompt` as a user message and run another step instead of going on."""

    prompt: str
    kind: ClassVar[str] = "intervene"


@dataclass(frozen=True, slots=True)
class Abort:
    """End the turn (or refuse the session start / the steering message) with `reason`."""

    reason: str
    kind: ClassVar[str] = "abort"


@dataclass(frozen=True, slots=True)
class Skip:
    """Drop what the hook is about (the prompt, the request, the retry, the compaction)."""

    kind: ClassVar[str] = "skip"


@dataclass(frozen=True, slots=True)
class BlockTool:
    """Do not run the tool; the LLM gets an error result saying `reason`."""

    reason: str
    kind: ClassVar[str] = "block_tool"


@dataclass(frozen=True, slots=True)
class ReplaceToolArgs:
    """Run the tool with `args` instead; later plugins see the new args."""

    args: dict[str, Any]
    kind: ClassVar[str] = "replace_tool_args"


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish a `plugin_event` of kind `type` with `data`; the chain goes on."""

    type: str
    data: dict[str, Any]
    kind: ClassVar[str] = "emit"


@dataclass(frozen=True, slots=True)
class SwitchModel:
    """Use `model` from the next LLM request on; the last one of a chain wins."""

    model: str
    provider_opts: dict[str, Any] | None = None
    kind: ClassVar[str] = "switch_model"


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """Flotilla extension (not one of CMDC's 8): park the call until a human approves it.

    Only `before_tool` accepts it. The engine publishes `approval_required` with `hint`; once
    approved it runs `before_tool` again with `PluginContext.approved` set.
    """

    hint: str | None = None
    options: tuple[str, ...] | None = None
    """The answers the human is offered (`approve_once`, `approve_always`, `reject_once`);
    None: all of them. Any other answer is refused (`permission_not_offered`)."""
    kind: ClassVar[str] = "require_approval"


Action = (
    Continue
    | Intervene
    | Abort
    | Skip
    | BlockTool
    | ReplaceToolArgs
    | Emit
    | SwitchModel
    | RequireApproval
)
Terminal = Abort | Skip | Intervene | BlockTool | RequireApproval
"""The actions that stop the chain."""

ACTION_TYPES: tuple[type[Action], ...] = (
    Continue,
    Intervene,
    Abort,
    Skip,
    BlockTool,
    ReplaceToolArgs,
    Emit,
    SwitchModel,
    RequireApproval,
)

_C, _I, _A, _S = Continue, Intervene, Abort, Skip
_B, _R, _E, _M = BlockTool, ReplaceToolArgs, Emit, SwitchModel

ALLOWED: Mapping[Hook, frozenset[type[Action]]] = MappingProxyType(
    {
        Hook.SESSION_START: frozenset({_C, _A, _E}),
        Hook.SESSION_END: frozenset({_C, _E}),
        Hook.AFTER_TURN: frozenset({_C, _E}),
        Hook.BEFORE_PROMPT: frozenset({_C, _I, _A, _S, _E}),
        Hook.BEFORE_REQUEST: frozenset({_C, _I, _A, _S, _E, _M}),
        Hook.AFTER_RESPONSE: frozenset({_C, _I, _A, _S, _E, _M}),
        Hook.BEFORE_TOOL: frozenset({_C, _A, _B, _R, _E, _M, RequireApproval}),
        # CMDC marks switch_model "-*" here (ignored: no agent state in the retry loop).
        Hook.ON_TOOL_ERROR: frozenset({_C, _A, _S, _E}),
        Hook.AFTER_TOOL: frozenset({_C, _I, _A, _E, _M}),
        Hook.AFTER_TOOL_BATCH: frozenset({_C, _I, _A, _E, _M}),
        Hook.BEFORE_FINISH: frozenset({_C, _I, _A, _E}),
        Hook.BEFORE_COMPACT: frozenset({_C, _S, _E}),
        Hook.BEFORE_STEERING: frozenset({_C, _I, _A, _E}),
        Hook.BEFORE_PLUGIN_OPTS_UPDATE: frozenset({_C, _A, _S, _E}),
    }
)
"""CMDC's hook x action matrix (seeds/003), plus RequireApproval in before_tool."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginContext:
    """What a plugin may read about the session; built by the engine for each call."""

    session_id: str
    tenant: str
    turn: int
    model: str
    user_data: dict[str, Any] = field(default_factory=dict)
    tools: tuple[str, ...] = ()
    total_tokens: int = 0
    cost_usd: float = 0.0
    spent_usd: float = 0.0
    """What counts against the session's budgets: `cost_usd`, its finished sub-agents' cost
    and, for a sub-agent, what its parent had spent when it started it."""
    skills_dirs: tuple[str, ...] = ()
    """The session's `skills_dirs` option (where SKILL.md files are discovered)."""
    allowlist: frozenset[tuple[str, str]] = frozenset()
    """(tool, command family) pairs a human approved "always" in this session."""
    approved: bool = False
    """True when before_tool re-runs for a call a human has just approved."""
    last_assistant_reply: str | None = None


class PluginOptsError(ValueError):
    """A plugin's options are invalid; the message says which and why."""


class PluginIO(Protocol):
    """What `handle_async` may ask of the engine; each call acts on the plugin's session."""

    async def read_text(self, path: str) -> str | None:
        """A workspace file as text; None when it does not exist."""
        ...

    async def write_text(self, path: str, text: str, *, append: bool = False) -> None:
        """Write (or append to) a workspace file."""
        ...

    async def find_files(self, directory: str, name: str) -> list[str]:
        """Workspace paths under `directory` whose file name is `name` (e.g. SKILL.md)."""
        ...

    async def checkpoint(
        self,
        label: str,
        metadata: Mapping[str, Any],
        *,
        keep: int | None = None,
        ttl_s: int | None = None,
    ) -> str:
        """Save a checkpoint of the session now (`checkpoint_saved` is published); its id.

        `keep`: how many checkpoints the session keeps at most (oldest dropped), `ttl_s`: how
        long this one lives; each capped by the fleet's limits.
        """
        ...

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        provider_opts: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> str:
        """One LLM answer (no tools), for judges and extractors; raises on failure/timeout."""
        ...

    def set_system_context(self, key: str, text: str | None) -> None:
        """Set (or, with None, remove) a dynamic section of the system prompt (persisted)."""
        ...

    def history(self) -> list[dict[str, Any]]:
        """A copy of the conversation history."""
        ...

    def set_request_option(self, key: str, value: Any) -> None:
        """An option of the next LLM request only (before_request), e.g. `prompt_cache`."""
        ...

    def patch_history(self, results: list[dict[str, Any]]) -> None:
        """Insert `tool_result` messages, each right after the assistant message (and the
        results already there) that made its `call_id`; persisted at the next save."""
        ...


class Plugin:
    """Base of every plugin: a typed no-op that continues at every hook.

    Subclasses set `name` (and `priority`: lower runs first), validate and apply their
    options in `configure`, and answer hooks in `handle`. `state` is the plugin's own
    JSON-serialisable dict, persisted with the session; mutate it in place.
    """

    name: ClassVar[str]
    priority: ClassVar[int] = 100
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names the plugin is known by (CMDC module names)."""

    def __init__(self, opts: Mapping[str, Any]) -> None:
        self.configure(opts)
        self.opts: dict[str, Any] = dict(opts)
        """The options in force (what a hot update merges into)."""

    def configure(self, opts: Mapping[str, Any]) -> None:
        """Validate `opts` and apply them; raise PluginOptsError before changing anything."""
        if opts:
            raise PluginOptsError(f"{self.name} takes no options; got {sorted(opts)}")

    def on_config_update(self, opts: Mapping[str, Any], state: dict[str, Any]) -> bool:
        """Hot update (update_plugin_opts) with access to the plugin's state; return False to
        use the default instead: the new options merged over the current ones and
        re-validated. Raise PluginOptsError to refuse the update (nothing changes)."""
        return False

    def update_opts(self, opts: Mapping[str, Any], state: dict[str, Any]) -> str:
        """Apply a hot update; returns its mode, "callback" or "merge"."""
        if self.on_config_update(opts, state):
            self.opts = {**self.opts, **opts}
            return "callback"
        merged = {**self.opts, **opts}
        self.configure(merged)
        self.opts = merged
        return "merge"

    def approval_timeout_ms(self) -> int | None:
        """How long the engine lets this plugin's RequireApproval wait; None: no limit."""
        return None

    def initial_state(self) -> dict[str, Any]:
        """The state of a new session (JSON-serialisable)."""
        return {}

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        """Answer one hook; None means Continue."""
        return None

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        """Answer one hook with I/O; the engine calls this, which by default is `handle`."""
        return self.handle(hook, payload, state, ctx)

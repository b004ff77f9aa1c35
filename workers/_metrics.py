"""Prometheus metrics of the worker process (served on its /metrics port).

CMDC's 18 telemetry events (seeds/000 recipes 7 and 16) are these metrics here; bounded labels
only (no session, tenant or free-text values; tools through `tool_label`, providers through
`provider_label`, plugins' hooks and actions are fixed sets):

    agent.turn.start          flotilla_worker_turns_started_total
    agent.turn.stop           flotilla_worker_turns_total{reason}, flotilla_worker_turn_seconds,
                              flotilla_worker_aborts_total{cause}
    llm.request.start         flotilla_worker_llm_requests_started_total{provider}
    llm.request.stop          flotilla_worker_llm_request_seconds{provider,outcome},
                              flotilla_worker_llm_errors_total{provider,code},
                              flotilla_worker_llm_calls_total{provider},
                              flotilla_worker_llm_tokens_total{provider,kind},
                              flotilla_worker_llm_cost_usd_total{provider}
    tool.exec.start           flotilla_worker_tool_calls_started_total{tool}
    tool.exec.stop            flotilla_worker_tool_seconds{tool},
                              flotilla_worker_tool_calls_total{tool,status}
    plugin.pipeline.start     flotilla_worker_plugin_pipelines_started_total{hook}
    plugin.pipeline.stop      flotilla_worker_plugin_pipeline_seconds{hook,outcome}
    plugin.crash              flotilla_worker_plugin_incidents_total{kind="crash"}
    compactor.run.start       flotilla_worker_compactor_runs_total{trigger}
    compactor.run.stop        flotilla_worker_compactor_ratio,
                              flotilla_worker_compactor_removed_messages_total
    checkpoint.save           flotilla_worker_checkpoints_total, flotilla_worker_checkpoint_bytes
    checkpoint.load           flotilla_worker_checkpoint_loads_total{outcome}
    subagent.start            flotilla_worker_subagents_total
    subagent.stop             flotilla_worker_subagents_ended_total{status}
    agent.hibernate.configured  flotilla_worker_hibernate_after_seconds{source},
                              flotilla_worker_hibernations_total
    provider.registry.lookup  flotilla_worker_registry_lookups_total{outcome}
    provider.registry.register  flotilla_router_registry_changes_total{op} (router/_metrics.py)

Audit records (flotilla/audit.py) count as flotilla_audit_records_total{action} and
flotilla_audit_publish_failures_total.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from workers._llm import LLMResponse
from workers.tools._catalog import BUILTIN_TOOL_NAMES

COMMANDS = Counter(
    "flotilla_worker_commands_total", "Commands handled, by op and outcome", ["op", "outcome"]
)
DEAD_LETTERS = Counter("flotilla_worker_dead_letters_total", "Commands dead-lettered", ["code"])
EVENTS_PUBLISHED = Counter(
    "flotilla_worker_events_published_total", "Events published, by channel", ["channel"]
)
WEBHOOK_JOBS = Counter(
    "flotilla_worker_webhook_jobs_total",
    "Webhook jobs put on the hook stream, by outcome (published, failed)",
    ["outcome"],
)
TURNS = Counter("flotilla_worker_turns_total", "Turns ended, by reason", ["reason"])
TURNS_RESUMED = Counter(
    "flotilla_worker_turns_resumed_total", "Turns resumed after a lost worker or a handover"
)
TURN_SECONDS = Histogram(
    "flotilla_worker_turn_seconds",
    "Duration of a turn, agent_start to agent_end",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
COMMAND_SECONDS = Histogram(
    "flotilla_worker_command_seconds",
    "From delivery of a command to its ack",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
STORE_WAIT_SHORT = Counter(
    "flotilla_worker_store_wait_short_total",
    "State writes that fewer replicas than FLOTILLA_REDIS_WAIT_REPLICAS acknowledged in time "
    "(each retried as a Redis outage)",
)
STORE_BATCH = Histogram(
    "flotilla_worker_store_batch_commands",
    "Redis commands sent in one pipeline",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FENCED = Counter("flotilla_worker_fenced_total", "Writes refused because a newer owner exists")
RESIDENT = Gauge("flotilla_worker_resident_sessions", "Sessions resident in this worker")
SHARDS_OWNED = Gauge("flotilla_worker_shards_owned", "Shards this worker consumes")
EVENT_REPUBLISHED = Counter(
    "flotilla_worker_events_republished_total",
    "Events published again because FLOTILLA_EVT had not acknowledged them within a second "
    "(a stream leader election, a lost node)",
)
EVENTS_UNCAPTURED = Counter(
    "flotilla_worker_events_uncaptured_total",
    "Events given up after a minute without FLOTILLA_EVT's acknowledgement (missing from replay)",
)
EVENTS_PENDING = Gauge(
    "flotilla_worker_events_pending",
    "Events published and not yet acknowledged by FLOTILLA_EVT",
)
COMMAND_RETRIES = Counter(
    "flotilla_worker_command_retries_total",
    "Commands tried again in place after a Redis or NATS outage or a write conflict (the "
    "session's later commands wait behind them)",
)
COMMANDS_RECOVERED = Counter(
    "flotilla_worker_commands_recovered_total",
    "Commands the consumer sent that never arrived (a pull response lost with a node or a "
    "leader change), read from the stream and applied before the session's later commands",
)
INTAKE_SUSPECTS = Counter(
    "flotilla_worker_intake_suspects_total",
    "Signs that a delivery may have gone missing (gap in the consumer sequence, lost pull, "
    "failed pull): the shard's sessions check the stream for earlier commands for a while",
    ["reason"],
)
STORE_WRITES_LOST = Counter(
    "flotilla_worker_store_writes_lost_total",
    "Sessions Redis had lost acknowledged writes of (a failover to a replica that lacked "
    "them), written again from the worker's copy",
)
RESUMES_DEFERRED = Counter(
    "flotilla_worker_resumes_deferred_total",
    "Turn resumptions put off because Redis or NATS was unreachable (tried again each second)",
)
SHARD_TAKE_SECONDS = Histogram(
    "flotilla_worker_shard_take_seconds",
    "From a shard's assignment seen to its commands consumed (the wait for the previous "
    "owner's release included): the worker's part of a failover",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34),
)
HANDOVER_TIMEOUTS = Counter(
    "flotilla_worker_handover_timeouts_total",
    "Shards taken over after the handover grace because the previous owner did not release",
)
WATCH_RESTARTS = Counter(
    "flotilla_worker_watch_restarts_total",
    "Times the watch of the placement bucket was made again after it failed or ended",
)
HANDOVER_SKIPPED = Counter(
    "flotilla_worker_handovers_not_waited_total",
    "Shards taken without waiting out the handover grace because the previous owner's "
    "heartbeat showed it would not release them (stopped, silent, or a new process)",
    ["reason"],
)
SHARDS_SUPERSEDED = Counter(
    "flotilla_worker_shards_superseded_total",
    "Shard assignments found stale (a newer owner's consumer was there) and let go",
)
SLOTS_FREE = Gauge("flotilla_worker_slots_free", "Command slots free for fetching")
LLM_CALLS = Counter("flotilla_worker_llm_calls_total", "LLM calls, by provider", ["provider"])
LLM_TOKENS = Counter(
    "flotilla_worker_llm_tokens_total", "Tokens, by provider and kind", ["provider", "kind"]
)
LLM_COST = Counter("flotilla_worker_llm_cost_usd_total", "Cost in USD, by provider", ["provider"])
TOOL_SECONDS = Histogram(
    "flotilla_worker_tool_seconds",
    "Duration of one tool call attempt, by tool (built-ins by name, others grouped)",
    ["tool"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
TOOL_CALLS = Counter(
    "flotilla_worker_tool_calls_total", "Tool calls ended, by tool and status", ["tool", "status"]
)
APPROVALS = Counter(
    "flotilla_worker_approvals_total", "Approval requests and decisions", ["outcome"]
)
SUBAGENTS = Counter("flotilla_worker_subagents_total", "Sub-agents started")
CHECKPOINTS = Counter("flotilla_worker_checkpoints_total", "Checkpoints saved")
PLUGIN_INCIDENTS = Counter(
    "flotilla_worker_plugin_incidents_total",
    "Plugins that crashed or returned an action their hook does not allow",
    ["kind"],
)
ABORTS = Counter("flotilla_worker_aborts_total", "Turns aborted, by cause", ["cause"])
TURNS_STARTED = Counter("flotilla_worker_turns_started_total", "Turns started (agent_start)")
LLM_STARTED = Counter(
    "flotilla_worker_llm_requests_started_total",
    "LLM request attempts started, by provider",
    ["provider"],
)
LLM_SECONDS = Histogram(
    "flotilla_worker_llm_request_seconds",
    "Duration of one LLM request attempt that ended, by provider and outcome (ok, error)",
    ["provider", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LLM_ERRORS = Counter(
    "flotilla_worker_llm_errors_total",
    "Failed LLM request attempts, by provider and error code",
    ["provider", "code"],
)
TOOLS_STARTED = Counter(
    "flotilla_worker_tool_calls_started_total", "Tool call attempts started, by tool", ["tool"]
)
PLUGINS_STARTED = Counter(
    "flotilla_worker_plugin_pipelines_started_total",
    "Plugin chains started at a hook of a session with plugins, by hook",
    ["hook"],
)
PLUGIN_SECONDS = Histogram(
    "flotilla_worker_plugin_pipeline_seconds",
    "Duration of a session's plugin chain at one hook, by hook and outcome (continue or the "
    "terminal action)",
    ["hook", "outcome"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1, 10),
)
COMPACTIONS = Counter(
    "flotilla_worker_compactor_runs_total",
    "Compactions run, by trigger (threshold, requested)",
    ["trigger"],
)
COMPACTION_RATIO = Histogram(
    "flotilla_worker_compactor_ratio",
    "History characters after a compaction over those before",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
COMPACTED_MESSAGES = Counter(
    "flotilla_worker_compactor_removed_messages_total", "Messages replaced by compaction summaries"
)
CHECKPOINT_BYTES = Histogram(
    "flotilla_worker_checkpoint_bytes",
    "Size of a saved checkpoint (state, history and workspace)",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
CHECKPOINT_LOADS = Counter(
    "flotilla_worker_checkpoint_loads_total",
    "Checkpoints looked up by create{from_checkpoint}, by outcome (hit, miss)",
    ["outcome"],
)
SUBAGENTS_ENDED = Counter(
    "flotilla_worker_subagents_ended_total",
    "Sub-agent results received by their parent, by status (ok, error)",
    ["status"],
)
HIBERNATE_AFTER = Histogram(
    "flotilla_worker_hibernate_after_seconds",
    "Idle time before hibernation of the sessions created, by source (session, fleet)",
    ["source"],
    buckets=(1, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
HIBERNATIONS = Counter(
    "flotilla_worker_hibernations_total", "Sessions hibernated (persisted, dropped from memory)"
)
REGISTRY_LOOKUPS = Counter(
    "flotilla_worker_registry_lookups_total",
    "registry: model resolutions, by outcome (hit, missing, failed)",
    ["outcome"],
)
REGISTRY_RELOADS = Counter(
    "flotilla_worker_registry_reloads_total",
    "Full reloads of the registry copy, by cause (start, gap, resync)",
    ["cause"],
)

_BUILTIN_TOOLS = frozenset(BUILTIN_TOOL_NAMES)
_LLM_ERRORS = frozenset(
    {
        "rate_limit",
        "timeout",
        "server",
        "auth",
        "context_overflow",
        "bad_request",
        "invalid_model",
        "provider_error",
        "unsupported_provider",
        "registry_profile_missing",
        "registry_resolver_failed",
        "registry_unavailable",
        "budget_exceeded",
        "stream_stalled",
    }
)
_PROVIDERS = frozenset(
    {
        "mock",
        "registry",
        "openai",
        "anthropic",
        "gemini",
        "vertex_ai",
        "azure",
        "bedrock",
        "mistral",
        "groq",
        "ollama",
        "deepseek",
        "openrouter",
        "together_ai",
        "xai",
        "cohere",
    }
)


def tool_label(name: str) -> str:
    """A bounded label value: tool names come from sessions, so only built-ins keep theirs."""
    return name if name in _BUILTIN_TOOLS else "other"


def provider_label(model: str) -> str:
    provider = model.partition(":")[0]
    return provider if provider in _PROVIDERS else "other"


def llm_error_label(code: str) -> str:
    """A bounded label value for an LLM error code (adapters' codes; others grouped)."""
    return code if code in _LLM_ERRORS else "other"


def llm_responded(model: str, response: LLMResponse) -> None:
    """An LLM answer's calls, tokens and cost (the session's or a plugin's call)."""
    provider = provider_label(model)
    LLM_CALLS.labels(provider).inc()
    LLM_TOKENS.labels(provider, "prompt").inc(response.prompt_tokens)
    LLM_TOKENS.labels(provider, "completion").inc(response.completion_tokens)
    LLM_TOKENS.labels(provider, "cached").inc(response.cached_tokens)
    LLM_COST.labels(provider).inc(response.cost_usd)


def llm_request_ended(provider: str, started: float, *, error: str | None) -> None:
    """llm.request.stop: the attempt's duration since `started` (perf_counter), its error."""
    LLM_SECONDS.labels(provider, "ok" if error is None else "error").observe(
        time.perf_counter() - started
    )
    if error is not None:
        LLM_ERRORS.labels(provider, llm_error_label(error)).inc()

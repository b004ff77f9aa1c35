"""Prometheus metrics of the worker process (served on its /metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from workers.tools._catalog import BUILTIN_TOOL_NAMES

COMMANDS = Counter(
    "flotilla_worker_commands_total", "Commands handled, by op and outcome", ["op", "outcome"]
)
DEAD_LETTERS = Counter("flotilla_worker_dead_letters_total", "Commands dead-lettered", ["code"])
EVENTS_PUBLISHED = Counter(
    "flotilla_worker_events_published_total", "Events published, by channel", ["channel"]
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
STORE_BATCH = Histogram(
    "flotilla_worker_store_batch_commands",
    "Redis commands sent in one pipeline",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FENCED = Counter("flotilla_worker_fenced_total", "Writes refused because a newer owner exists")
RESIDENT = Gauge("flotilla_worker_resident_sessions", "Sessions resident in this worker")
SHARDS_OWNED = Gauge("flotilla_worker_shards_owned", "Shards this worker consumes")
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

_BUILTIN_TOOLS = frozenset(BUILTIN_TOOL_NAMES)
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

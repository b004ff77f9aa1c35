"""Prometheus metrics of the worker process (served on its /metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

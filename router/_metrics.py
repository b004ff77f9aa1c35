"""Prometheus metrics of the router process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LEADER = Gauge("flotilla_router_leader", "1 while this replica leads the fleet")
LIVE_WORKERS = Gauge("flotilla_router_live_workers", "Workers with a fresh heartbeat")
UNOWNED_SHARDS = Gauge(
    "flotilla_router_unowned_shards",
    "Shards no live worker reports consuming (the leader's view; > 0 during a failover)",
)
SHARD_MOVES = Counter(
    "flotilla_router_shard_moves_total", "Shard assignments written, by cause", ["cause"]
)
HIBERNATIONS = Counter(
    "flotilla_router_hibernations_requested_total", "hibernate commands sent by the sweep"
)
APPROVAL_TIMEOUTS = Counter(
    "flotilla_router_approval_timeouts_sent_total",
    "Timeout rejects sent by the sweep for approvals past their deadline (deduplicated with "
    "the owning worker's own)",
)
WATCH_RESTARTS = Counter(
    "flotilla_router_watch_restarts_total",
    "Times the watch of the workers' heartbeats was made again after it failed or ended",
)
LEADER_CHANGES = Counter(
    "flotilla_router_leadership_acquired_total", "Times this replica became leader"
)
REGISTRY_CHANGES = Counter(
    "flotilla_router_registry_changes_total",
    "Provider profiles registered or unregistered (CMDC provider.registry.register), by op",
    ["op"],
)
REGISTRY_REQUESTS = Counter(
    "flotilla_router_registry_requests_total",
    "Provider registry requests answered, by op and outcome",
    ["op", "outcome"],
)
REGISTRY_REVISION = Gauge(
    "flotilla_router_registry_revision", "Last provider registry revision this replica saw"
)

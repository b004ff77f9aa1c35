"""Prometheus metrics of the router process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LEADER = Gauge("flotilla_router_leader", "1 while this replica leads the fleet")
LIVE_WORKERS = Gauge("flotilla_router_live_workers", "Workers with a fresh heartbeat")
SHARD_MOVES = Counter(
    "flotilla_router_shard_moves_total", "Shard assignments written, by cause", ["cause"]
)
HIBERNATIONS = Counter(
    "flotilla_router_hibernations_requested_total", "hibernate commands sent by the sweep"
)
LEADER_CHANGES = Counter(
    "flotilla_router_leadership_acquired_total", "Times this replica became leader"
)

"""The gateway's Prometheus metrics (its `/metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "flotilla_gateway_requests_total",
    "HTTP requests, by route template and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "flotilla_gateway_request_seconds",
    "HTTP request latency (to the response head for streams), by route template",
    ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
OPEN_STREAMS = Gauge(
    "flotilla_gateway_open_streams", "Open event streams, by kind (sse, ws)", ["kind"]
)
STREAM_EVENTS = Counter(
    "flotilla_gateway_stream_events_total", "Events sent on streams, by kind", ["kind"]
)
COMMANDS = Counter(
    "flotilla_gateway_commands_total", "Commands published to the fleet, by op", ["op"]
)
AUTH_FAILURES = Counter(
    "flotilla_gateway_auth_failures_total", "Requests refused for a missing or unknown key"
)

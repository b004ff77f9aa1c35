"""`python -m ops.bench turns|abort|registry|gateway [--workers N] [--out FILE]`: Flotilla's
performance report."""

from __future__ import annotations

import argparse
import sys

from flotilla.runtime import run_async


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    turns = sub.add_parser("turns", help="turn latency, throughput, CPU per turn, resume")
    turns.add_argument("--workers", type=int, default=1)
    turns.add_argument(
        "--nats-nodes", type=int, default=1, help="3: a JetStream cluster, streams with R3"
    )
    turns.add_argument("--sessions", type=int, default=1000)
    turns.add_argument("--in-flight", type=int, default=64)
    turns.add_argument("--turns", type=int, default=20_000, help="turns of the throughput run")
    turns.add_argument("--sequential", type=int, default=1000, help="turns of the latency run")
    turns.add_argument("--out", help="JSON report path (default ops/bench/results/...)")
    abort = sub.add_parser("abort", help="abort latency of busy turns (PROTOCOL 6.6)")
    abort.add_argument("--workers", type=int, default=1)
    abort.add_argument("--tries", type=int, default=100, help="measured tries per case")
    abort.add_argument("--out", help="JSON report path (default ops/bench/results/...)")
    registry = sub.add_parser("registry", help="registry lookups and broadcast (PROTOCOL 7)")
    registry.add_argument("--workers", type=int, default=2)
    registry.add_argument("--nodes", type=int, default=8, help="registry copies measured")
    registry.add_argument("--changes", type=int, default=500, help="measured registrations")
    registry.add_argument("--out", help="JSON report path (default ops/bench/results/...)")
    gateway = sub.add_parser("gateway", help="gateway: prompt → first SSE delta, reads/s")
    gateway.add_argument("--workers", type=int, default=1)
    gateway.add_argument("--prompts", type=int, default=200, help="measured prompts")
    gateway.add_argument("--clients", type=int, default=50, help="concurrent readers")
    gateway.add_argument("--seconds", type=float, default=10.0, help="length of the read run")
    gateway.add_argument("--out", help="JSON report path (default ops/bench/results/...)")
    args = parser.parse_args(argv)
    if args.bench == "turns":
        from ops.bench._turns import run_turns_bench

        run_async(run_turns_bench(args))
    elif args.bench == "abort":
        from ops.bench._abort import run_abort_bench

        run_async(run_abort_bench(args))
    elif args.bench == "registry":
        from ops.bench._registry import run_registry_bench

        run_async(run_registry_bench(args))
    elif args.bench == "gateway":
        from ops.bench._gateway import run_gateway_bench

        run_async(run_gateway_bench(args))
    else:  # pragma: no cover - argparse refuses other values
        sys.exit(2)


main()

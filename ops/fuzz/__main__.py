"""`python -m ops.fuzz [commands|http|all] [--count N] [--seed S]`: the hostile-input
campaign against a fleet of its own (embedded servers, a router, worker processes, a gateway
process), with a summary of what became of every input. The test suite runs a short form
(tests/fuzz); this is the long one, whose figures are in the README."""

from __future__ import annotations

import argparse
import secrets
import sys
import time

import orjson

from flotilla import Fleet
from flotilla.runtime import run_async
from ops.bench._stack import BenchStack
from ops.fuzz._commands import FuzzTarget, run_commands
from ops.fuzz._http import run_http

ADMIN_KEY = "fuzz-admin"


async def _campaign(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    print(f"starting a fleet: {args.workers} worker process(es), a router, a gateway ...")
    stack = BenchStack.start(workers=args.workers)
    report: dict[str, object] = {"seed": seed}
    try:
        async with await Fleet.connect(settings=stack.settings, tenant="fuzz") as fleet:
            await stack.wait_ready(fleet, workers=args.workers)
            if args.part in ("commands", "all"):
                target = FuzzTarget(
                    settings=stack.settings,
                    nc=fleet.nc,
                    worker_logs=stack.worker_logs,
                    workers_alive=stack.workers_alive,
                    workers=args.workers,
                )
                started = time.monotonic()

                def progress(line: str) -> None:
                    print(f"  [{time.monotonic() - started:6.1f} s] {line}", flush=True)

                figures = await run_commands(
                    target,
                    count=args.count,
                    seed=seed,
                    prompts_per_canary=args.prompts,
                    tool_sessions=args.tool_sessions,
                    progress=progress,
                )
                report["commands"] = figures.as_dict()
                for problem in [
                    *figures.missing_dead_letters[:10],
                    *figures.unexpected_codes[:10],
                    *figures.canary_failures[:20],
                ]:
                    print(f"  ! {problem}")
            if args.part in ("http", "all"):
                url = stack.start_gateway(api_keys=f"{ADMIN_KEY}:fuzz", admin_keys=ADMIN_KEY)
                await stack.wait_healthy(url)
                http = await run_http(
                    url,
                    key=ADMIN_KEY,
                    fleet=fleet,
                    max_examples=args.examples,
                    seed=seed,
                    report_dir=stack.data_dir,
                )
                report["http"] = http.as_dict()
    finally:
        stack.stop()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    parts = [v for k, v in report.items() if k != "seed"]
    clean = all(isinstance(v, dict) and v.get("clean") for v in parts)
    print("clean" if clean else f"PROBLEMS FOUND (logs in {stack.data_dir})")
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.fuzz")
    parser.add_argument("part", nargs="?", choices=["commands", "http", "all"], default="all")
    parser.add_argument("--count", type=int, default=100_000, help="hostile commands")
    parser.add_argument("--examples", type=int, default=200, help="HTTP cases per operation")
    parser.add_argument("--prompts", type=int, default=50, help="prompts of each valid session")
    parser.add_argument(
        "--tool-sessions", type=int, default=100, help="sessions making hostile tool calls"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    code = 0

    async def run() -> None:
        nonlocal code
        code = await _campaign(args)

    run_async(run())
    sys.exit(code)


main()

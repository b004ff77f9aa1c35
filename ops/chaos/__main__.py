"""`python -m ops.chaos [--short] [--strict] [--redis sentinel|cluster|single] [--json PATH]`:
a private fleet under load and faults, proving it loses, doubles and strands no turn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from flotilla.runtime import run_async
from ops.chaos._campaign import CampaignOptions, run_campaign
from ops.chaos._fleet import REDIS_MODES


def options_from(args: argparse.Namespace) -> CampaignOptions:
    """The campaign's shape: `--short` fits CI (about 3 minutes on 2 cores)."""
    short = args.short
    return CampaignOptions(
        redis=args.redis,
        sessions=args.sessions or (60 if short else 300),
        prompts=args.prompts or 10,
        before_s=8.0 if short else 15.0,
        after_s=8.0 if short else 15.0,
        expected_faults_s=55.0 if short else 85.0,
        pause_s=3.0 if short else 8.0,
        kills=2 if short else None,
        drain_s=60.0 if short else 120.0,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.chaos")
    parser.add_argument("--short", action="store_true", help="the CI form, about 3 minutes")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any failure")
    parser.add_argument("--redis", choices=REDIS_MODES, default="sentinel")
    parser.add_argument("--sessions", type=int, default=0, help="default 300 (short: 60)")
    parser.add_argument("--prompts", type=int, default=0, help="per session, default 10")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", dest="json_path", help="write the JSON report here")
    args = parser.parse_args(argv)
    reports: list[dict[str, Any]] = []

    async def campaign() -> None:
        reports.append(await run_campaign(options_from(args)))

    run_async(campaign())
    if args.json_path:
        Path(args.json_path).write_bytes(orjson.dumps(reports[0], option=orjson.OPT_INDENT_2))
        print(f"  report written to {args.json_path}")
    if args.strict and not reports[0]["clean"]:
        print("strict: lost, duplicated, out-of-order, stranded or stuck turns", file=sys.stderr)
        return 1
    return 0


sys.exit(main())

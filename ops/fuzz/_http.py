"""The HTTP campaign: schemathesis against the gateway's own OpenAPI document.

Every check schemathesis ships runs (ops/fuzz/schemathesis.toml says which are tuned, and
why): no response is a 5xx, every response matches its documented status and schema — every
4xx is the `{error, message}` body — and requests the schema forbids are refused. Generated
session ids are mixed with ids of live sessions, so the session routes are reached, not only
their 404. The SSE routes are left out: a stream never ends (tests/gateway cover them).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from flotilla import Fleet

__all__ = ["HttpFigures", "run_http"]

CONFIG = Path(__file__).with_name("schemathesis.toml")
LIVE_SESSIONS = ("fz-http-idle", "fz-http-tools")


@dataclass
class HttpFigures:
    operations: int
    cases: int
    failures: int
    server_errors: int
    errors: int
    exit_code: int
    failure_titles: list[str]

    @property
    def clean(self) -> bool:
        return self.exit_code == 0 and not self.failures and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "cases": self.cases,
            "responses_5xx": self.server_errors,
            "failures": self.failures,
            "errors": self.errors,
            "clean": self.clean,
        }


async def run_http(
    url: str, *, key: str, fleet: Fleet, max_examples: int, seed: int, report_dir: Path
) -> HttpFigures:
    """Run schemathesis against the gateway at `url` with `key` (an admin key of the tenant
    `fleet` speaks for, whose live sessions the cases may name)."""
    for sid in LIVE_SESSIONS:
        try:
            await fleet.create_agent(session_id=sid, model="mock:echo", tools=["read_file"])
        except Exception as exc:  # there already (a second run): it is live, which is the point
            if "already" not in str(exc):
                raise
    report = report_dir / "schemathesis.json"
    config = report_dir / "schemathesis.toml"
    config.write_text(
        CONFIG.read_text()
        + "\n[dictionaries.sessions]\nvalues = "
        + orjson.dumps(list(LIVE_SESSIONS)).decode()
        + '\n\n[parameters]\nsid = { dictionary = "sessions", probability = 0.5 }\n'
    )
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"X-API-Key: {key}",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--exclude-path-regex",
        "/events$",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        cwd=report_dir,  # schemathesis keeps a cache where it runs
    )
    (report_dir / "schemathesis.log").write_text(done.stdout + done.stderr)
    data = orjson.loads(report.read_bytes())
    failures = data.get("failures") or []
    titles = [str(f.get("title") or f) for f in failures]
    return HttpFigures(
        operations=int(data["operations"]["tested"]),
        cases=int(data["test_cases"]["generated"]),
        failures=int(data["test_cases"]["unique_failures"]),
        server_errors=sum("Server error" in t for t in titles),
        errors=len(data.get("errors") or []),
        exit_code=done.returncode,
        failure_titles=titles,
    )

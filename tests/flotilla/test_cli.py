"""The `flotilla` command line against a running fleet."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Harness


def _cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        FLOTILLA_NATS_URL=harness.settings.nats_url,
        FLOTILLA_REDIS_URL=harness.settings.redis_url,
        FLOTILLA_REDIS_CLUSTER=str(harness.settings.redis_cluster),
        FLOTILLA_PREFIX=harness.settings.prefix,
        FLOTILLA_SHARDS=str(harness.settings.shards),
    )
    return subprocess.run(
        [sys.executable, "-m", "flotilla", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )


async def test_send_publishes_a_command_and_status_shows_the_fleet(fleet: Harness) -> None:
    assert fleet.fleet is not None
    watcher = await fleet.fleet.session("cli-1")
    sent = await asyncio.to_thread(
        _cli,
        fleet,
        "send",
        "cli-1",
        "create",
        "--tenant",
        "acme",
        "--json",
        '{"model": "mock:echo"}',
    )
    assert sent.returncode == 0, sent.stderr
    await watcher.wait_for({"session_created"}, request_id=None, timeout=5)
    status = await asyncio.to_thread(_cli, fleet, "status")
    assert "workers: 1" in status.stdout and "w1" in status.stdout
    assert "shards=4" in status.stdout
    assert "sessions: 0 running a turn, 1 idle" in status.stdout


async def test_send_refuses_bad_json(fleet: Harness) -> None:
    result = await asyncio.to_thread(_cli, fleet, "send", "x", "prompt", "--json", "{oops")
    assert result.returncode == 2 and "not valid JSON" in result.stderr


async def test_watch_replays_events_since_a_sequence(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("shown")
    await session.collect_reply(timeout=5)
    env = dict(
        os.environ, FLOTILLA_NATS_URL=fleet.settings.nats_url, FLOTILLA_PREFIX=fleet.settings.prefix
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flotilla",
        "watch",
        session.sid,
        "--since",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = []
    async with asyncio.timeout(15):
        while not any("agent_end" in line for line in lines):
            lines.append((await proc.stdout.readline()).decode())
    proc.terminate()
    await proc.wait()
    assert any("session_created" in line for line in lines)
    assert any('"delta":"echo: sh"' in line for line in lines)


def test_schema_export_writes_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flotilla", "schema", "export", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert (tmp_path / "command.schema.json").exists()

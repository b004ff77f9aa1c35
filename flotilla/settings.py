"""The one immutable Settings object, built once at an entry point from environment and flags.

This is the only module of the project that reads `os.environ`.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from schemas import Subjects


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration shared by every Flotilla process. See the README's configuration table."""

    nats_url: str = "nats://127.0.0.1:4222"
    """One URL, or a comma-separated list of a NATS cluster's URLs (PROTOCOL §9)."""
    replicas: int = 1
    """Replicas of every stream and KV bucket the fleet creates (1, or 3 on a cluster)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinels: tuple[str, ...] = ()
    """`host:port` of Redis Sentinels: the fleet follows the master they name (PROTOCOL §9)."""
    redis_sentinel_master: str = ""
    """The Sentinels' name of the master (required with `redis_sentinels`)."""
    redis_wait_replicas: int | None = None
    """A state write counts as done once this many replicas have it (WAIT); None: 1 with
    Sentinels, else 0."""
    redis_wait_timeout_s: float = 2.0
    """How long a write waits for its replicas before it counts as failed (and is retried)."""
    redis_cluster: bool = False
    """`redis_url` names any node of a Redis Cluster."""
    redis_max_connections: int = 64
    """Connections per process to Redis; a command finding them all busy waits for one."""
    redis_pool_timeout_s: float = 10.0
    """How long such a command waits before it fails (redis ConnectionError)."""
    prefix: str = "flotilla"
    key_prefix: str = ""
    shards: int = 64
    data_dir: Path = field(default_factory=lambda: Path(".flotilla"))
    worker_id: str = field(default_factory=_default_worker_id)
    # commands
    max_command_bytes: int = 512 * 1024
    duplicate_window_s: float = 120.0
    ack_wait_s: float = 30.0
    event_max_age_s: float = 24 * 3600.0
    # workers
    worker_slots: int = 512
    heartbeat_interval_s: float = 0.5
    worker_timeout_s: float = 3.0
    handover_grace_s: float = 5.0
    max_resident_sessions: int = 10_000
    hibernate_after_ms: int = 600_000
    metrics_port: int | None = 0
    metrics_host: str = "127.0.0.1"
    audit_enabled: bool = True
    """Publish audit records on <prefix>.audit.<tenant>.<action> (flotilla/audit.py)."""
    audit_max_age_s: float = 90 * 24 * 3600.0
    """How long the <PREFIX>_AUDIT stream keeps audit records; 0: no stream (live only)."""
    # tools
    shell_enabled: bool = False
    tool_timeout_s: float = 60.0
    tool_result_max_chars: int = 16_000
    workspace_backend: str = "redis"
    workspace_max_file_bytes: int = 8 * 1024 * 1024
    workspace_max_bytes: int = 64 * 1024 * 1024
    custom_tools: tuple[str, ...] = ()
    custom_plugins: tuple[str, ...] = ()
    blueprints: tuple[str, ...] = ()
    callback_allow: tuple[str, ...] = ()
    tenant_secrets: str = ""
    # sessions
    checkpoint_ttl_s: float = 7 * 24 * 3600.0
    max_checkpoints: int = 20
    subagent_max_depth: int = 3
    # router
    router_id: str = field(default_factory=_default_worker_id)
    sweep_interval_s: float = 1.0
    # provider registry
    fleet_key: str = field(default="", repr=False)
    """base64 of 32 bytes: the AES-GCM key of secret profile opts. Never logged or shown."""
    registry_resolver: str = ""
    """`package.module:callable` run on each profile after decryption (flotilla.registry)."""
    registry_resolver_ttl_s: float = 300.0
    registry_resync_s: float = 5.0
    """How often a node compares its registry copy's revision with the stored one."""

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 4096:
            raise ValueError("shards must be within 1..4096")
        if not 1 <= self.replicas <= 5:
            raise ValueError("replicas must be within 1..5 (JetStream's limit)")
        for url in self.nats_servers:
            if "://" not in url or any(c.isspace() for c in url):
                raise ValueError(f"nats_url: {url!r} is not a URL such as nats://host:4222")
        self._check_redis()
        if self.redis_max_connections < 1:
            raise ValueError("redis_max_connections must be at least 1")
        if self.workspace_backend not in ("redis", "dir"):
            raise ValueError("workspace_backend must be 'redis' or 'dir'")
        Subjects(self.prefix)  # validates the prefix
        if self.fleet_key:
            _check_fleet_key(self.fleet_key)

    def _check_redis(self) -> None:
        for address in self.redis_sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"redis_sentinels: {address!r} is not host:port")
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("redis_sentinels needs redis_sentinel_master (the master's name)")
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("redis_sentinels and redis_cluster exclude each other")
        if self.redis_wait_replicas is not None and self.redis_wait_replicas < 0:
            raise ValueError("redis_wait_replicas must be 0 or more")
        if self.redis_cluster and self.wait_replicas:
            raise ValueError(
                "redis_wait_replicas is not supported with redis_cluster: WAIT counts one "
                "connection's writes, and a cluster write goes to the slot's own node"
            )
        if self.redis_wait_timeout_s <= 0:
            raise ValueError("redis_wait_timeout_s must be positive")

    @property
    def wait_replicas(self) -> int:
        """Replicas a state write waits for: the setting, else 1 with Sentinels, else 0."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @property
    def nats_servers(self) -> list[str]:
        """The URLs of `nats_url`: one server, or every node of a cluster."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def redis_prefix(self) -> str:
        """Prefix of every Redis key of this fleet (defaults to the subject prefix)."""
        return self.key_prefix or self.prefix

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; `None` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The FLOTILLA_* variables that rebuild these settings in a child process."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            env[f"FLOTILLA_{f.name.upper()}"] = "off" if value is None else str(value)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from FLOTILLA_* variables, then explicit overrides (flags) on top."""
        settings = cls(**_env_values(cls, env, "FLOTILLA_", _GATEWAY_ALIASES))
        return settings.with_overrides(**overrides)


_GATEWAY_ALIASES = {
    "tenant_secrets": "GATEWAY_TENANT_SECRETS",
    "callback_allow": "GATEWAY_CALLBACK_ALLOW",
}
"""Settings the workers share with the gateway, readable under the gateway's names (§8)."""


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """The gateway's own settings (PROTOCOL §8), from GATEWAY_* variables; the fleet's
    connection settings come from `Settings`."""

    host: str = "127.0.0.1"
    port: int = 4000
    api_keys: str = field(default="", repr=False)
    """`key` or `key:tenant`, comma separated; a key may be given as `sha256:<hex>`."""
    keys_file: str = ""
    """A file of more keys, one `key[:tenant]` per line (`#` comments)."""
    admin_keys: str = field(default="", repr=False)
    """Keys allowed on /v1/providers and the fleet views (same forms as `api_keys`)."""
    rate_limit_rpm: int = 60
    rate_limit_burst: int = 0
    """Bucket size; 0: equal to `rate_limit_rpm`."""
    max_body_bytes: int = 524_288
    sse_ping_s: float = 15.0
    create_timeout_s: float = 10.0
    """How long `POST /v1/sessions` waits for the fleet to confirm the session."""
    webhook_backoff_base_s: float = 1.0
    webhook_max_attempts: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> GatewaySettings:
        """Settings from GATEWAY_* variables, then explicit overrides (flags) on top."""
        values = _env_values(cls, env, "GATEWAY_")
        return replace(cls(**values), **{k: v for k, v in overrides.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The GATEWAY_* variables that rebuild these settings in a child process."""
        return {f"GATEWAY_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


def _env_values(
    cls: type, env: Mapping[str, str] | None, prefix: str, aliases: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The fields of dataclass `cls` set by `<prefix><NAME>` variables (or their aliases)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = env.get(f"{prefix}{f.name.upper()}")
        if raw is None and aliases and f.name in aliases:  # one setting for gateway and workers
            raw = env.get(aliases[f.name])
        if raw is not None:
            values[f.name] = _coerce(f.type, raw, f.name, prefix=prefix)
    return values


def _coerce(type_name: object, raw: str, name: str, *, prefix: str) -> Any:
    text = str(type_name)
    try:
        if text.startswith("int"):
            return None if raw.lower() in ("", "none", "off") else int(raw)
        if text == "float":
            return float(raw)
        if text == "Path":
            return Path(raw)
        if text == "bool":
            return _boolean(raw)
        if text.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{prefix}{name.upper()}={raw!r} is not a valid {text}") from exc
    return raw


def _check_fleet_key(value: str) -> None:
    """The fleet key must be base64 of 32 bytes; the message never quotes it."""
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("FLOTILLA_FLEET_KEY is not valid base64") from None
    if size != 32:
        raise ValueError(f"FLOTILLA_FLEET_KEY must encode 32 bytes, not {size}")


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)

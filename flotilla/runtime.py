"""The kit the fleet's services share (workers, router, gateway, ops): connections,
provisioning, the service runner, sealed secrets, user patterns and the `module:attr` loader.

Public for the services and for whoever builds one of their own; the modules behind it stay
private. Clients need none of this: they use `flotilla.Fleet` (the SDK) or the CLI.
"""

from __future__ import annotations

from flotilla._connect import REDIS_ERRORS, REDIS_UNREACHABLE, connect_nats, connect_redis
from flotilla._crypto import FleetCipher, SecretError, open_opts, plain_secrets, seal_opts
from flotilla._imports import load_object
from flotilla._patterns import Deadline, PatternError, PatternTooSlow, UserPattern
from flotilla._provision import (
    TOOLS_TTL_S,
    ensure_bucket,
    ensure_stream,
    hook_stream_config,
    provision,
    stream_configs,
    wait_for_jetstream,
)
from flotilla._publish import publish_retrying
from flotilla._registry_client import REQUIRE_SEALED
from flotilla._registry_store import RegistryStore
from flotilla._service import patiently, run_async, watch_kv
from flotilla._session_secrets import SEALED_OPS, open_secrets, seal_command
from flotilla._up import spawn_component

__all__ = [
    "REDIS_ERRORS",
    "REDIS_UNREACHABLE",
    "REQUIRE_SEALED",
    "SEALED_OPS",
    "TOOLS_TTL_S",
    "Deadline",
    "FleetCipher",
    "PatternError",
    "PatternTooSlow",
    "RegistryStore",
    "SecretError",
    "UserPattern",
    "connect_nats",
    "connect_redis",
    "ensure_bucket",
    "ensure_stream",
    "hook_stream_config",
    "load_object",
    "open_opts",
    "open_secrets",
    "patiently",
    "plain_secrets",
    "provision",
    "publish_retrying",
    "run_async",
    "seal_command",
    "seal_opts",
    "spawn_component",
    "stream_configs",
    "wait_for_jetstream",
    "watch_kv",
]

"""Idempotent creation of the streams and KV buckets of a fleet; safe from several processes.

Every stream and bucket gets `FLOTILLA_REPLICAS` replicas. One found with fewer is raised in
place (same stream, messages kept); one found with more is never lowered (a warning names
it). A cluster with fewer JetStream nodes than replicas is a ConfigurationError at start-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from flotilla.errors import ConfigurationError
from flotilla.settings import Settings
from schemas import Subjects

log = logging.getLogger(__name__)

_STREAM_NAME_IN_USE = 10058
_NOT_CLUSTERED = 10074
"""JetStream: replicas > 1 on a server that is not part of a cluster."""
_INSUFFICIENT_RESOURCES = 10023
_NO_PEERS = 10005
"""JetStream: fewer nodes (or less storage) than the replicas asked for."""
DLQ_MAX_AGE_S = 7 * 24 * 3600.0
TOOLS_TTL_S = 30.0
"""External tool announcements expire unless their server refreshes them (at a third of this)."""
HOOK_MAX_AGE_S = 7 * 24 * 3600.0
"""Webhook jobs no gateway took within this are dropped (deliveries end in minutes)."""
HOOK_DUPLICATE_WINDOW_S = 120.0
"""A job re-published for the same event (after a worker crash) within this is stored once."""


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """The desired configuration of every stream of the fleet (PROTOCOL §2)."""
    subjects = settings.subjects
    configs = [
        StreamConfig(
            name=subjects.cmd_stream,
            subjects=[subjects.cmd_wildcard],
            subject_transform=SubjectTransform(
                src=subjects.cmd_wildcard,
                dest=subjects.cmd_transform_destination(settings.shards),
            ),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.replicas,
        ),
        _kept(subjects.evt_stream, subjects.evt_all, settings.event_max_age_s, settings.replicas),
        _kept(subjects.dlq_stream, subjects.dlq_all, DLQ_MAX_AGE_S, settings.replicas),
        hook_stream_config(subjects, replicas=settings.replicas),
    ]
    if settings.audit_enabled and settings.audit_max_age_s > 0:
        configs.append(
            _kept(
                subjects.audit_stream,
                subjects.audit_all,
                settings.audit_max_age_s,
                settings.replicas,
            )
        )
    return configs


def hook_stream_config(subjects: Subjects, *, replicas: int = 1) -> StreamConfig:
    """<PREFIX>_HOOK: the work queue of webhook jobs (workers and gateways both ensure it)."""
    return StreamConfig(
        name=subjects.hook_stream,
        subjects=[subjects.hook_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=HOOK_MAX_AGE_S,
        duplicate_window=HOOK_DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )


def _kept(name: str, subject: str, max_age: float, replicas: int) -> StreamConfig:
    """A stream that keeps what is published on `subject` for `max_age` seconds."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it when it exists with another configuration (its
    replicas raised, never lowered)."""
    name = str(config.name)
    try:
        await js.add_stream(config)
        return
    except APIError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise _replicas_error(exc, name, config.num_replicas) from None
    existing = (await js.stream_info(name)).config
    wanted = config.num_replicas or 1
    config = dataclasses.replace(config, num_replicas=_kept_replicas(name, existing, wanted))
    try:
        await js.update_stream(config)
    except APIError as exc:
        raise _replicas_error(exc, name, config.num_replicas) from None
    if (existing.num_replicas or 1) < (config.num_replicas or 1):
        log.info("stream %s: raised to %d replicas", name, config.num_replicas)


async def ensure_bucket(
    js: JetStreamContext, bucket: str, *, ttl: float | None = None, replicas: int | None = None
) -> KeyValue:
    """Open a KV bucket, creating it first when missing. With `replicas`, a bucket found with
    fewer is raised to them; without, an existing bucket is opened as it is."""
    config = KeyValueConfig(
        bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE, replicas=replicas or 1
    )
    try:
        return await js.create_key_value(config)
    except APIError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise _replicas_error(exc, f"KV_{bucket}", replicas) from None
    if replicas is not None:
        stream = f"KV_{bucket}"
        existing = (await js.stream_info(stream)).config
        if (existing.num_replicas or 1) < replicas:
            try:
                await js.update_stream(dataclasses.replace(existing, num_replicas=replicas))
            except APIError as exc:
                raise _replicas_error(exc, stream, replicas) from None
            log.info("bucket %s: raised to %d replicas", bucket, replicas)
        else:
            _kept_replicas(stream, existing, replicas)
    return await js.key_value(bucket)


def _kept_replicas(name: str, existing: StreamConfig, wanted: int) -> int:
    """The replicas an update keeps: `wanted`, or more when the stream has more."""
    have = existing.num_replicas or 1
    if have > wanted:
        log.warning(
            "%s has %d replicas; FLOTILLA_REPLICAS=%d never lowers a stream's replicas",
            name,
            have,
            wanted,
        )
        return have
    return wanted


def _replicas_error(exc: APIError, name: str, replicas: int | None) -> Exception:
    """A clear start-up error when the cluster cannot hold `replicas` copies; else `exc`."""
    if exc.err_code in (_NOT_CLUSTERED, _INSUFFICIENT_RESOURCES, _NO_PEERS):
        return ConfigurationError(
            f"{name}: FLOTILLA_REPLICAS={replicas} needs a NATS cluster with at least "
            f"{replicas} JetStream nodes ({exc.description})"
        )
    return exc


async def wait_for_jetstream(js: JetStreamContext, *, timeout: float = 30.0) -> None:
    """Until JetStream answers (a new cluster elects its meta leader first)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except nats.errors.Error as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigurationError(
                    f"JetStream did not answer within {timeout:g} s: {exc}"
                ) from None
            await asyncio.sleep(0.2)


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Make sure every stream and bucket the fleet uses exists, with its replicas (once
    JetStream answers: a cluster started with the fleet elects its meta leader first)."""
    await wait_for_jetstream(js, timeout=60.0)
    for config in stream_configs(settings):
        await ensure_stream(js, config)
    subjects = settings.subjects
    replicas = settings.replicas
    await ensure_bucket(js, subjects.workers_bucket, ttl=60.0, replicas=replicas)
    await ensure_bucket(js, subjects.placement_bucket, replicas=replicas)
    await ensure_bucket(js, subjects.router_bucket, replicas=replicas)
    await ensure_bucket(js, subjects.tools_bucket, ttl=TOOLS_TTL_S, replicas=replicas)

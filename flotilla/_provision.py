"""Idempotent creation of the streams and KV buckets of a fleet; safe from several processes."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from flotilla.settings import Settings
from schemas import Subjects

log = logging.getLogger(__name__)

_STREAM_NAME_IN_USE = 10058
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
        ),
        _kept(subjects.evt_stream, subjects.evt_all, max_age=settings.event_max_age_s),
        _kept(subjects.dlq_stream, subjects.dlq_all, max_age=DLQ_MAX_AGE_S),
        hook_stream_config(subjects),
    ]
    if settings.audit_enabled and settings.audit_max_age_s > 0:
        configs.append(
            _kept(subjects.audit_stream, subjects.audit_all, max_age=settings.audit_max_age_s)
        )
    return configs


def hook_stream_config(subjects: Subjects) -> StreamConfig:
    """<PREFIX>_HOOK: the work queue of webhook jobs (workers and gateways both ensure it)."""
    return StreamConfig(
        name=subjects.hook_stream,
        subjects=[subjects.hook_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=HOOK_MAX_AGE_S,
        duplicate_window=HOOK_DUPLICATE_WINDOW_S,
    )


def _kept(name: str, subject: str, *, max_age: float) -> StreamConfig:
    """A stream that keeps what is published on `subject` for `max_age` seconds."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it when it exists with another configuration."""
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
        await js.update_stream(config)
        log.info("updated stream %s", config.name)


async def ensure_bucket(js: JetStreamContext, bucket: str, *, ttl: float | None = None) -> KeyValue:
    """Open a KV bucket, creating it first when missing."""
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE)
    try:
        return await js.create_key_value(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
        return await js.key_value(bucket)


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Make sure every stream and bucket the fleet uses exists."""
    for config in stream_configs(settings):
        await ensure_stream(js, config)
    subjects = settings.subjects
    await ensure_bucket(js, subjects.workers_bucket, ttl=60.0)
    await ensure_bucket(js, subjects.placement_bucket)
    await ensure_bucket(js, subjects.router_bucket)
    await ensure_bucket(js, subjects.tools_bucket, ttl=TOOLS_TTL_S)

"""The async Python SDK: CMDC's facade (create_agent, prompt, collect_reply, subscribe...)
over plain NATS subjects. Any other language can do the same with its NATS client."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError

from flotilla._connect import connect_nats
from flotilla._crypto import FleetCipher
from flotilla._publish import publish_retrying
from flotilla._registry_client import RegistryClient
from flotilla._session_secrets import SEALED_OPS, seal_command
from flotilla.errors import CommandError, ReplyTimeout, UnavailableError
from flotilla.placement import Assignment, Heartbeat, parse_key
from flotilla.settings import Settings
from schemas import (
    COMMAND_OPS,
    DEFAULT_TENANT,
    MAX_DEPTH,
    Create,
    Event,
    Subjects,
    deeper_than,
    new_command_id,
    new_session_id,
    unknown_fields,
    unknown_message,
)

__all__ = ["Fleet", "FleetStatus", "Session"]

_END_TYPES = frozenset({"agent_end", "agent_abort"})
SESSION_BUFFER = 10_000
SEEN_IDS = 1_024


@dataclass(frozen=True)
class FleetStatus:
    workers: list[Heartbeat]
    shards: dict[int, Assignment]
    leader: str | None


class Fleet:
    """A connection to a Flotilla fleet for one tenant."""

    def __init__(
        self,
        nc: NATS,
        *,
        subjects: Subjects,
        tenant: str,
        owns_nc: bool,
        cipher: FleetCipher | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.subjects = subjects
        self.tenant = tenant
        self._owns_nc = owns_nc
        self._cipher = cipher
        """The fleet key: secrets of session options are sealed before they are published."""

    @property
    def nc(self) -> NATS:
        """The NATS connection, for subjects the SDK does not wrap (audit records...)."""
        return self._nc

    def registry(self) -> RegistryClient:
        """A provider registry client (PROTOCOL §7) on this connection."""
        return RegistryClient(self._nc, subjects=self.subjects, cipher=self._cipher)

    @classmethod
    async def connect(
        cls,
        nats_url: str | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        prefix: str | None = None,
        settings: Settings | None = None,
    ) -> Fleet:
        """Connect to the fleet at `nats_url` (default: FLOTILLA_NATS_URL or localhost)."""
        settings = (settings or Settings.from_env()).with_overrides(
            nats_url=nats_url, prefix=prefix
        )
        nc = await connect_nats(settings, name=f"flotilla-sdk {tenant}")
        return cls(
            nc,
            subjects=settings.subjects,
            tenant=tenant,
            owns_nc=True,
            cipher=FleetCipher.from_setting(settings.fleet_key),
        )

    async def close(self) -> None:
        if self._owns_nc:
            await self._nc.drain()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- commands ----------------------------------------------------------------------------
    async def send(self, sid: str, op: str, body: dict[str, Any] | None = None) -> str:
        """Publish one command and wait for the stream to store it; returns its id."""
        if op not in COMMAND_OPS:
            raise CommandError(f"unknown op {op!r}", code="invalid_command")
        command = dict(body or {})
        command.setdefault("id", new_command_id())
        command.setdefault("ts", int(time.time() * 1000))
        command["op"] = op
        if self._cipher is not None and op in SEALED_OPS:
            command = seal_command(command, self._cipher, self.tenant)
        if deeper_than(command):  # the fleet would refuse it: say so before publishing
            raise CommandError(
                f"a command may nest {MAX_DEPTH} arrays and objects deep at most",
                code="invalid_command",
                command_id=str(command["id"]),
            )
        try:
            data = orjson.dumps(command)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise CommandError(f"the command is not JSON: {exc}", code="invalid_command") from None
        try:
            await publish_retrying(
                self._js,
                self.subjects.cmd(self.tenant, sid, op),
                data,
                headers={"Nats-Msg-Id": str(command["id"])},
            )
        except nats.errors.MaxPayloadError as exc:
            raise CommandError(
                f"command too large for NATS: {exc}",
                code="too_large",
                command_id=str(command["id"]),
            ) from None
        except nats.errors.Error as exc:  # after its retries (JetStream errors included)
            raise UnavailableError(f"the command stream did not confirm {op}: {exc!r}") from exc
        return str(command["id"])

    async def create_agent(
        self, *, session_id: str | None = None, timeout: float = 10.0, **options: Any
    ) -> Session:
        """Create a session (PROTOCOL §5 options) and wait until the fleet confirms it."""
        Create.model_validate(options)  # fail fast, before anything is published
        unknown = unknown_fields(Create, options)
        if unknown:
            raise CommandError(unknown_message(unknown), code="invalid_command")
        session = Session(self, session_id or new_session_id())
        await session.open()
        command_id = await self.send(session.sid, "create", options)
        try:
            await session.wait_for({"session_created"}, request_id=command_id, timeout=timeout)
        except BaseException:
            await session.close()
            raise
        return session

    async def session(self, sid: str) -> Session:
        """A handle on an existing session; its live event buffer starts now."""
        session = Session(self, sid)
        await session.open()
        return session

    # -- events ------------------------------------------------------------------------------
    async def subscribe(
        self,
        *,
        sid: str | None = None,
        group: str | None = None,
        tenant: str | None = None,
        channel: str | None = None,
        since: int | None = None,
    ) -> AsyncIterator[Event]:
        """Events of a session, a group, a tenant or the whole fleet, live or from `since`.

        A session or a group is this handle's tenant's unless `tenant` names another (`"*"`:
        every tenant's, for monitoring). With `since`, delivery starts right after that
        FLOTILLA_EVT sequence; a cursor older than the retention window yields `stream_gap`
        first. Every event carries `seq`.
        """
        if sid:
            subject = self.subjects.evt_session(sid, channel, tenant=tenant or self.tenant)
        elif group:
            subject = self.subjects.evt_group(group, channel, tenant=tenant or self.tenant)
        elif tenant:
            subject = self.subjects.evt_tenant(tenant, channel)
        else:
            subject = self.subjects.evt_all
        if since is None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        else:
            first = (await self._js.stream_info(self.subjects.evt_stream)).state.first_seq
            if since + 1 < first:
                yield Event(
                    type="stream_gap",
                    sid=sid or "",
                    tenant=tenant or self.tenant,
                    group=group,
                    ts=int(time.time() * 1000),
                    data={"requested": since, "first_available": first},
                )
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(since + 1, first, 1),
            )
        sub = await self._js.subscribe(subject, ordered_consumer=True, config=config)
        try:
            async for msg in sub.messages:
                yield _event(msg, msg.metadata.sequence.stream)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def subscribe_group(self, group: str, *, since: int | None = None) -> AsyncIterator[Event]:
        """Every event of every session (and sub-agent) of `group`."""
        return self.subscribe(group=group, since=since)

    async def status(self) -> FleetStatus:
        """Live workers, shard placement and the leading router, read from the KV buckets."""
        workers: list[Heartbeat] = []
        shards: dict[int, Assignment] = {}
        leader = None
        with contextlib.suppress(NotFoundError):
            kv = await self._js.key_value(self.subjects.workers_bucket)
            for key in await _keys(kv):
                with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                    entry = await kv.get(key)
                    if entry.value:
                        workers.append(Heartbeat.decode(entry.value))
        with contextlib.suppress(NotFoundError):
            kv = await self._js.key_value(self.subjects.placement_bucket)
            for key in await _keys(kv):
                parsed = parse_key(key)
                if parsed and parsed[0] == "shard":
                    with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                        entry = await kv.get(key)
                        if entry.value:
                            shards[parsed[1]] = Assignment.decode(parsed[1], entry.value)
        with contextlib.suppress(NotFoundError, KeyNotFoundError, KeyDeletedError):
            kv = await self._js.key_value(self.subjects.router_bucket)
            entry = await kv.get("leader")
            leader = entry.value.decode() if entry.value else None
        return FleetStatus(sorted(workers, key=lambda w: w.worker), shards, leader)


class Session:
    """One session of the fleet; buffers its live events from `open()` on."""

    def __init__(self, fleet: Fleet, sid: str) -> None:
        self.fleet = fleet
        self.sid = sid
        self._events: asyncio.Queue[Event] = asyncio.Queue(SESSION_BUFFER)
        self._held: collections.deque[Event] = collections.deque()
        """Events a `wait_for` passed over because they belong to another request; the next
        reads take them first, in their order."""
        self._sub: Subscription | None = None
        self._seen_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        """The last message ids heard: an event the fleet re-publishes after a failover
        (same `Nats-Msg-Id`) is stored once by FLOTILLA_EVT, and shown here once too."""
        self.dropped = 0
        self.last_prompt_id: str | None = None

    async def open(self) -> None:
        if self._sub is None:
            self._sub = await self.fleet._nc.subscribe(
                self.fleet.subjects.evt_session(self.sid, tenant=self.fleet.tenant),
                cb=self._on_event,
            )
            await self.fleet._nc.flush()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_event(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id is not None:
            if msg_id in self._seen_ids:
                return
            self._seen_ids[msg_id] = None
            if len(self._seen_ids) > SEEN_IDS:
                self._seen_ids.popitem(last=False)
        if self._events.full():  # overflow policy: drop the oldest, count it
            self._events.get_nowait()
            self.dropped += 1
        self._events.put_nowait(_event(msg, None))

    async def send(self, op: str, **body: Any) -> str:
        return await self.fleet.send(self.sid, op, body)

    async def prompt(
        self, text: str, *, strategy: str = "enqueue", meta: dict[str, Any] | None = None
    ) -> str:
        """Send a prompt; returns its command id (the `request_id` of its events)."""
        self.last_prompt_id = await self.send(
            "prompt", text=text, strategy=strategy, meta=meta or {}
        )
        return self.last_prompt_id

    async def collect_reply(self, *, timeout: float = 60.0) -> str:
        """The text of the last prompt's reply, once its turn ends."""
        end = await self.wait_for(_END_TYPES, request_id=self.last_prompt_id, timeout=timeout)
        if end.type == "agent_abort":
            raise CommandError(
                f"turn aborted: {end.data.get('reason')}", code="aborted", command_id=end.request_id
            )
        if end.data.get("reason") == "error":
            error = end.data.get("error") or {}
            raise CommandError(
                str(error.get("message")), code=str(error.get("code")), command_id=end.request_id
            )
        last = end.data.get("last_message") or {}
        return str(last.get("content", ""))

    async def _next(self) -> Event:
        return self._held.popleft() if self._held else await self._events.get()

    async def wait_for(
        self, types: set[str] | frozenset[str], *, request_id: str | None, timeout: float
    ) -> Event:
        """The next buffered event of one of `types` (for `request_id` when given).

        The events of `request_id` before it are consumed; those of other requests stay
        buffered for later reads (waiting for a checkpoint does not lose the end of a turn
        that finished meanwhile). An `error` event for `request_id` raises CommandError.
        """
        passed: list[Event] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self._next()
                    if request_id is not None and event.request_id != request_id:
                        passed.append(event)
                        continue
                    if event.type == "error" and event.type not in types:
                        raise CommandError(
                            str(event.data.get("message")),
                            code=str(event.data.get("code")),
                            command_id=request_id,
                        )
                    if event.type in types:
                        return event
        except TimeoutError:
            raise ReplyTimeout(
                f"no {sorted(types)} for session {self.sid} within {timeout} s"
            ) from None
        finally:
            self._hold(passed)

    def _hold(self, events: list[Event]) -> None:
        """Put `events` back at the front; past SESSION_BUFFER held, the oldest go (counted
        in `dropped`, like an overflowing buffer)."""
        self._held.extendleft(reversed(events))
        while len(self._held) > SESSION_BUFFER:
            self._held.popleft()
            self.dropped += 1

    def subscribe(
        self, *, since: int | None = None, channel: str | None = None
    ) -> AsyncIterator[Event]:
        """This session's events (with their stream sequence), live or from `since`."""
        return self.fleet.subscribe(sid=self.sid, since=since, channel=channel)

    async def steer(self, text: str, *, ref: str | None = None) -> str:
        """Redirect the running turn at its next step boundary (idle: like a prompt)."""
        return await self.send("steer", text=text, **({"ref": ref} if ref else {}))

    async def abort(
        self,
        *,
        reason: str = "user_cancelled",
        kill_tools: str = "default",
        clear_queue: bool = True,
    ) -> str:
        """Stop the running turn; `kill_tools` is `default`, `all` or `none`."""
        return await self.send(
            "abort", reason=reason, kill_tools=kill_tools, clear_queue=clear_queue
        )

    async def approve(
        self, approval_id: str, *, kind: str = "once", auto_resume: bool = True
    ) -> str:
        """Approve a pending tool call; `always` also allows its (tool, command family)."""
        return await self.send(
            "approve", approval_id=approval_id, kind=kind, auto_resume=auto_resume
        )

    async def reject(
        self, approval_id: str, *, reason: str = "rejected", auto_resume: bool = False
    ) -> str:
        """Refuse a pending tool call; without `auto_resume` the turn ends (`rejected`)."""
        return await self.send(
            "reject", approval_id=approval_id, reason=reason, auto_resume=auto_resume
        )

    async def respond(self, ref: str, response: Any) -> str:
        """Answer an `ask_user` question."""
        return await self.send("respond", ref=ref, response=response)

    async def switch_model(self, model: str, *, provider_opts: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"model": model}
        if provider_opts is not None:
            body["provider_opts"] = provider_opts
        return await self.send("switch_model", **body)

    async def attach_tool(self, tool: str | dict[str, Any]) -> str:
        """Attach a tool by name, or an HTTP callback tool by its spec."""
        return await self.send("attach_tool", tool=tool)

    async def detach_tool(self, name: str) -> str:
        return await self.send("detach_tool", tool=name)

    async def update_plugin_opts(self, plugin: str, opts: dict[str, Any]) -> str:
        return await self.send("update_plugin_opts", plugin=plugin, opts=opts)

    async def checkpoint(self, label: str | None = None, *, timeout: float = 10.0) -> str:
        """Save a checkpoint; returns its id once `checkpoint_saved` arrives."""
        command_id = await self.send("checkpoint", **({"label": label} if label else {}))
        event = await self.wait_for({"checkpoint_saved"}, request_id=command_id, timeout=timeout)
        return str(event.data["checkpoint_id"])

    async def next_event(self, *, timeout: float) -> Event:
        """The next buffered event of this session, whatever its type."""
        try:
            async with asyncio.timeout(timeout):
                return await self._next()
        except TimeoutError:
            raise ReplyTimeout(f"no event for session {self.sid} within {timeout} s") from None

    async def hibernate(self) -> str:
        return await self.send("hibernate")

    async def stop(self, *, timeout: float = 10.0) -> None:
        """End the session and wait for `session_stopped`."""
        command_id = await self.send("stop")
        try:
            await self.wait_for({"session_stopped"}, request_id=command_id, timeout=timeout)
        finally:
            await self.close()


def _event(msg: Msg, seq: int | None) -> Event:
    event = Event.model_validate_json(msg.data)
    return event.model_copy(update={"seq": seq}) if seq is not None else event


async def _keys(kv: Any) -> list[str]:
    try:
        return list(await kv.keys())
    except NotFoundError:
        return []
    except Exception as exc:  # nats-py raises NoKeysError (not exported everywhere)
        if type(exc).__name__ == "NoKeysError":
            return []
        raise

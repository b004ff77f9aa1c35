"""The `flotilla` command line: up, worker, router, send, watch, chat, status, registry,
schema export."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from flotilla._service import configure_logging, run_async, run_service
from flotilla.errors import FlotillaError
from flotilla.settings import GatewaySettings, Settings

if TYPE_CHECKING:
    from schemas import ProviderProfile

_COLORS = {"progress": "\033[36m", "control": "\033[33m", "monitor": "\033[35m"}
_RESET = "\033[0m"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats-url", help="NATS URL (FLOTILLA_NATS_URL)")
    parser.add_argument("--redis-url", help="Redis URL (FLOTILLA_REDIS_URL)")
    parser.add_argument("--prefix", help="subject prefix (FLOTILLA_PREFIX, default flotilla)")
    parser.add_argument("--shards", type=int, help="shard count (FLOTILLA_SHARDS, default 64)")
    parser.add_argument("--data-dir", type=Path, help="data directory (FLOTILLA_DATA_DIR)")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        nats_url=args.nats_url,
        redis_url=args.redis_url,
        prefix=args.prefix,
        shards=args.shards,
        data_dir=args.data_dir,
        **extra,
    )


def _registry_parser(sub: Any) -> None:
    registry = sub.add_parser("registry", help="provider profiles (registry:<profile>:<model>)")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    put = registry_sub.add_parser("put", help="register or replace a provider profile")
    _common(put)
    put.add_argument("name")
    put.add_argument("--provider", required=True, help="mock, openai, anthropic, ...")
    put.add_argument(
        "--opt", action="append", default=[], metavar="KEY=VALUE", help="an opt (JSON or text)"
    )
    put.add_argument(
        "--opt-env",
        action="append",
        default=[],
        metavar="KEY=VAR",
        help="an opt read from environment variable VAR (keeps keys off the command line)",
    )
    put.add_argument("--tenant", help="the only tenant allowed to use the profile")
    put.add_argument("--budget-tokens", type=int, help="tokens per tenant per day (UTC)")
    put.add_argument("--budget-usd", type=float, help="USD per tenant per day (UTC)")
    put.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="let a router without FLOTILLA_FLEET_KEY store secret opts unencrypted",
    )
    rm = registry_sub.add_parser("rm", help="unregister a provider profile")
    _common(rm)
    rm.add_argument("name")
    ls = registry_sub.add_parser("ls", help="list provider profiles (secrets shown as ***)")
    _common(ls)
    ls.add_argument("--tenant")


DEMO_KEY = "demo-key"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flotilla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start NATS, Redis, a router and workers locally")
    _common(up)
    up.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    up.add_argument("--gateway-port", type=int, help="gateway port (default 4000)")
    up.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
    up.add_argument(
        "--nats-nodes",
        type=int,
        default=1,
        choices=range(1, 6),
        metavar="N",
        help="a local JetStream cluster of N nodes with N replicas (default 1: one server)",
    )

    worker = sub.add_parser("worker", help="run one worker in the foreground")
    _common(worker)
    worker.add_argument("--worker-id", help="worker id (FLOTILLA_WORKER_ID)")
    worker.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")

    router = sub.add_parser("router", help="run one router replica in the foreground")
    _common(router)
    router.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")

    gateway = sub.add_parser("gateway", help="run the HTTP/SSE/WebSocket gateway (uvicorn)")
    _common(gateway)
    gateway.add_argument("--port", type=int, help="port (GATEWAY_PORT, default 4000)")
    gateway.add_argument("--host", help="address to bind (GATEWAY_HOST, default 127.0.0.1)")

    send = sub.add_parser("send", help="publish one command")
    _common(send)
    send.add_argument("sid")
    send.add_argument("op")
    send.add_argument("--json", default="{}", help="command fields as a JSON object")
    send.add_argument("--tenant", default="default")

    watch = sub.add_parser("watch", help="print events live, one line each")
    _common(watch)
    watch.add_argument("sid", nargs="?")
    watch.add_argument("--group")
    watch.add_argument("--tenant")
    watch.add_argument("--channel", choices=["progress", "control", "monitor"])
    watch.add_argument("--since", type=int, help="replay from after this stream sequence")

    chat = sub.add_parser("chat", help="an interactive session in the terminal")
    _common(chat)
    chat.add_argument("--model", help="model (default mock:echo, or mock:script with --script)")
    chat.add_argument("--tools", help="comma-separated tool names")
    chat.add_argument("--plugins", help="comma-separated plugin names")
    chat.add_argument("--approve-tools", help="tools that need approval (human_approval)")
    chat.add_argument("--script", type=Path, help="a JSON mock script (mock:script steps)")
    chat.add_argument("--tenant", default="default")
    chat.add_argument("--session", help="session id: created, or attached to if it exists")
    chat.add_argument("--keep", action="store_true", help="leave the session running at exit")

    status = sub.add_parser("status", help="workers, shard ownership and session counts")
    _common(status)

    _registry_parser(sub)

    schema = sub.add_parser("schema", help="JSON Schema of the wire contract")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    export = schema_sub.add_parser("export", help="write one JSON Schema file per type")
    export.add_argument("directory", type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(_dispatch(args) or 0)
    except FlotillaError as exc:
        print(f"flotilla: {exc}", file=sys.stderr)
        sys.exit(2)


def _dispatch(args: argparse.Namespace) -> int | None:
    command = args.command
    if command == "up":
        from flotilla._up import run_up

        settings = _settings(args)
        return run_up(
            settings,
            workers=args.workers,
            embedded_nats=args.nats_url is None and "FLOTILLA_NATS_URL" not in _env(),
            embedded_redis=args.redis_url is None and "FLOTILLA_REDIS_URL" not in _env(),
            gateway=None if args.no_gateway else _up_gateway(args.gateway_port),
            nats_nodes=args.nats_nodes,
        )
    if command == "worker":
        configure_logging()
        from workers import Worker

        settings = _settings(args, worker_id=args.worker_id, metrics_port=args.metrics_port)
        run_service(lambda: Worker(settings=settings))
        return 0
    if command == "router":
        configure_logging()
        from router import Router

        settings = _settings(args, metrics_port=args.metrics_port)
        run_service(lambda: Router(settings=settings))
        return 0
    if command == "gateway":
        configure_logging()
        from gateway import serve

        serve(_settings(args), GatewaySettings.from_env(port=args.port, host=args.host))
        return 0
    if command == "send":
        run_async(_send(_settings(args), args.tenant, args.sid, args.op, args.json))
        return 0
    if command == "watch":
        run_async(_watch(_settings(args), args))
        return 0
    if command == "chat":
        from flotilla._chat import chat_command, chat_options

        options = chat_options(
            model=args.model,
            tools=args.tools,
            plugins=args.plugins,
            approve_tools=args.approve_tools,
            script=args.script,
            session_id=args.session,
            keep=args.keep,
        )
        run_async(chat_command(_settings(args), tenant=args.tenant, options=options))
        return 0
    if command == "status":
        run_async(_status(_settings(args)))
        return 0
    if command == "registry":
        run_async(_registry(_settings(args), args))
        return 0
    if command == "schema":
        from schemas import export_json_schemas

        for path in export_json_schemas(args.directory):
            print(path)
        return 0
    raise AssertionError(command)


def _up_gateway(port: int | None) -> GatewaySettings:
    """The gateway of `flotilla up`: a local demo key when none is configured."""
    config = GatewaySettings.from_env(port=port)
    if not config.api_keys and not config.keys_file:
        config = GatewaySettings.from_env(port=port, api_keys=f"{DEMO_KEY}:demo")
        print(f"gateway: no GATEWAY_API_KEYS; demo key {DEMO_KEY!r} (tenant demo)")
    return config


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


async def _send(settings: Settings, tenant: str, sid: str, op: str, body: str) -> None:
    from flotilla._sdk import Fleet

    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FlotillaError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise FlotillaError("--json must be a JSON object")
    fleet = await Fleet.connect(settings=settings, tenant=tenant)
    try:
        command_id = await fleet.send(sid, op, fields)
    finally:
        await fleet.close()
    print(f"sent {op} to {tenant}/{sid} (id {command_id})")


def format_event(event: Any, *, color: bool) -> str:
    """One line per event: sequence, time, session, channel, type, data."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts / 1000))
    data = orjson.dumps(event.data).decode()
    if len(data) > 160:
        data = data[:157] + "..."
    channel = event.channel if event.type in _catalog() else "monitor"
    text = (
        f"{event.seq or '':>8} {stamp} {event.tenant}/{event.sid} {channel:<8} "
        f"{event.type:<20} {data}"
    )
    if color:
        return f"{_COLORS.get(channel, '')}{text}{_RESET}"
    return text


def _catalog() -> dict[str, Any]:
    from schemas import EVENT_CATALOG

    return EVENT_CATALOG


async def _watch(settings: Settings, args: argparse.Namespace) -> None:
    from flotilla._sdk import Fleet

    fleet = await Fleet.connect(settings=settings)
    color = sys.stdout.isatty()
    try:
        async for event in fleet.subscribe(
            sid=args.sid,
            group=args.group,
            tenant=args.tenant or "*",  # an operator's view: every tenant unless named
            channel=args.channel,
            since=args.since,
        ):
            print(format_event(event, color=color), flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await fleet.close()


async def _registry(settings: Settings, args: argparse.Namespace) -> None:
    from flotilla.registry import RegistryClient

    profile = _profile_of(args) if args.registry_command == "put" else None
    client = await RegistryClient.connect(settings)
    try:
        if profile is not None:
            revision = await client.register(profile, allow_plaintext=args.allow_plaintext)
            print(f"registered {profile.name} (revision {revision})")
        elif args.registry_command == "rm":
            revision = await client.unregister(args.name)
            print(f"unregistered {args.name} (revision {revision})")
        else:
            for p in await client.list(args.tenant):
                budget = p.budget.model_dump(exclude_none=True) if p.budget else {}
                print(
                    f"{p.name:<24} provider={p.provider:<12} tenant={p.tenant or '*':<16} "
                    f"budget={orjson.dumps(budget).decode()} opts={orjson.dumps(p.opts).decode()}"
                )
    finally:
        await client.close()


def _profile_of(args: argparse.Namespace) -> ProviderProfile:
    """The ProviderProfile that `registry put` flags describe."""
    from pydantic import ValidationError

    from schemas import ProviderProfile, is_secret_opt

    opts: dict[str, Any] = {}
    for item in args.opt:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise FlotillaError(f"--opt {key!r} must be KEY=VALUE")
        try:  # numbers, booleans and objects as JSON; secrets and plain words as text
            opts[key] = raw if is_secret_opt(key) else orjson.loads(raw)
        except orjson.JSONDecodeError:
            opts[key] = raw
    environ = _env()
    for item in args.opt_env:
        key, eq, var = item.partition("=")
        if not eq or not key or var not in environ:
            raise FlotillaError(f"--opt-env {key!r}: KEY=VAR with VAR set in the environment")
        opts[key] = environ[var]
    budget = None
    if args.budget_tokens is not None or args.budget_usd is not None:
        budget = {"tokens_per_day": args.budget_tokens, "usd_per_day": args.budget_usd}
    fields = {"name": args.name, "provider": args.provider, "tenant": args.tenant}
    try:
        return ProviderProfile.model_validate({**fields, "opts": opts, "budget": budget})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise FlotillaError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        ) from None


async def _status(settings: Settings) -> None:
    from flotilla._sdk import Fleet

    fleet = await Fleet.connect(settings=settings)
    try:
        status = await fleet.status()
    finally:
        await fleet.close()
    now = time.time() * 1000
    print(f"router leader: {status.leader or '-'}")
    print(f"workers: {len(status.workers)}")
    for beat in status.workers:
        owned = sorted(k for k, a in status.shards.items() if a.worker == beat.worker)
        print(
            f"  {beat.worker:<32} shards={len(owned):<3} resident={beat.resident:<6} "
            f"slots_free={beat.slots_free:<5} age={int(now - beat.ts_ms)}ms "
            f"metrics={beat.metrics_url or '-'}"
        )
    unowned = settings.shards - len(status.shards)
    print(f"shards: {settings.shards} ({unowned} unassigned)")
    running, idle = await _session_counts(settings)
    resident = sum(beat.resident for beat in status.workers)
    print(
        f"sessions: {running} running a turn, {idle} idle awaiting hibernation, "
        f"{resident} resident in workers"
    )


async def _session_counts(settings: Settings) -> tuple[int, int]:
    """Sessions with an unfinished turn, and idle ones not yet hibernated (from Redis)."""
    from flotilla._connect import connect_redis
    from flotilla.keys import RedisKeys

    keys = RedisKeys(settings.redis_prefix)
    redis = connect_redis(settings)
    try:
        pipe = redis.pipeline(transaction=False)
        for shard in range(settings.shards):
            pipe.scard(keys.active(shard))
            pipe.zcard(keys.hibernation(shard))
        counts = await pipe.execute()
    finally:
        await redis.aclose()
    return sum(counts[0::2]), sum(counts[1::2])

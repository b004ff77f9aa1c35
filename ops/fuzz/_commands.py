"""The command campaign: hostile commands and hostile tool-call arguments sent to a running
fleet while valid sessions do their work beside them.

Judged by what a user would check: no worker died or logged a traceback, every command that
must be refused reached the dead-letter stream with a code it may have, the command stream
drained (nothing stuck, nothing lost), every valid session got every reply in order, and
every turn of the hostile tool calls ended.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from flotilla import Fleet, Settings
from ops.fuzz._strategies import (
    DEAD_LETTER,
    Hostile,
    draw,
    hostile_commands,
    hostile_tool_calls,
)

__all__ = ["CommandFigures", "FuzzTarget", "run_commands"]

TENANT = "fuzz"
FUZZ_ID = "Fuzz-Id"
CHUNK = 1_000
"""Commands drawn at a time (in a thread, while the previous chunk is published)."""
IN_FLIGHT = 256
REDOS_BAIT = "a" * 40 + "b"
"""A text on which `(a|aa)+$` backtracks for hours (a grep of the campaign may try it)."""
TOOLS = ("read_file", "write_file", "edit_file", "grep", "list_dir", "glob", "write_todos")
"""The tools whose hostile arguments are tried (ask_user and task wait, shell is off)."""


@dataclass
class FuzzTarget:
    """The fleet under fuzz: how to reach it, and how to tell whether its workers are well."""

    settings: Settings
    nc: NATS
    worker_logs: list[Path]
    workers_alive: Callable[[], int]
    """How many worker processes still run."""
    workers: int


@dataclass
class CommandFigures:
    hostile_sent: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: collections.Counter[str] = field(default_factory=collections.Counter)
    expected_dead_letters: int = 0
    missing_dead_letters: list[str] = field(default_factory=list)
    unexpected_codes: list[str] = field(default_factory=list)
    refused_by_nats: int = 0
    tool_sessions: int = 0
    tool_calls: int = 0
    tool_turns_finished: int = 0
    canary_prompts: int = 0
    canary_failures: list[str] = field(default_factory=list)
    worker_crashes: int = 0
    worker_tracebacks: int = 0
    pending_commands: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.missing_dead_letters
            or self.unexpected_codes
            or self.canary_failures
            or self.worker_crashes
            or self.worker_tracebacks
            or self.pending_commands
            or self.tool_turns_finished != self.tool_sessions
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "hostile_commands_sent": self.hostile_sent,
            "by_kind": dict(sorted(self.by_kind.items())),
            "dead_letters_by_code": dict(sorted(self.dead_letters.items())),
            "expected_dead_letters": self.expected_dead_letters,
            "missing_dead_letters": len(self.missing_dead_letters),
            "dead_letters_with_an_unexpected_code": len(self.unexpected_codes),
            "refused_by_nats": self.refused_by_nats,
            "tool_sessions": self.tool_sessions,
            "hostile_tool_calls": self.tool_calls,
            "tool_turns_finished": self.tool_turns_finished,
            "valid_prompts": self.canary_prompts,
            "valid_replies_wrong_or_missing": len(self.canary_failures),
            "worker_crashes": self.worker_crashes,
            "worker_tracebacks": self.worker_tracebacks,
            "commands_left_in_the_stream": self.pending_commands,
            "seconds": round(self.seconds, 1),
            "clean": self.clean,
        }


async def run_commands(
    target: FuzzTarget,
    *,
    count: int,
    seed: int,
    canaries: int = 8,
    prompts_per_canary: int = 25,
    tool_sessions: int = 20,
    calls_per_session: int = 12,
    progress: Callable[[str], None] | None = None,
) -> CommandFigures:
    """Send `count` hostile commands (and the tool sessions' hostile calls) beside valid
    traffic; what became of them."""
    figures = CommandFigures()
    say = progress or (lambda _: None)
    started = time.monotonic()
    async with await Fleet.connect(settings=target.settings, tenant=TENANT) as fleet:
        names = tuple(f"canary-{i}" for i in range(canaries))
        sessions = [await fleet.create_agent(session_id=n, model="mock:echo") for n in names]
        valid = asyncio.create_task(_valid_traffic(sessions, prompts_per_canary, figures))
        tools = asyncio.create_task(
            _tool_sessions(fleet, tool_sessions, calls_per_session, seed, figures)
        )
        sent = await _flood(target, names, count=count, seed=seed, figures=figures, say=say)
        await asyncio.gather(valid, tools)
        say("waiting for the command stream to drain ...")
        figures.pending_commands = await _drained(target)
        await _check_dead_letters(target, sent, figures)
        for session in sessions:
            await session.close()
    figures.worker_crashes = target.workers - target.workers_alive()
    figures.worker_tracebacks = sum(
        log.read_text(errors="replace").count("Traceback") for log in target.worker_logs
    )
    figures.seconds = time.monotonic() - started
    return figures


async def _flood(
    target: FuzzTarget,
    canaries: tuple[str, ...],
    *,
    count: int,
    seed: int,
    figures: CommandFigures,
    say: Callable[[str], None],
) -> dict[str, Hostile]:
    """Publish `count` hostile commands; returns them by their Fuzz-Id."""
    js = target.nc.jetstream()
    subjects = target.settings.subjects
    sent: dict[str, Hostile] = {}
    slots = asyncio.Semaphore(IN_FLIGHT)
    strategy = hostile_commands(
        canaries=canaries, tenant=TENANT, max_bytes=target.settings.max_command_bytes
    )

    async def publish(fuzz_id: str, item: Hostile) -> None:
        try:
            await js.publish(
                subjects.cmd(item.tenant, item.sid, item.op),
                item.data,
                headers={"Nats-Msg-Id": secrets.token_hex(12), FUZZ_ID: fuzz_id},
                timeout=30,
            )
        except nats.errors.MaxPayloadError:
            figures.refused_by_nats += 1
            sent.pop(fuzz_id, None)
        finally:
            slots.release()

    chunks = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    drawing = asyncio.create_task(asyncio.to_thread(draw, strategy, chunks[0], seed_value=seed))
    tasks: set[asyncio.Task[None]] = set()
    for index in range(len(chunks)):
        batch = await drawing
        if index + 1 < len(chunks):
            drawing = asyncio.create_task(
                asyncio.to_thread(draw, strategy, chunks[index + 1], seed_value=seed + index + 1)
            )
        for item in batch:
            fuzz_id = str(len(sent))
            sent[fuzz_id] = item
            figures.by_kind[item.kind] += 1
            await slots.acquire()
            task = asyncio.create_task(publish(fuzz_id, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        say(f"hostile commands sent: {len(sent):,}")
    await asyncio.gather(*tasks)
    figures.hostile_sent = len(sent)
    return sent


async def _valid_traffic(sessions: list[Any], prompts: int, figures: CommandFigures) -> None:
    """Each valid session asks its questions one after another; every reply must be right."""

    async def converse(session: Any) -> None:
        for n in range(prompts):
            text = f"{session.sid} question {n}"
            await session.prompt(text)
            figures.canary_prompts += 1
            try:
                reply = await session.collect_reply(timeout=120)
            except Exception as exc:  # counted: a reply that never came is a failure
                figures.canary_failures.append(f"{text}: {type(exc).__name__}: {exc}")
                continue
            if reply != f"echo: {text}":
                figures.canary_failures.append(f"{text}: got {reply!r}")

    await asyncio.gather(*(converse(s) for s in sessions))


async def _tool_sessions(
    fleet: Fleet, sessions: int, calls: int, seed: int, figures: CommandFigures
) -> None:
    """Sessions whose scripted model calls tools with hostile arguments; each turn must end."""
    drawn = await asyncio.to_thread(
        draw, hostile_tool_calls(), sessions * calls, seed_value=seed ^ 0x5EED
    )

    async def one(index: int) -> None:
        bait = {"name": "write_file", "arguments": {"path": "bait.txt", "content": REDOS_BAIT}}
        steps: list[dict[str, Any]] = [
            {"tool_calls": [bait]},
            *({"tool_calls": [call]} for call in drawn[index * calls : (index + 1) * calls]),
        ]
        figures.tool_calls += len(steps)
        try:
            session = await fleet.create_agent(
                model="mock:script",
                tools=list(TOOLS),
                provider_opts={"script": [*steps, {"text": "done"}]},
                timeout=60,
            )
        except Exception as exc:
            figures.canary_failures.append(f"tool session {index}: create: {exc}")
            return
        try:
            await session.prompt("use the tools")
            end = await session.wait_for(
                {"agent_end", "agent_abort"}, request_id=session.last_prompt_id, timeout=120
            )
            if end.type == "agent_end" and end.data.get("reason") in ("finished", "max_turns"):
                figures.tool_turns_finished += 1
            else:
                figures.canary_failures.append(f"tool session {index}: {end.type} {end.data}")
        except Exception as exc:
            figures.canary_failures.append(f"tool session {index}: {type(exc).__name__}: {exc}")
        finally:
            await session.close()

    figures.tool_sessions = sessions
    await asyncio.gather(*(one(i) for i in range(sessions)))


async def _drained(target: FuzzTarget, timeout: float = 600.0) -> int:
    """Wait until the command stream holds nothing; what it still holds after `timeout`."""
    js = target.nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        left = int((await js.stream_info(target.settings.subjects.cmd_stream)).state.messages)
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


async def _check_dead_letters(
    target: FuzzTarget, sent: dict[str, Hostile], figures: CommandFigures
) -> None:
    """Every command that must be refused is in the dead-letter stream with a code it may
    have."""
    js = target.nc.jetstream()
    subjects = target.settings.subjects
    total = int((await js.stream_info(subjects.dlq_stream)).state.messages)
    codes: dict[str, str] = {}
    if total:
        sub = await js.subscribe(
            subjects.dlq_all,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            for _ in range(total):
                msg = await sub.next_msg(timeout=30)
                headers = msg.headers or {}
                code = headers.get("Flotilla-Error", "?")
                figures.dead_letters[code] += 1
                if FUZZ_ID in headers:
                    codes[headers[FUZZ_ID]] = code
        finally:
            await sub.unsubscribe()
    for fuzz_id, item in sent.items():
        if item.outcome != DEAD_LETTER:
            continue
        figures.expected_dead_letters += 1
        found = codes.get(fuzz_id)
        if found is None:
            figures.missing_dead_letters.append(f"{item.kind} {item.op}: {item.data[:80]!r}")
        elif found not in item.codes:
            figures.unexpected_codes.append(f"{item.kind} {item.op}: {found}: {item.data[:80]!r}")


def summary(figures: CommandFigures) -> str:
    """The figures as the README quotes them."""
    return orjson.dumps(figures.as_dict(), option=orjson.OPT_INDENT_2).decode()

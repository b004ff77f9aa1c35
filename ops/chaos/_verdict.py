"""The chaos campaign's judge: from what was published and what came back, count lost,
duplicated, out-of-order and wrong turns, and measure latency per phase and per fault.

Pure functions over plain records, so the verdicts are unit-tested on synthetic inputs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class Turn:
    """A prompt the broker acknowledged: `index` is its position in its session."""

    command_id: str
    sid: str
    index: int
    text: str
    published_at: float


@dataclass(frozen=True)
class End:
    """One distinct `agent_end` or `agent_abort` (copies with one Nats-Msg-Id count once)."""

    command_id: str
    kind: str
    at: float
    turn: int
    reply: str


@dataclass(frozen=True)
class FaultWindow:
    """A fault from its injection to its repair (`detail` says what was hit)."""

    kind: str
    start: float
    end: float
    detail: str = ""


@dataclass
class Verdict:
    """Counts of each kind of failure, with the first few command ids of each as evidence."""

    turns: int = 0
    ended: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    wrong_reply: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)

    def failures(self) -> dict[str, int]:
        """What `--strict` refuses, by kind."""
        return {
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "out_of_order": len(self.out_of_order),
            "wrong_reply": len(self.wrong_reply),
            "stranded": len(self.stranded),
            "stuck": len(self.stuck),
            "unpublished": len(self.unpublished),
        }

    @property
    def clean(self) -> bool:
        return not any(self.failures().values())


def judge(turns: list[Turn], ends: dict[str, list[End]]) -> Verdict:
    """Per command: exactly one end; per session: ends in publish order, each echoing its
    own prompt (`mock:echo` answers `echo: <text>`)."""
    verdict = Verdict(turns=len(turns))
    by_session: dict[str, list[Turn]] = defaultdict(list)
    for turn in turns:
        by_session[turn.sid].append(turn)
        seen = ends.get(turn.command_id, [])
        if not seen:
            verdict.lost.append(turn.command_id)
            continue
        verdict.ended += 1
        if len(seen) > 1:
            verdict.duplicated.append(turn.command_id)
        first = min(seen, key=lambda end: end.at)
        if first.kind == "agent_abort":
            verdict.aborted.append(turn.command_id)
        elif first.reply != f"echo: {turn.text}":
            verdict.wrong_reply.append(turn.command_id)
    for session_turns in by_session.values():
        session_turns.sort(key=lambda t: t.index)
        last_at, last_number = -math.inf, -1
        for turn in session_turns:
            if not ends.get(turn.command_id):
                continue
            first = min(ends[turn.command_id], key=lambda end: end.at)
            if first.at < last_at or first.turn <= last_number:
                verdict.out_of_order.append(turn.command_id)
            last_at, last_number = max(last_at, first.at), max(last_number, first.turn)
    return verdict


def latencies(turns: list[Turn], ends: dict[str, list[End]]) -> dict[str, float]:
    """Publish → first end, in ms, by command id (ended turns only)."""
    out = {}
    for turn in turns:
        seen = ends.get(turn.command_id)
        if seen:
            out[turn.command_id] = (min(end.at for end in seen) - turn.published_at) * 1000
    return out


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of `values` (ms), None when empty."""
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"count": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


def phase_of(published_at: float, faults_start: float, faults_end: float) -> str:
    if published_at < faults_start:
        return "before"
    return "during" if published_at <= faults_end else "after"


def by_phase(
    turns: list[Turn], ends: dict[str, list[End]], faults_start: float, faults_end: float
) -> dict[str, dict[str, float | int | None]]:
    """Latency percentiles of the turns published before, during and after the faults."""
    latency = latencies(turns, ends)
    grouped: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for turn in turns:
        if turn.command_id in latency:
            grouped[phase_of(turn.published_at, faults_start, faults_end)].append(
                latency[turn.command_id]
            )
    return {phase: percentiles(values) for phase, values in grouped.items()}


COMPOUND = "compound"
"""The row of turns whose life overlapped faults of two kinds or more."""


def worst_waits(
    turns: list[Turn], ends: dict[str, list[End]], windows: list[FaultWindow]
) -> dict[str, dict[str, Any]]:
    """Per fault kind: how often it was injected, and the p99 and longest wait of the turns
    it hit.

    A turn whose life (publish to end) overlaps windows of one kind only is charged to that
    kind; one that overlaps two kinds or more (a worker killed during a Redis outage or a
    NATS election) is charged to the `compound` row, whose details count each combination:
    a fault's own figures are then what that fault costs. A turn that never ended is not a
    wait: it is counted as lost.
    """
    latency = latencies(turns, ends)
    ordered = sorted(windows, key=lambda w: w.start)
    out: dict[str, dict[str, Any]] = {}
    for window in ordered:
        entry = out.setdefault(window.kind, _wait_entry())
        entry["injected"] += 1
        entry["details"].append(window.detail)
    waits: dict[str, list[float]] = defaultdict(list)
    combinations: dict[str, list[float]] = defaultdict(list)
    for turn in turns:
        if turn.command_id not in latency:
            continue
        ended_at = turn.published_at + latency[turn.command_id] / 1000
        kinds = sorted(
            {w.kind for w in ordered if turn.published_at <= w.end and ended_at >= w.start}
        )
        if not kinds:
            continue
        kind = kinds[0] if len(kinds) == 1 else COMPOUND
        if kind == COMPOUND:
            combinations[" + ".join(kinds)].append(latency[turn.command_id])
        entry = out.setdefault(kind, _wait_entry())
        entry["turns_hit"] += 1
        wait = round(latency[turn.command_id], 1)
        entry["worst_wait_ms"] = max(entry["worst_wait_ms"] or 0.0, wait)
        waits[kind].append(latency[turn.command_id])
    for kind, values in waits.items():
        out[kind]["p99_wait_ms"] = percentiles(values)["p99_ms"]
    for combo, values in combinations.items():
        stats = percentiles(values)
        out[COMPOUND]["details"].append(
            f"{combo}: {len(values)} turns, p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms"
        )
    return out


def _wait_entry() -> dict[str, Any]:
    return {
        "injected": 0,
        "turns_hit": 0,
        "p99_wait_ms": None,
        "worst_wait_ms": None,
        "details": [],
    }


def slowest(
    turns: list[Turn], ends: dict[str, list[End]], *, origin: float, count: int = 5
) -> list[dict[str, Any]]:
    """The `count` longest waits, with their publish time since `origin`, as evidence."""
    latency = latencies(turns, ends)
    ranked = sorted(
        (t for t in turns if t.command_id in latency), key=lambda t: -latency[t.command_id]
    )
    return [
        {
            "command_id": t.command_id,
            "sid": t.sid,
            "published_s": round(t.published_at - origin, 1),
            "latency_ms": round(latency[t.command_id], 1),
        }
        for t in ranked[:count]
    ]


def report(
    verdict: Verdict,
    *,
    phases: dict[str, dict[str, float | int | None]],
    faults: dict[str, dict[str, Any]],
    params: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """The JSON report: parameters, counts, evidence (first ids), latencies, faults."""
    return {
        "params": params,
        "wall_s": round(wall_s, 1),
        "clean": verdict.clean,
        "counts": {
            "turns": verdict.turns,
            "ended": verdict.ended,
            "aborted": len(verdict.aborted),
            **verdict.failures(),
        },
        "evidence": {
            kind: ids[:10]
            for kind, ids in {
                "lost": verdict.lost,
                "duplicated": verdict.duplicated,
                "out_of_order": verdict.out_of_order,
                "wrong_reply": verdict.wrong_reply,
                "stranded": verdict.stranded,
                "stuck": verdict.stuck,
                "unpublished": verdict.unpublished,
            }.items()
            if ids
        },
        "latency": phases,
        "faults": faults,
    }


def _ms(value: object) -> str:
    return "-" if value is None else f"{value}"


def render(data: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    lines = ["", "verdict: " + ("CLEAN" if data["clean"] else "FAILURES"), ""]
    lines += [f"  {kind:<14} {count}" for kind, count in data["counts"].items()]
    lines += ["", f"  {'phase':<8} {'turns':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"]
    for phase, stats in data["latency"].items():
        lines.append(
            f"  {phase:<8} {stats['count']:>6} {_ms(stats['p50_ms']):>9} "
            f"{_ms(stats['p99_ms']):>9} {_ms(stats['max_ms']):>9}"
        )
    lines += [
        "",
        f"  {'fault':<30} {'injected':>8} {'turns hit':>9} {'p99 wait ms':>12} "
        f"{'worst wait ms':>14}",
    ]
    for kind, entry in data["faults"].items():
        injected = "-" if kind == COMPOUND else entry["injected"]
        lines.append(
            f"  {kind:<30} {injected:>8} {entry['turns_hit']:>9} "
            f"{_ms(entry.get('p99_wait_ms')):>12} {_ms(entry['worst_wait_ms']):>14}"
        )
    for combination in data["faults"].get(COMPOUND, {}).get("details", []):
        lines.append(f"  compound: {combination}")
    for turn in data.get("slowest", []):
        lines.append(
            f"  slow: {turn['command_id']} ({turn['sid']}) published at "
            f"{turn['published_s']} s waited {turn['latency_ms']} ms"
        )
    for turn in data.get("lost_turns", [])[:20]:
        lines.append(
            f"  lost: {turn['command_id']} ({turn['sid']} #{turn['index']}) published at "
            f"{turn['published_s']} s"
        )
    client = data.get("client") or {}
    if "longest_publish_ms" in client:
        lines.append(
            f"\n  longest publish (first try to the stream's acknowledgement): "
            f"{client['longest_publish_ms']} ms, {client.get('publish_retries', 0)} retries"
        )
    lines.append(f"\n  wall time {data['wall_s']} s")
    return "\n".join(lines)

"""The chaos campaign's judge (ops/chaos/_verdict.py) on synthetic runs: each kind of
failure it must catch is caught, and a clean run is clean."""

from __future__ import annotations

from pathlib import Path

import orjson

from ops.chaos._campaign import log_evidence
from ops.chaos._verdict import (
    End,
    FaultWindow,
    Turn,
    by_phase,
    judge,
    render,
    report,
    worst_waits,
)


def _turns(sid: str, count: int, *, start: float = 0.0) -> list[Turn]:
    return [Turn(f"{sid}-c{i}", sid, i, f"{sid}-{i}", start + i) for i in range(count)]


def _ends(turns: list[Turn], latency: float = 0.01) -> dict[str, list[End]]:
    return {
        t.command_id: [
            End(t.command_id, "agent_end", t.published_at + latency, t.index + 1, f"echo: {t.text}")
        ]
        for t in turns
    }


def test_a_clean_run_is_clean() -> None:
    turns = _turns("a", 3) + _turns("b", 3)
    verdict = judge(turns, _ends(turns))
    assert verdict.clean and verdict.ended == 6


def test_a_turn_without_an_end_is_lost() -> None:
    turns = _turns("a", 3)
    ends = _ends(turns)
    del ends["a-c1"]
    assert judge(turns, ends).lost == ["a-c1"]


def test_two_distinct_ends_of_one_command_are_a_duplicate() -> None:
    turns = _turns("a", 2)
    ends = _ends(turns)
    ends["a-c0"].append(End("a-c0", "agent_end", 5.0, 1, "echo: a-0"))
    verdict = judge(turns, ends)
    assert verdict.duplicated == ["a-c0"] and not verdict.clean


def test_ends_in_another_order_than_published_are_out_of_order() -> None:
    turns = _turns("a", 3)
    ends = _ends(turns)
    ends["a-c1"] = [End("a-c1", "agent_end", 9.0, 2, "echo: a-1")]  # after a-c2's end
    assert judge(turns, ends).out_of_order == ["a-c2"]


def test_a_turn_number_going_back_is_out_of_order() -> None:
    turns = _turns("a", 2)
    ends = _ends(turns)
    ends["a-c1"] = [End("a-c1", "agent_end", 1.5, 1, "echo: a-1")]
    assert judge(turns, ends).out_of_order == ["a-c1"]


def test_a_reply_to_another_prompt_is_wrong() -> None:
    turns = _turns("a", 2)
    ends = _ends(turns)
    ends["a-c1"] = [End("a-c1", "agent_end", 1.5, 2, "echo: a-0")]
    assert judge(turns, ends).wrong_reply == ["a-c1"]


def test_latency_is_split_by_phase_and_the_worst_wait_by_fault() -> None:
    turns = _turns("a", 6)
    ends = _ends(turns)
    ends["a-c3"] = [End("a-c3", "agent_end", 3.0 + 4.5, 4, "echo: a-3")]
    phases = by_phase(turns, ends, faults_start=2.0, faults_end=3.5)
    assert [phases[p]["count"] for p in ("before", "during", "after")] == [2, 2, 2]
    assert phases["during"]["max_ms"] == 4500.0
    faults = worst_waits(turns, ends, [FaultWindow("worker_sigkill", 6.0, 6.5, "w1")])
    assert faults["worker_sigkill"]["worst_wait_ms"] == 4500.0
    assert faults["worker_sigkill"]["turns_hit"] == 1
    assert faults["worker_sigkill"]["p99_wait_ms"] == 4500.0


def test_a_turn_hit_by_faults_of_two_kinds_is_charged_to_neither_but_to_compound() -> None:
    turns = _turns("a", 3)  # published at 0, 1, 2
    ends = _ends(turns, latency=0.5)
    ends["a-c2"] = [End("a-c2", "agent_end", 2.0 + 9.0, 3, "echo: a-2")]
    windows = [
        FaultWindow("worker_sigkill", 0.2, 1.2, "w1"),
        FaultWindow("worker_sigkill", 1.3, 1.4, "w2"),
        FaultWindow("redis_outage_10s", 3.0, 10.0, "all"),
    ]
    faults = worst_waits(turns, ends, windows)
    # a-c0 (0.0-0.5) and a-c1 (1.0-1.5, two kills of one kind) are the kills' own
    assert faults["worker_sigkill"]["turns_hit"] == 2
    assert faults["worker_sigkill"]["worst_wait_ms"] == 500.0
    assert faults["redis_outage_10s"]["worst_wait_ms"] == 9000.0  # a-c2: after the kills
    assert "compound" not in faults
    ends["a-c1"] = [End("a-c1", "agent_end", 1.0 + 9.0, 2, "echo: a-1")]
    faults = worst_waits(turns, ends, windows)
    assert faults["compound"]["turns_hit"] == 1
    assert faults["compound"]["worst_wait_ms"] == 9000.0
    assert faults["compound"]["details"] == [
        "redis_outage_10s + worker_sigkill: 1 turns, p99 9000.0 ms, max 9000.0 ms"
    ]
    assert faults["worker_sigkill"]["worst_wait_ms"] == 500.0
    data = {"clean": True, "counts": {}, "latency": {}, "faults": faults, "wall_s": 1.0}
    assert "compound: redis_outage_10s + worker_sigkill: 1 turns, p99" in render(data)


def test_the_report_carries_counts_evidence_latency_and_faults() -> None:
    turns = _turns("a", 2)
    ends = _ends(turns)
    del ends["a-c0"]
    verdict = judge(turns, ends)
    verdict.stranded = ["a:running"]
    data = report(
        verdict,
        phases=by_phase(turns, ends, 10.0, 11.0),
        faults=worst_waits(turns, ends, [FaultWindow("redis_outage_10s", 0.0, 10.0)]),
        params={"sessions": 1},
        wall_s=1.234,
    )
    assert data["clean"] is False
    assert data["counts"]["lost"] == 1 and data["counts"]["stranded"] == 1
    assert data["evidence"] == {"lost": ["a-c0"], "stranded": ["a:running"]}
    assert set(data["latency"]) == {"before", "during", "after"}
    assert orjson.loads(orjson.dumps(data)) == data
    assert "redis_outage_10s" in render(data)
    data["lost_turns"] = [{"command_id": "a-c0", "sid": "a", "index": 0, "published_s": 3.0}]
    assert "lost: a-c0 (a #0) published at 3.0 s" in render(data)


def test_a_failed_run_prints_the_log_lines_of_the_sessions_that_lost_turns(
    tmp_path: Path,
) -> None:
    (tmp_path / "w1.log").write_text(
        "12:00 INFO workers: session a took shard 3\n"
        "12:01 WARNING workers._actor: session a: Redis lost acknowledged writes\n"
        "12:02 WARNING workers._actor: session b: something else\n"
    )
    sentinel = tmp_path / "redis" / "sentinel-1"
    sentinel.mkdir(parents=True)
    (sentinel / "sentinel.log").write_text("x\n# +switch-master flotilla 127.0.0.1 1 127.0.0.1 2\n")
    assert log_evidence(tmp_path, {"a"}) == [
        "w1: 12:01 WARNING workers._actor: session a: Redis lost acknowledged writes",
        "sentinel: # +switch-master flotilla 127.0.0.1 1 127.0.0.1 2",
    ]
    assert log_evidence(tmp_path, set()) == []

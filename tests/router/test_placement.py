"""place_shards: balanced, sticky, total."""

from __future__ import annotations

from router import place_shards


def test_every_shard_is_placed_evenly() -> None:
    plan = place_shards({}, ["a", "b", "c"], 64)
    loads = sorted(list(plan.values()).count(w) for w in "abc")
    assert len(plan) == 64 and loads == [21, 21, 22]


def test_live_owners_keep_their_shards() -> None:
    current = {k: ("a" if k % 2 else "b") for k in range(8)}
    assert place_shards(current, ["a", "b"], 8) == current


def test_a_joining_worker_takes_only_what_balance_needs() -> None:
    current = dict.fromkeys(range(8), "a")
    plan = place_shards(current, ["a", "b"], 8)
    moved = [k for k in range(8) if plan[k] != current[k]]
    assert len(moved) == 4 and all(plan[k] == "b" for k in moved)


def test_a_dead_workers_shards_go_to_the_living() -> None:
    current = {k: "abc"[k % 3] for k in range(9)}
    plan = place_shards(current, ["a", "b"], 9)
    assert set(plan.values()) == {"a", "b"}
    assert all(plan[k] == current[k] for k in range(9) if current[k] != "c")


def test_no_live_worker_places_nothing() -> None:
    assert place_shards({0: "a"}, [], 4) == {}

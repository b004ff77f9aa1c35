"""place_shards: the pure placement function of the router leader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def place_shards(
    current: Mapping[int, str | None], live: Sequence[str], shards: int
) -> dict[int, str]:
    """Assign every shard to a live worker, moving as few shards as possible.

    Shards of live owners stay put; orphans go to the least loaded workers; then shards move
    from the most to the least loaded worker until loads differ by at most one.
    """
    if not live:
        return {}
    load: dict[str, list[int]] = {worker: [] for worker in sorted(live)}
    orphans = []
    for shard in range(shards):
        owner = current.get(shard)
        if owner in load:
            load[owner].append(shard)
        else:
            orphans.append(shard)
    for shard in orphans:
        target = min(load, key=lambda w: (len(load[w]), w))
        load[target].append(shard)
    while True:
        busiest = max(load, key=lambda w: (len(load[w]), w))
        idlest = min(load, key=lambda w: (len(load[w]), w))
        if len(load[busiest]) - len(load[idlest]) <= 1:
            break
        load[idlest].append(load[busiest].pop())
    return {shard: worker for worker, owned in load.items() for shard in owned}

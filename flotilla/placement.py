"""Control-plane records in KV: shard assignments (written by the router leader), releases
and worker heartbeats (written by workers)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

SHARD_KEY = "shard."
RELEASED_KEY = "released."


@dataclass(frozen=True, slots=True)
class Assignment:
    """`shard.<k>`: who owns shard k from `epoch` on, and whom it was taken from."""

    shard: int
    worker: str
    epoch: int
    prev: str | None = None
    prev_epoch: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "worker": self.worker,
                "epoch": self.epoch,
                "prev": self.prev,
                "prev_epoch": self.prev_epoch,
            }
        )

    @classmethod
    def decode(cls, shard: int, raw: bytes) -> Assignment:
        value = orjson.loads(raw)
        return cls(
            shard,
            str(value["worker"]),
            int(value["epoch"]),
            value.get("prev"),
            int(value.get("prev_epoch") or 0),
        )


def parse_key(key: str) -> tuple[str, int] | None:
    """('shard' | 'released', k) from a placement key, None for anything else."""
    for prefix in (SHARD_KEY, RELEASED_KEY):
        if key.startswith(prefix):
            try:
                return prefix[:-1], int(key[len(prefix) :])
            except ValueError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A worker's entry in the workers bucket, refreshed every heartbeat interval."""

    worker: str
    started_ms: int
    ts_ms: int
    slots_free: int
    resident: int
    shards: tuple[int, ...]
    metrics_url: str | None
    draining: bool = False
    moving: tuple[int, ...] = ()
    """Shards it holds without consuming them: being let go of (commands still being
    settled) or being taken."""

    def holds(self, shard: int) -> bool:
        """Whether this worker process consumes `shard`, is letting it go or taking it."""
        return shard in self.shards or shard in self.moving

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "worker": self.worker,
                "started_ms": self.started_ms,
                "ts_ms": self.ts_ms,
                "slots_free": self.slots_free,
                "resident": self.resident,
                "shards": list(self.shards),
                "metrics_url": self.metrics_url,
                "draining": self.draining,
                "moving": list(self.moving),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Heartbeat:
        v = orjson.loads(raw)
        return cls(
            str(v["worker"]),
            int(v["started_ms"]),
            int(v["ts_ms"]),
            int(v["slots_free"]),
            int(v["resident"]),
            tuple(v.get("shards") or ()),
            v.get("metrics_url"),
            bool(v.get("draining")),
            tuple(v.get("moving") or ()),
        )

"""A handover seen from the new owner: whether the shard's previous owner, as its heartbeats
show it, may still release the shard, or will not (gone, silent, or a new process that does
not hold it), so that the new owner stops waiting out the handover grace."""

from __future__ import annotations

import time

from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from flotilla.placement import Heartbeat


class PreviousOwner:
    """A shard's previous owner as its heartbeats show it, while its successor waits."""

    def __init__(self, kv: KeyValue | None, worker: str, shard: int, silence: float) -> None:
        self._kv = kv
        self._worker = worker
        self._shard = shard
        self._silence = silence
        """How long an unchanged heartbeat means the owner is dead or frozen."""
        self._revision: int | None = None
        """The heartbeat entry's revision when the wait began (then as last seen)."""
        self._changed = time.monotonic()
        self._fresh = False

    async def gone(self) -> str:
        """Why the previous owner will not release the shard: "stopped" (its heartbeat is
        gone), "silent" (unchanged for the worker timeout: killed or frozen), "not_holding" (a
        heartbeat written since the wait began lists the shard neither as consumed nor as
        being let go: the process that held it is gone); "" while it may still."""
        if self._kv is None:
            return ""
        try:
            entry = await self._kv.get(self._worker)
        except (KeyNotFoundError, KeyDeletedError):
            return "stopped"
        except Exception:  # NATS trouble: no evidence either way
            return ""
        if not entry.value:
            return "stopped"
        if self._revision is not None and entry.revision != self._revision:
            self._fresh = True  # written after the wait began: it has seen the new epoch
            self._changed = time.monotonic()
        elif time.monotonic() - self._changed > self._silence:
            return "silent"
        self._revision = entry.revision
        if self._fresh and not Heartbeat.decode(entry.value).holds(self._shard):
            return "not_holding"
        return ""

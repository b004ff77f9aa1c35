"""Worker-wide command slots: a shard reserves slots before it asks JetStream for messages,
so the worker never holds more undelivered work than it can start (STYLE habit 8)."""

from __future__ import annotations

import asyncio

from workers import _metrics


class SlotPool:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._changed = asyncio.Event()

    def reserve_up_to(self, wanted: int) -> int:
        """Take up to `wanted` free slots without waiting; returns how many were taken."""
        taken = max(0, min(wanted, self.free))
        self.free -= taken
        _metrics.SLOTS_FREE.set(self.free)
        return taken

    def release(self, count: int = 1) -> None:
        self.free += count
        _metrics.SLOTS_FREE.set(self.free)
        self._changed.set()

    async def wait_free(self) -> None:
        """Return once at least one slot is free."""
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()

"""The Redis key layout of a fleet, shared by workers, router, gateway and SDK.

Every key of one session carries the hash tag `{sid}`, so a Redis Cluster keeps them in one
slot and a Lua script may update them together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def state(self, sid: str) -> str:
        """Hash: `e` owner epoch, `v` version, `d` the SessionState JSON."""
        return f"{self.prefix}:s:{{{sid}}}"

    def history(self, sid: str) -> str:
        """List: the session's messages, appended at step boundaries."""
        return f"{self.prefix}:h:{{{sid}}}"

    def workspace(self, sid: str) -> str:
        """Hash: the session workspace, relative file path → content (bytes)."""
        return f"{self.prefix}:ws:{{{sid}}}"

    def checkpoint(self, sid: str, checkpoint_id: str) -> str:
        """Hash: one checkpoint: `d` state JSON, `h` history (JSON list), `w` workspace."""
        return f"{self.prefix}:ck:{{{sid}}}:{checkpoint_id}"

    def checkpoints(self, sid: str) -> str:
        """Sorted set: checkpoint id → creation time (ms), for listing and the count limit."""
        return f"{self.prefix}:cks:{{{sid}}}"

    def active(self, shard: int) -> str:
        """Set: sessions of `shard` whose persisted state shows an unfinished turn."""
        return f"{self.prefix}:active:{shard}"

    @property
    def hibernation(self) -> str:
        """Sorted set: `tenant.sid` of idle sessions → when hibernation is due (ms)."""
        return f"{self.prefix}:hibernate-at"

    @property
    def approval_timeouts(self) -> str:
        """Sorted set: `tenant.sid` of sessions with approvals that time out → the earliest
        deadline (ms); the router expires those of sessions no worker holds."""
        return f"{self.prefix}:approval-timeout-at"

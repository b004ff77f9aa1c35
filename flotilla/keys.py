"""The Redis key layout of a fleet, shared by workers, router, gateway and SDK.

A session is named by its tenant and its id: session ids are chosen per tenant, so two
tenants may each have a session "support-1" and neither can tell the other's exists. Every
key of one session carries the hash tag `{<tenant>.<sid>}`, so a Redis Cluster keeps them in
one slot and a Lua script may update them together. The indexes over sessions (unfinished
turns, the hibernation and approval-timeout schedules) are kept per shard, so a cluster
spreads their writes, which come with nearly every save, over many slots.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def state(self, tenant: str, sid: str) -> str:
        """Hash: `e` owner epoch, `v` version, `d` the SessionState JSON."""
        return f"{self.prefix}:s:{{{tenant}.{sid}}}"

    def history(self, tenant: str, sid: str) -> str:
        """List: the session's messages, appended at step boundaries."""
        return f"{self.prefix}:h:{{{tenant}.{sid}}}"

    def workspace(self, tenant: str, sid: str) -> str:
        """Hash: the session workspace, relative file path → content (bytes)."""
        return f"{self.prefix}:ws:{{{tenant}.{sid}}}"

    def checkpoint(self, tenant: str, sid: str, checkpoint_id: str) -> str:
        """Hash: one checkpoint: `d` state JSON, `h` history (JSON list), `w` workspace."""
        return f"{self.prefix}:ck:{{{tenant}.{sid}}}:{checkpoint_id}"

    def checkpoints(self, tenant: str, sid: str) -> str:
        """Sorted set: checkpoint id → creation time (ms), for listing and the count limit."""
        return f"{self.prefix}:cks:{{{tenant}.{sid}}}"

    def active(self, shard: int) -> str:
        """Set: `tenant.sid` of the sessions of `shard` whose persisted state shows an
        unfinished turn."""
        return f"{self.prefix}:active:{shard}"

    def hibernation(self, shard: int) -> str:
        """Sorted set: `tenant.sid` of the idle sessions of `shard` → when hibernation is
        due (ms)."""
        return f"{self.prefix}:hibernate-at:{shard}"

    def approval_timeouts(self, shard: int) -> str:
        """Sorted set: `tenant.sid` of the sessions of `shard` with approvals that time out
        → the earliest deadline (ms); the router expires those of sessions no worker holds."""
        return f"{self.prefix}:approval-timeout-at:{shard}"


def session_member(tenant: str, sid: str) -> str:
    """How the fleet-wide indexes name a session: `tenant.sid` (neither contains a dot)."""
    return f"{tenant}.{sid}"


def parse_member(member: str | bytes) -> tuple[str, str]:
    """(tenant, sid) of an index member written by `session_member`."""
    text = member.decode() if isinstance(member, bytes) else member
    tenant, _, sid = text.partition(".")
    return tenant, sid

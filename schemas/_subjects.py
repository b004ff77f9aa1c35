"""Subject, stream and bucket names of PROTOCOL §2, derived from one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas._ids import NO_GROUP, is_token

CHANNELS: Final = ("progress", "control", "monitor")


@dataclass(frozen=True, slots=True)
class ShardedCommandSubject:
    """A command subject as stored by FLOTILLA_CMD: prefix.cmd.<shard>.<tenant>.<sid>.<op>."""

    shard: int
    tenant: str
    sid: str
    op: str


@dataclass(frozen=True, slots=True)
class Subjects:
    """Every subject and JetStream name of one fleet, from its prefix (default `flotilla`)."""

    prefix: str = "flotilla"

    def __post_init__(self) -> None:
        if not is_token(self.prefix):
            raise ValueError(f"subject prefix must match [A-Za-z0-9_-]{{1,64}}: {self.prefix!r}")

    # -- names of streams and buckets -------------------------------------------------------
    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")

    @property
    def cmd_stream(self) -> str:
        return f"{self._upper}_CMD"

    @property
    def evt_stream(self) -> str:
        return f"{self._upper}_EVT"

    @property
    def dlq_stream(self) -> str:
        return f"{self._upper}_DLQ"

    @property
    def hook_stream(self) -> str:
        """Work queue of webhook jobs: workers publish, gateway replicas deliver."""
        return f"{self._upper}_HOOK"

    @property
    def hook_consumer(self) -> str:
        """The one durable consumer of the hook stream, shared by every gateway replica."""
        return f"{self.prefix}-webhooks"

    @property
    def audit_stream(self) -> str:
        return f"{self._upper}_AUDIT"

    @property
    def workers_bucket(self) -> str:
        """KV: one key per live worker, refreshed by its heartbeat."""
        return f"{self._upper}_WORKERS"

    @property
    def placement_bucket(self) -> str:
        """KV: `shard.<k>` → owner and epoch; `released.<k>` → the epoch a previous owner let go."""
        return f"{self._upper}_PLACEMENT"

    @property
    def router_bucket(self) -> str:
        """KV: `leader` → the router replica that currently leads, and `activity` bookkeeping."""
        return f"{self._upper}_ROUTER"

    @property
    def tools_bucket(self) -> str:
        """KV: `<tenant>.<name>` → the spec of an external tool, refreshed while it is served."""
        return f"{self._upper}_TOOLS"

    def shard_consumer(self, shard: int) -> str:
        return f"shard-{shard}"

    # -- commands ----------------------------------------------------------------------------
    def cmd(self, tenant: str, sid: str, op: str) -> str:
        """Where a client publishes a command."""
        return f"{self.prefix}.cmd.{tenant}.{sid}.{op}"

    @property
    def cmd_wildcard(self) -> str:
        return f"{self.prefix}.cmd.*.*.*"

    def cmd_transform_destination(self, shards: int) -> str:
        return (
            f"{self.prefix}.cmd.{{{{partition({shards},2)}}}}"
            ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
        )

    @property
    def cmd_stored_wildcard(self) -> str:
        return f"{self.prefix}.cmd.*.*.*.*"

    def shard_filter(self, shard: int) -> str:
        return f"{self.prefix}.cmd.{shard}.>"

    def session_filter(self, shard: int, tenant: str, sid: str) -> str:
        """Every stored command of one session (its shard is in the subject)."""
        return f"{self.prefix}.cmd.{shard}.{tenant}.{sid}.*"

    def parse_stored_cmd(self, subject: str) -> ShardedCommandSubject | None:
        """Split a stored (partitioned) command subject; None when it has the wrong shape."""
        parts = subject.split(".")
        if len(parts) != 6 or parts[0] != self.prefix or parts[1] != "cmd":
            return None
        try:
            shard = int(parts[2])
        except ValueError:
            return None
        return ShardedCommandSubject(shard, parts[3], parts[4], parts[5])

    # -- events ------------------------------------------------------------------------------
    def evt(self, tenant: str, group: str | None, sid: str, channel: str, type_: str) -> str:
        return f"{self.prefix}.evt.{tenant}.{group or NO_GROUP}.{sid}.{channel}.{type_}"

    @property
    def evt_all(self) -> str:
        return f"{self.prefix}.evt.>"

    def evt_session(self, sid: str, channel: str | None = None, *, tenant: str = "*") -> str:
        """Every event of one session (of one tenant, when given: session ids are chosen per
        tenant), optionally of one channel."""
        tail = f"{channel}.>" if channel else ">"
        return f"{self.prefix}.evt.{tenant}.*.{sid}.{tail}"

    def evt_group(self, group: str, channel: str | None = None, *, tenant: str = "*") -> str:
        """Every event of one group (of one tenant, when given), optionally of one channel."""
        tail = f"*.{channel}.>" if channel else ">"
        return f"{self.prefix}.evt.{tenant}.{group}.{tail}"

    def evt_tenant(self, tenant: str, channel: str | None = None) -> str:
        tail = f"*.*.{channel}.>" if channel else ">"
        return f"{self.prefix}.evt.{tenant}.{tail}"

    # -- dead letters, registry, audit -------------------------------------------------------
    def dlq(self, tenant: str, sid: str) -> str:
        return f"{self.prefix}.dlq.{tenant}.{sid}"

    @property
    def dlq_all(self) -> str:
        return f"{self.prefix}.dlq.>"

    def registry(self, verb: str) -> str:
        return f"{self.prefix}.registry.{verb}"

    @property
    def registry_changed(self) -> str:
        return f"{self.prefix}.registry.changed"

    def audit(self, tenant: str, action: str) -> str:
        return f"{self.prefix}.audit.{tenant}.{action.replace('.', '_')}"

    @property
    def audit_all(self) -> str:
        return f"{self.prefix}.audit.>"

    # -- webhook jobs ------------------------------------------------------------------------
    def hook(self, tenant: str, sid: str) -> str:
        """Where a worker publishes the webhook job of one session's event."""
        return f"{self.prefix}.hook.{tenant}.{sid}"

    @property
    def hook_all(self) -> str:
        return f"{self.prefix}.hook.>"

    # -- external tools ----------------------------------------------------------------------
    def tool(self, tenant: str, name: str) -> str:
        """Where a worker sends a request to an external tool (request/reply, queue group)."""
        return f"{self.prefix}.tool.{tenant}.{name}"

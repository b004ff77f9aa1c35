"""Recipe 11, AuditEvent into a database in one line: the fleet's audit records in SQLite.

Workers and routers publish one `schemas.AuditEvent` (schema v2: actor, action, target,
before, after, metadata, tags) per turn start and stop, approval asked and answered, model
switch, checkpoint and registry change, on core NATS at
`<prefix>.audit.<tenant>.<action with dots as _>`. A plain nats-py subscription parses each
record with the schema and inserts it as one row of the recipe's `audit_logs` table (here in
SQLite: JSON as text, plus the v2 `tenant` and `tags`). Records are never awaited by a
broker: only live subscribers see them.

Secrets never reach a record: the `api_key` in the session's provider options shows up as
`***` in the model switch's before and after.

    python -m examples.audit_sink
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

from nats.aio.msg import Msg

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import AuditEvent, Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    tenant TEXT,
    occurred_at TEXT NOT NULL,
    before TEXT,
    after TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]',
    schema_version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS idx_audit_actor ON audit_logs (actor_type, actor_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS idx_audit_action ON audit_logs (action, occurred_at DESC);
"""
INSERT = """
INSERT INTO audit_logs (actor_type, actor_id, action, target_type, target_id, tenant,
    occurred_at, before, after, metadata, tags, schema_version)
VALUES (:actor_type, :actor_id, :action, :target_type, :target_id, :tenant,
    :occurred_at, :before, :after, :metadata, :tags, :schema_version)
"""
COLUMNS = ("id", "actor_type", "actor_id", "action", "target_type", "target_id", "after")

API_KEY = "sk-audit-demo-0123456789"
"""A made-up key in the session's provider options: no row may contain it."""
WRITE = {"name": "write_file", "arguments": {"path": "refund.txt", "content": "ORD-7: $20\n"}}
SCRIPT: dict[str, Any] = {
    "api_key": API_KEY,
    "script": [{"tool_calls": [WRITE]}, {"text": "Refund recorded."}],
}
EXPECTED = frozenset(
    {
        "agent.turn.start",
        "approval.requested",
        "approval.resolved",
        "agent.turn.stop",
        "checkpoint.save",
        "agent.model.switch",
    }
)
"""The actions this example's session is recorded with."""


def row_of(record: AuditEvent) -> dict[str, Any]:
    """The `audit_logs` row of one record."""
    return {
        **record.model_dump(include={"actor_type", "actor_id", "action", "target_type"}),
        **record.model_dump(include={"target_id", "tenant", "schema_version"}),
        "occurred_at": record.occurred_at.isoformat(),
        "before": None if record.before is None else json.dumps(record.before),
        "after": None if record.after is None else json.dumps(record.after),
        "metadata": json.dumps(record.metadata),
        "tags": json.dumps(record.tags),
    }


def read_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The main columns of every row of `audit_logs`, oldest first."""
    cursor = db.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_logs ORDER BY id")
    return [dict(zip(COLUMNS, row, strict=True)) for row in cursor]


class AuditSink:
    """Inserts every audit record it is given into `audit_logs` and tells who waits."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)
        self._seen: set[str] = set()
        self._changed = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        record = AuditEvent.model_validate_json(msg.data)
        self.db.execute(INSERT, row_of(record))  # the one line
        async with self._changed:
            self._seen.add(record.action)
            self._changed.notify_all()

    async def wait_for(self, actions: Iterable[str]) -> None:
        """Return once a record of each of `actions` is stored (the caller bounds the wait)."""
        wanted = set(actions)
        async with self._changed:
            await self._changed.wait_for(lambda: wanted <= self._seen)


async def _audited_turn(fleet: Fleet, sink: AuditSink) -> list[Event]:
    """The session's turn, checkpoint and model switch; returns once all are in `sink`."""
    session = await fleet.create_agent(
        session_id=f"s-{secrets.token_hex(4)}",
        model="mock:script",
        tools=["write_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
        provider_opts=SCRIPT,
    )

    async def approve(event: Event) -> None:
        if event.type == "approval_required":
            await session.approve(str(event.data["approval_id"]))

    try:
        await session.prompt("Refund order ORD-7.")
        events = await turn_events(session, on_event=approve)
        await session.send("checkpoint", label="after-refund")
        await session.switch_model("mock:echo", provider_opts={"api_key": API_KEY})
        while events[-1].type != "model_switched":  # checkpoint_saved comes first
            events.append(await session.next_event(timeout=30))
        async with asyncio.timeout(30):
            await sink.wait_for(EXPECTED)
        return events
    finally:
        await session.stop()


async def main(fleet: Fleet, *, db: sqlite3.Connection | None = None) -> list[Event]:
    """A turn with an approved write, a checkpoint and a model switch, audited into `db`.

    `db` defaults to an in-memory database.
    """
    conn = fleet.nc
    sink = AuditSink(db or sqlite3.connect(":memory:"))
    sub = await conn.subscribe(
        f"{fleet.subjects.prefix}.audit.{fleet.tenant}.>", cb=sink.on_message
    )
    await conn.flush()  # subscribed at the server before the first record goes out
    try:
        events = await _audited_turn(fleet, sink)
    finally:
        await sub.unsubscribe()
    for row in read_rows(sink.db):
        print("  ".join(f"{k}={row[k]}" for k in COLUMNS))
    return events


if __name__ == "__main__":
    run_example(main)

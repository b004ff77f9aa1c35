"""Approval timeouts of one resident session: a `reject` through the command stream when a
pending approval expires, so the timeout is applied in order with every other command."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from schemas import SessionState, approval_timeout
from workers._context import WorkerContext
from workers._events import now_ms


class ApprovalTimers:
    def __init__(
        self, ctx: WorkerContext, tenant: str, sid: str, *, resident: Callable[[], bool]
    ) -> None:
        self._ctx = ctx
        self._tenant = tenant
        self._sid = sid
        self._resident = resident
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def arm(self, state: SessionState) -> None:
        """One timer per pending approval with a deadline; none for the others."""
        live = {a.approval_id: a for a in state.pending_approvals if a.expires_ms}
        for approval_id in [a for a in self._tasks if a not in live]:
            self._tasks.pop(approval_id).cancel()
        for approval_id, approval in live.items():
            if approval_id not in self._tasks:
                delay = max(0.0, ((approval.expires_ms or 0) - now_ms()) / 1000)
                self._tasks[approval_id] = asyncio.create_task(
                    self._expire(approval_id, delay),
                    name=f"approval-timeout-{approval_id}",
                )

    async def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _expire(self, approval_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._resident():
            return
        body, msg_id = approval_timeout(self._tenant, self._sid, approval_id)
        await self._ctx.commands.publish(
            tenant=self._tenant, sid=self._sid, op="reject", body=body, msg_id=msg_id
        )

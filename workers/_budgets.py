"""Daily budgets of registry profiles: tokens and USD per tenant per profile, in Redis.

Usage is added after each LLM call (one MULTI/EXEC: both counters and the expiry) and read
before the next one, so a request is refused once the day's usage has reached a limit; calls
already in flight when it is reached still count. Days are UTC; counters expire after two.
Enforcement fails closed (Redis unreachable before a call: the turn stops and resumes later).

Key: `p:budget:{<tenant>}:<profile>:<yyyymmdd>` (hash: `tokens`, `usd`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from flotilla.runtime import REDIS_ERRORS
from schemas import Budget
from workers.errors import StoreUnavailable

log = logging.getLogger(__name__)

_KEEP_S = 2 * 24 * 3600
_UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)


class BudgetMeter:
    """Reads and adds the usage counted against profile budgets."""

    def __init__(
        self, redis: aioredis.Redis, *, key_prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._clock = clock

    def key(self, tenant: str, profile: str) -> str:
        day = time.strftime("%Y%m%d", time.gmtime(self._clock()))
        return f"{self._prefix}:budget:{{{tenant}}}:{profile}:{day}"

    async def spent(self, budget: Budget, *, tenant: str, profile: str) -> str | None:
        """Which limit of `budget` today's usage has reached, described; None if none."""
        try:
            tokens, usd = await self._redis.hmget(self.key(tenant, profile), ["tokens", "usd"])
        except _UNAVAILABLE as exc:
            raise StoreUnavailable.of(exc, f"budget of profile {profile!r}") from exc
        if budget.tokens_per_day is not None and int(tokens or 0) >= budget.tokens_per_day:
            return f"{budget.tokens_per_day} tokens"
        if budget.usd_per_day is not None and float(usd or 0) >= budget.usd_per_day:
            return f"{budget.usd_per_day} USD"
        return None

    async def add(self, *, tenant: str, profile: str, tokens: int, usd: float) -> None:
        key = self.key(tenant, profile)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(key, "tokens", tokens)
        pipe.hincrbyfloat(key, "usd", usd)
        pipe.expire(key, _KEEP_S)
        try:
            await pipe.execute()
        except _UNAVAILABLE as exc:
            # The answer is out already: failing the turn now would only have the call made
            # and paid again when it resumes. The usage of this one call goes uncounted.
            log.warning("budget of profile %r: usage not counted (%r)", profile, exc)

"""Per API key rate limiting and metering, shared by every gateway replica through Redis.

Keys (`key_id` is the hex id of an API key's digest, never the key itself):

    {prefix}:gw:rl:{<key_id>}               string: the bucket's theoretical arrival time, µs
                                            (GCRA)
    {prefix}:gw:meter:{<key_id>}            hash: requests, prompts, tokens, cost_usd
    {prefix}:gw:metered:{<key_id>}:<seq>    string: the turn (agent_end event) of that
                                            FLOTILLA_EVT sequence is in the key's meter already
                                            (expires with the event)
    {prefix}:gw:meter-keys                  set: every key id the meter has counted

A key's bucket, meter and turn markers share the hash tag `{<key_id>}`, so each script
touches one Redis Cluster slot. The fleet-wide key set is added to outside the scripts, once
per key id and process (`_MeteredKeys`), so a request still costs one command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from flotilla.runtime import REDIS_UNREACHABLE
from schemas import Event, Usage

__all__ = ["Meter", "RateLimiter", "usage_handler"]

RATE_LIMITED = Counter(
    "flotilla_gateway_rate_limited_total", "Requests refused by the per key rate limiter"
)
LIMITER_SECONDS = Histogram(
    "flotilla_gateway_rate_limiter_seconds",
    "Duration of one rate limiter round trip to Redis (take or admit)",
    buckets=(0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
USAGE_EVENTS = Counter(
    "flotilla_gateway_usage_events_total",
    "agent_end events seen by the meter: metered, unowned (no gateway key owns the session) "
    "or repeat (a redelivery, already metered)",
    ["outcome"],
)
METERED_TOKENS = Counter("flotilla_gateway_metered_tokens_total", "Tokens metered to API keys")
METERED_COST = Counter("flotilla_gateway_metered_cost_usd_total", "Cost in USD metered to API keys")

log = logging.getLogger(__name__)

_KEY_ID = re.compile(r"[0-9a-f]{8,128}")
_COUNTERS = ("requests", "prompts", "tokens")


# GCRA, the token bucket kept as one number: the time at which the bucket would be full
# again ("theoretical arrival time"). KEYS: bucket; optionally the meter hash. ARGV: µs per
# token, capacity (0: unlimited). The clock is the server's TIME, so replicas with skewed
# clocks agree. Returns -1 when admitted (and counts the request when the meter is given),
# else the µs until one token is available. A refused request changes nothing: hammering
# an empty bucket does not push the next token further away.
_ADMIT = """
local capacity = tonumber(ARGV[2])
if capacity > 0 then
  local interval = tonumber(ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) + interval
  local wait = tat - now - capacity * interval
  if wait > 0 then return wait end
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
if #KEYS == 2 then redis.call('HINCRBY', KEYS[2], 'requests', 1) end
return -1
"""

# Adds to a meter, all counters at once. KEYS: meter hash; optionally a turn's marker.
# ARGV: requests, prompts, tokens, cost (USD); with a marker, its ttl (s). A turn is counted
# once: a redelivered agent_end finds its marker and changes nothing. Returns 1 when
# counted, 0 for a repeat.
_COUNT = """
if #KEYS == 2 and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return 0 end
local fields = {'requests', 'prompts', 'tokens'}
for i = 1, 3 do
  if tonumber(ARGV[i]) ~= 0 then redis.call('HINCRBY', KEYS[1], fields[i], ARGV[i]) end
end
if tonumber(ARGV[4]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', ARGV[4]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    prefix: str

    def bucket(self, key_id: str) -> str:
        return f"{self.prefix}:gw:rl:{{{_checked(key_id)}}}"

    def meter(self, key_id: str) -> str:
        return f"{self.prefix}:gw:meter:{{{_checked(key_id)}}}"

    @property
    def meter_keys(self) -> str:
        return f"{self.prefix}:gw:meter-keys"

    def metered(self, key_id: str, seq: int) -> str:
        return f"{self.prefix}:gw:metered:{{{_checked(key_id)}}}:{int(seq)}"


def _checked(key_id: str) -> str:
    """Refuse anything but a hex id, so a raw API key can never become a Redis key."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError("a key id must be 8 to 128 lowercase hex characters")
    return key_id


class _MeteredKeys:
    """Adds key ids to the fleet-wide set of metered keys: after a key's first count in this
    process only, so the hot path stays one command (the set is in another Cluster slot than
    the key's meter). An addition that fails is made at the key's next count."""

    _REMEMBERED = 100_000
    """Key ids come from configured API keys; the bound only keeps memory finite."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self._redis = redis
        self._key = key
        self._added: set[str] = set()

    async def add(self, key_id: str) -> None:
        if key_id in self._added:
            return
        try:
            await self._redis.sadd(self._key, key_id)
        except REDIS_UNREACHABLE as exc:  # the count itself is done: do not fail it
            log.warning("meter: key id not listed yet (%s)", type(exc).__name__)
            return
        if len(self._added) >= self._REMEMBERED:
            self._added.clear()
        self._added.add(key_id)


class RateLimiter:
    """A token bucket per API key: `burst` tokens, refilled at `rpm` per minute.

    `rpm <= 0` disables limiting; `burst` None or 0 means equal to `rpm` (GATEWAY_RATE_LIMIT_*).
    An idle bucket's key expires when the bucket would be full again, so Redis keeps only the
    buckets of keys used within the last `burst / rpm` minutes.
    """

    def __init__(
        self, redis: aioredis.Redis, *, key_prefix: str, rpm: int, burst: int | None = None
    ) -> None:
        if burst is not None and burst < 0:
            raise ValueError("burst must be positive (or 0 / None: equal to rpm)")
        self.rpm = rpm
        self.burst = burst or max(rpm, 0)
        self._interval_us = max(1, round(60_000_000 / rpm)) if rpm > 0 else 0
        self._keys = _Keys(key_prefix)
        self._script = redis.register_script(_ADMIT)
        self._metered = _MeteredKeys(redis, self._keys.meter_keys)

    @property
    def enabled(self) -> bool:
        return self.rpm > 0

    async def take(self, key_id: str) -> float | None:
        """Take a token: None when allowed, else the seconds until one is available."""
        if not self.enabled:
            return None
        return await self._run([self._keys.bucket(key_id)])

    async def admit(self, key_id: str) -> float | None:
        """`take`, and count the request in the key's meter when admitted; one round trip.

        Only admitted requests count: the meter says what a key was served, so a client
        retrying into a 429 does not inflate it. Refusals show in
        `flotilla_gateway_rate_limited_total`.
        """
        wait = await self._run([self._keys.bucket(key_id), self._keys.meter(key_id)])
        if wait is None:
            await self._metered.add(key_id)
        return wait

    async def _run(self, keys: list[str]) -> float | None:
        with LIMITER_SECONDS.time():
            wait_us = int(
                await self._script(
                    keys=keys, args=[self._interval_us, self.burst if self.enabled else 0]
                )
            )
        if wait_us < 0:
            return None
        RATE_LIMITED.inc()
        return wait_us / 1_000_000


class Meter:
    """Per key counters of requests, prompts, tokens and cost, shared by every replica."""

    def __init__(
        self, redis: aioredis.Redis, *, key_prefix: str, turn_memory_s: float = 24 * 3600.0
    ) -> None:
        self._redis = redis
        self._keys = _Keys(key_prefix)
        self._turn_memory_s = max(1, int(turn_memory_s))
        self._count = redis.register_script(_COUNT)
        self._metered = _MeteredKeys(redis, self._keys.meter_keys)

    async def count_turn(self, key_id: str, seq: int, *, tokens: int, cost_usd: float) -> bool:
        """Add one turn's tokens and cost, once per `seq` (the agent_end's FLOTILLA_EVT
        sequence): a redelivery of the same event counts nothing. The marker is kept for
        `turn_memory_s`, the event stream's retention, beyond which no redelivery comes.
        Returns whether it counted."""
        keys = [self._keys.meter(key_id), self._keys.metered(key_id, seq)]
        args: list[str | int] = [0, 0, int(tokens), repr(float(cost_usd)), self._turn_memory_s]
        counted = bool(await self._count(keys=keys, args=args))
        if counted:
            await self._metered.add(key_id)
        return counted

    async def count(
        self,
        key_id: str,
        *,
        requests: int = 0,
        prompts: int = 0,
        tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Add to the key's counters in one round trip (one script: readers see all or
        none)."""
        if not (requests or prompts or tokens or cost_usd):
            return
        args: list[str | int] = [int(requests), int(prompts), int(tokens), repr(float(cost_usd))]
        await self._count(keys=[self._keys.meter(key_id)], args=args)
        await self._metered.add(key_id)

    async def usage(self, key_id: str) -> dict[str, float | int]:
        """The key's counters (zeros for a key never counted)."""
        raw = await self._redis.hgetall(self._keys.meter(key_id))
        values = {_text(k): _text(v) for k, v in raw.items()}
        usage: dict[str, float | int] = {field: int(values.get(field, 0)) for field in _COUNTERS}
        usage["cost_usd"] = float(values.get("cost_usd", 0.0))
        return usage

    async def tracked_keys(self) -> int:
        """How many API keys the meter has counted (the `meter.tracked_keys` of /healthz)."""
        return int(await self._redis.scard(self._keys.meter_keys))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def usage_handler(
    meter: Meter, owner_of: Callable[[str, str], Awaitable[str | None]]
) -> Callable[[Event], Awaitable[None]]:
    """An event handler adding each turn's tokens and cost (`agent_end`) to its owner's meter.

    `owner_of(tenant, sid)` names the key id that owns a session, None for sessions no gateway key
    created (SDK or plain NATS clients), which are not metered.
    """

    async def meter_turn(event: Event) -> None:
        if event.type != "agent_end":
            return
        key_id = await owner_of(event.tenant, event.sid)
        if key_id is None:
            USAGE_EVENTS.labels("unowned").inc()
            return
        if event.seq is None:
            raise ValueError("the meter takes agent_end events read from the stream (with seq)")
        usage = Usage.model_validate(event.data.get("usage") or {})
        if not await meter.count_turn(
            key_id, event.seq, tokens=usage.total_tokens, cost_usd=usage.cost_usd
        ):
            USAGE_EVENTS.labels("repeat").inc()
            return
        USAGE_EVENTS.labels("metered").inc()
        METERED_TOKENS.inc(usage.total_tokens)
        METERED_COST.inc(usage.cost_usd)

    return meter_turn

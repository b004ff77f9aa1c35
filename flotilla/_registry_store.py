"""The provider registry in Redis: profiles in stored form and one revision counter.

Every change runs as one Lua script that writes the profile and increments the counter, so
revisions are a total order of changes whichever router replica made them, and a reader
that takes the counter and the hash in one transaction sees a consistent set.

Keys (`p` is the Redis key prefix; the `{registry}` hash tag keeps them in one slot):
`p:{registry}:rev` (integer) and `p:{registry}:profiles` (hash: name → profile JSON).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from schemas import ProviderProfile

log = logging.getLogger(__name__)

_PUT = """
local previous = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {redis.call('INCR', KEYS[1]), previous}
"""
_DELETE = """
local previous = redis.call('HGET', KEYS[2], ARGV[1])
if not previous then return {0, false} end
redis.call('HDEL', KEYS[2], ARGV[1])
return {redis.call('INCR', KEYS[1]), previous}
"""


class RegistryStore:
    """Reads and writes of the registry; profiles are stored as given (secrets sealed)."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._rev_key = f"{key_prefix}:{{registry}}:rev"
        self._profiles_key = f"{key_prefix}:{{registry}}:profiles"

    async def put(self, profile: ProviderProfile) -> tuple[int, ProviderProfile | None]:
        """Store `profile`; returns the new revision and the profile it replaced."""
        result: Any = await self._redis.eval(
            _PUT, 2, self._rev_key, self._profiles_key, profile.name, profile.model_dump_json()
        )
        return int(result[0]), _parse(profile.name, result[1])

    async def delete(self, name: str) -> tuple[int, ProviderProfile | None] | None:
        """Remove a profile; returns the new revision and what was removed, None if absent."""
        result: Any = await self._redis.eval(_DELETE, 2, self._rev_key, self._profiles_key, name)
        if not result[0]:
            return None
        return int(result[0]), _parse(name, result[1])

    async def get(self, name: str) -> ProviderProfile | None:
        return _parse(name, await self._redis.hget(self._profiles_key, name))

    async def load(self) -> tuple[int, dict[str, ProviderProfile]]:
        """The revision and every profile, read in one transaction."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(self._rev_key)
        pipe.hgetall(self._profiles_key)
        revision, raw = await pipe.execute()
        profiles = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            profile = _parse(name, value)
            if profile is not None:
                profiles[name] = profile
        return int(revision or 0), profiles

    async def revision(self) -> int:
        return int(await self._redis.get(self._rev_key) or 0)


def _parse(name: str, raw: bytes | str | None) -> ProviderProfile | None:
    if not raw:
        return None
    try:
        return ProviderProfile.model_validate_json(raw)
    except ValidationError:
        # Never log the value: it holds the profile's (possibly unsealed) secrets.
        log.warning("registry: stored profile %r is not a valid profile; skipped", name)
        return None

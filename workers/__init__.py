"""The Flotilla worker: consumes command shards, hosts session actors, runs turns."""

from workers._worker import Worker

__all__ = ["Worker"]

"""The Flotilla router: leadership, membership, shard placement, hibernation sweep."""

from router._placement import place_shards
from router._router import Router

__all__ = ["Router", "place_shards"]

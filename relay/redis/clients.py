"""redis-py clients for the relay's work off the per-message path: presence reads, disconnect orders."""

from functools import lru_cache

import redis


@lru_cache(maxsize=4)
def sync_client(url: str) -> redis.Redis:
    """A client of the Redis at ``url`` that decodes replies, shared by the process."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)

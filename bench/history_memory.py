"""What delivery history costs in Redis memory: ids × entries of a given payload, measured.

Writes ``ids`` streams of ``entries`` pushes each (through the relay's own script) under a
prefix of its own, reads ``used_memory`` before and after, deletes what it wrote.
"""

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(redis_url: str, ids: int = 1000, entries: int = 100, payload_bytes: int = 100) -> dict:
    """Redis memory for ``ids`` × ``entries`` kept deliveries of ``payload_bytes`` of JSON each."""
    import redis

    from relay.redis.streams import Settings, append_pushes

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"bench-memory-{uuid.uuid4().hex[:8]}"
    payload = json.dumps({"text": "x" * max(0, payload_bytes - 11)}, separators=(",", ":"))
    settings = Settings(size=entries, ttl=600, stream_ttl=3600)
    try:
        before = client.info("memory")["used_memory"]
        client_ids = [f"client-{i}" for i in range(ids)]
        for _ in range(entries):
            append_pushes(client, prefix, settings, client_ids, payload)
        after = client.info("memory")["used_memory"]
    finally:
        for keys in _batches(client.scan_iter(f"{prefix}:*", count=1000), 1000):
            client.delete(*keys)
        client.close()
    total = after - before
    return {
        "ids": ids,
        "entries": entries,
        "payload_bytes": len(payload),
        "used_memory_bytes": total,
        "bytes_per_entry": total / (ids * entries),
        "bytes_per_id": total / ids,
    }


def _batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    print(json.dumps(measure(args.redis_url, args.ids, args.entries, args.payload_bytes), indent=2))


if __name__ == "__main__":
    main()

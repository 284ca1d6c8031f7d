"""Delivery history: one ordered stream per client id, kept in Redis; the scripts and the rules.

Every delivery to an id gets the next ``offset`` of that id's stream, within an
``epoch`` that changes when the stream is lost (Redis flushed or restarted, or the id
idle longer than ``RELAY_HISTORY_STREAM_TTL``). One Lua script stores the entry and
publishes it on the id's bus channel, so the stored order and the live order are the
same, and frames and pushes to one id are ordered relative to each other.

In Redis, per id: a hash ``<prefix>:stream:<id>`` (``e``: the epoch, ``o``: the last
offset) and a list ``<prefix>:history:<id>`` of the last ``RELAY_HISTORY_SIZE``
entries (``<offset>\\n<unix time>\\n<sender>\\n<payload JSON>``), oldest first. An entry
older than ``RELAY_HISTORY_TTL`` seconds is no longer kept; the list itself expires
that long after its last entry.

``relay.redis.history`` runs the scripts on the per-message path; ``append_pushes``
runs them for server pushes, with redis-py.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.conf import conf
from relay.redis.keys import bus_channel, history_key, stream_key

# A new epoch: the Redis server's clock when the stream (re)starts, in microseconds.
_NEW_EPOCH = """
local function new_epoch(now)
  return string.format('%x.%x', tonumber(now[1]), tonumber(now[2]))
end
"""

#: KEYS: stream, history. ARGV: bus channel, sender ('' for a push), payload JSON,
#: history size, history TTL, stream TTL. Returns {epoch, offset}.
APPEND_SCRIPT = (
    _NEW_EPOCH
    + """
local now = redis.call('TIME')
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = new_epoch(now)
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', KEYS[2], offset .. '\\n' .. now[1] .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'h\\n' .. epoch .. '\\n' .. offset .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return {epoch, offset}
"""
)

#: KEYS: stream, history. ARGV: stream TTL. Returns {epoch, last offset, unix time, entries}.
#: A stream that does not exist starts (offset 0), so the reader learns its epoch.
READ_SCRIPT = (
    _NEW_EPOCH
    + """
local now = redis.call('TIME')
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = new_epoch(now)
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {epoch, redis.call('HGET', KEYS[1], 'o'), now[1], redis.call('LRANGE', KEYS[2], 0, -1)}
"""
)

APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest().encode()
READ_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest().encode()


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream is: its ``epoch`` and the ``offset`` of its last entry (0: none yet)."""

    epoch: str
    offset: int

    def covers(self, other: "Position") -> bool:
        """Whether ``other`` is at or before this position, in the same epoch."""
        return other.epoch == self.epoch and other.offset <= self.offset


@dataclass(frozen=True, slots=True)
class Entry:
    """One delivery kept in a stream."""

    offset: int
    time: int
    sender: str | None
    payload_json: str


@dataclass(frozen=True, slots=True)
class Stream:
    """A stream as read for a resume: its position, Redis's clock, the entries still in the list."""

    position: Position
    now: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a resuming connection gets: the entries it missed, or why it cannot have them."""

    recovered: bool
    entries: tuple[Entry, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The history settings one process runs with."""

    size: int
    ttl: int
    stream_ttl: int


def configured() -> Settings | None:
    """The history settings of this site, or None where history is off (no Redis, or RELAY_HISTORY False)."""
    if not conf.RELAY_HISTORY or conf.RELAY_REDIS_URL is None:
        return None
    return Settings(conf.RELAY_HISTORY_SIZE, conf.RELAY_HISTORY_TTL, conf.RELAY_HISTORY_STREAM_TTL)


def position_of(reply: Any) -> Position:
    """The position the append script answered."""
    epoch, offset = reply
    return Position(epoch.decode() if isinstance(epoch, bytes) else epoch, int(offset))


def parse_entry(raw: bytes | str) -> Entry:
    """An entry of the history list."""
    data = raw.encode() if isinstance(raw, str) else raw
    offset, time, sender, payload_json = data.split(b"\n", 3)
    return Entry(int(offset), int(time), sender.decode() or None, payload_json.decode())


def parse_stream(reply: Sequence[Any]) -> Stream:
    """The stream the read script answered."""
    epoch, offset, now, entries = reply
    epoch_text = epoch.decode() if isinstance(epoch, bytes) else epoch
    return Stream(Position(epoch_text, int(offset)), int(now), tuple(parse_entry(raw) for raw in entries))


def recover(since: Position | None, stream: Stream, ttl: int) -> Recovery:
    """What a connection resuming after ``since`` gets from ``stream``.

    All the entries after ``since.offset`` in order, or none and a reason: never a
    partial recovery, since the client must then reload its state anyway.
    ``since`` None is a first connection, which has no position to resume from.
    """
    if since is None:
        return Recovery(False, reason="no_position")
    current = stream.position
    if since.epoch != current.epoch or since.offset > current.offset:
        return Recovery(False, reason="epoch_changed")
    missed = current.offset - since.offset
    if missed == 0:
        return Recovery(True)
    kept = tuple(e for e in stream.entries if e.offset > since.offset and e.time >= stream.now - ttl)
    if len(kept) != missed or kept[0].offset != since.offset + 1:
        return Recovery(False, reason="too_old")
    return Recovery(True, kept)


def append_pushes(
    client: redis.Redis, prefix: str, settings: Settings, ids: Sequence[str], payload_json: str
) -> dict[str, Position]:
    """Store and publish a server push to each of ``ids``, in one round trip; their positions."""
    script = client.register_script(APPEND_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for client_id in ids:
        keys = [stream_key(prefix, client_id), history_key(prefix, client_id)]
        args: list[str | int] = [bus_channel(prefix, client_id), "", payload_json]
        args += [settings.size, settings.ttl, settings.stream_ttl]
        script(keys=keys, args=args, client=pipe)
    return {client_id: position_of(reply) for client_id, reply in zip(ids, pipe.execute(), strict=True)}

"""Delivery history: one ordered stream per client id, kept in Redis; the scripts and the rules.

Every delivery to an id gets the next ``offset`` of that id's stream, within an
``epoch`` that changes when the stream is lost (Redis flushed or restarted, or the id
idle longer than ``RELAY_HISTORY_STREAM_TTL``). One Lua script stores the entry and
publishes it on the id's bus channel, so the stored order and the live order are the
same, and frames and pushes to one id are ordered relative to each other.

In Redis, per id: a hash ``<prefix>:stream:<id>`` (``e``: the epoch, ``o``: the last
offset, ``p``: the replication id it was written under, ``a``: the time of the list's
oldest entry, or earlier, ``k``: a client read the stream, ``r``: when its expiry was last
pushed back) and a list ``<prefix>:history:<id>`` of its last entries
(``<offset>\n<unix time>\n<sender>\n<payload JSON>``), oldest first. Readers keep the last
``RELAY_HISTORY_SIZE`` entries younger than ``RELAY_HISTORY_TTL`` seconds; what is older
is no longer kept, and is gone from Redis at most 2.5 times the TTL after it was written.

Cheap per entry, because it runs on every delivery: one script call stores a whole batch
of entries (the frames of one event-loop turn, or the targets of one push); the list is
trimmed to its size only once it holds a quarter more than it keeps, and of its old
entries only when its oldest is (``a`` says so without reading it); and the keys' expiry
is pushed back at most every TTL/2 (to 1.5 times the TTL: an entry then lives at least
its TTL), not on every entry.

``relay.redis.history`` runs the scripts on the per-message path; ``append_pushes``
runs them for server pushes, with redis-py.
"""

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.conf import conf
from relay.redis import servers
from relay.redis.keys import bus_channel, history_key, stream_key


# The master's replication id, as the writer learned it (or, '' for a writer that does not
# know it, as INFO tells): a stream last written under another one (a failover promoted a
# replica, which may not have every entry) starts a new epoch.
def _replication_id(argument: int) -> str:
    """Lua that sets ``replication_id`` from ``ARGV[argument]``, or from INFO where that is ''."""
    return f"""
local replication_id = ARGV[{argument}]
if replication_id == '' then
  replication_id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
end
"""


#: KEYS: (stream, history) per entry. ARGV: history size, history TTL, stream TTL, the
#: writer's unix time, a new epoch (for a stream that does not exist or was lost), the
#: master's replication id, then (bus channel, sender or '' for a push, payload JSON) per
#: entry. Returns {epoch, offset} per entry.
#: What it keeps is bounded in time, so that what a sender can store is (README, "Delivery
#: history and resume"): each append drops the entries older than TTL at the list's head
#: (``a``, the head's time, tells when without reading it); the keys' expiry is pushed back
#: at most every TTL/2 (on every entry: a quarter more Redis CPU per delivery, measured), to 1.5 TTL,
#: so that each entry lives its TTL and the list at most 1.5 TTL after its last entry; a
#: stream that no client has read (``k``) expires with its list, one read lives the stream
#: TTL. An entry is then gone at most 2.5 TTL after it was written.
APPEND_SCRIPT = (
    _replication_id(6)
    + """
local size, ttl, now, new_epoch = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5]
local stream_ttl, trim_at, fresh_after = ARGV[3], size + math.floor(size / 4), now - ttl
local kept_for = ttl + math.floor(ttl / 2)
-- Drop the entries older than the TTL from the head of the list; the time of the oldest left.
local function drop_expired(history)
  while true do
    local written = tonumber(string.match(redis.call('LINDEX', history, 0), '^%d+\\n(%d+)\\n'))
    if not written or written >= fresh_after then
      return written or now
    end
    redis.call('LTRIM', history, 1, -1)
  end
end
local positions = {}
for i = 1, #KEYS / 2 do
  local stream, history = KEYS[2 * i - 1], KEYS[2 * i]
  local channel, sender, payload = ARGV[3 * i + 4], ARGV[3 * i + 5], ARGV[3 * i + 6]
  local meta = redis.call('HMGET', stream, 'e', 'r', 'p', 'a', 'k')
  local epoch, refreshed, oldest = meta[1], tonumber(meta[2]), tonumber(meta[4])
  if not epoch or meta[3] ~= replication_id then
    epoch = new_epoch .. string.sub(redis.sha1hex(stream), 1, 6)
    redis.call('HSET', stream, 'e', epoch, 'p', replication_id)
  end
  local offset = redis.call('HINCRBY', stream, 'o', 1)
  local entry = offset .. '\\n' .. ARGV[4] .. '\\n' .. sender .. '\\n' .. payload
  local length = redis.call('RPUSH', history, entry)
  if length > trim_at then
    redis.call('LTRIM', history, -size, -1)
  end
  if length == 1 then
    redis.call('HSET', stream, 'a', now)
  elseif not oldest or oldest < fresh_after then
    redis.call('HSET', stream, 'a', drop_expired(history))
  end
  if not refreshed or now - refreshed >= ttl / 2 then
    redis.call('HSET', stream, 'r', ARGV[4])
    redis.call('EXPIRE', stream, meta[5] and stream_ttl or kept_for)
    redis.call('EXPIRE', history, kept_for)
  elseif length == 1 then
    redis.call('EXPIRE', history, kept_for)
  end
  redis.call('PUBLISH', channel, 'h\\n' .. epoch .. '\\n' .. offset .. '\\n' .. sender .. '\\n' .. payload)
  positions[i] = {epoch, offset}
end
return positions
"""
)

#: KEYS: stream, history. ARGV: stream TTL, a new epoch, the replication id, the history
#: size, then the resuming client's epoch and offset ('' and '' for a client without a
#: position). Returns {epoch, last offset, the entries after the client's offset}.
#: A stream that does not exist (or was written under another master) starts a new epoch,
#: so that the reader learns where it stands; a stream read is kept (``k``): its position
#: lives the stream TTL after its last entry.
#: Only what a resume can replay is read (a read costs Redis what it sends): nothing for a
#: client without a position or of another epoch, or that missed more than the stream keeps
#: (too_old either way), else the last ``missed`` entries of the list — its offsets are
#: contiguous and end at the stream's. ``recover`` checks them (and their age).
READ_SCRIPT = (
    _replication_id(3)
    + """
local meta = redis.call('HMGET', KEYS[1], 'e', 'p', 'o', 'k')
local epoch, offset = meta[1], meta[3] or '0'
if not epoch or meta[2] ~= replication_id then
  epoch = ARGV[2] .. string.sub(redis.sha1hex(KEYS[1]), 1, 6)
  redis.call('HSET', KEYS[1], 'e', epoch, 'p', replication_id, 'o', offset, 'k', 1)
elseif not meta[4] then
  redis.call('HSET', KEYS[1], 'k', 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
local since, entries = tonumber(ARGV[6]), {}
if since and ARGV[5] == epoch then
  local missed = tonumber(offset) - since
  if missed > 0 and missed <= tonumber(ARGV[4]) then
    entries = redis.call('LRANGE', KEYS[2], -missed, -1)
  end
end
return {epoch, offset, entries}
"""
)

APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest().encode()
READ_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest().encode()


def now() -> int:
    """The unix time entries are stamped with (every relay process's clock)."""
    return int(time.time())


def new_epoch() -> str:
    """The start of an epoch for a stream that starts now: the clock in microseconds, in hex.

    The scripts add six hex digits of the stream key's SHA-1, so that streams started
    together (one push to many ids) still have epochs of their own: a position in one
    stream is never taken for a position in another (another user's, in the same tab).
    """
    return format(time.time_ns() // 1000, "x")


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
    """The history settings one process runs with; ``rate`` and ``burst``: what a client id's frames may store."""

    size: int
    ttl: int
    stream_ttl: int
    rate: int | None = None
    burst: int = 0


def configured() -> Settings | None:
    """The history settings of this site, or None where history is off (no Redis, or RELAY_HISTORY False)."""
    if conf.RELAY_HISTORY is False or not servers.configured():
        return None
    return Settings(
        conf.RELAY_HISTORY_SIZE,
        conf.RELAY_HISTORY_TTL,
        conf.RELAY_HISTORY_STREAM_TTL,
        conf.RELAY_HISTORY_RATE,
        conf.RELAY_HISTORY_BURST,
    )


#: What an entry costs besides its payload and sender, as a client's history budget counts
#: it: Redis needs up to ~700 bytes more for a new stream's hash and list (measured with
#: Redis 7.0), 10-150 for an entry of a stream that exists; a round 1 KiB covers both.
ENTRY_COST = 1024


def stored_bytes(sender: str, payload_json: str, targets: int) -> int:
    """The bytes a frame counts against its sender's history budget: an entry in each target's stream.

    ``payload_json`` is ASCII (``protocol.dumps``): its length is its size in bytes.
    """
    return (len(payload_json) + len(sender) + ENTRY_COST) * targets


def position_of(reply: Any) -> Position:
    """The position the append script answered."""
    epoch, offset = reply
    return Position(epoch.decode() if isinstance(epoch, bytes) else epoch, int(offset))


def parse_entry(raw: bytes | str) -> Entry:
    """An entry of the history list."""
    data = raw.encode() if isinstance(raw, str) else raw
    offset, time, sender, payload_json = data.split(b"\n", 3)
    return Entry(int(offset), int(time), sender.decode() or None, payload_json.decode())


def read_arguments(settings: Settings, since: Position | None, replication_id: str = "") -> list[bytes]:
    """ARGV of the read script for a client resuming after ``since`` (None: one without a position).

    Without the ``replication_id`` (a reader that does not know it), the script asks INFO.
    """
    epoch, offset = (since.epoch.encode(), b"%d" % since.offset) if since is not None else (b"", b"")
    return [
        b"%d" % settings.stream_ttl,
        new_epoch().encode(),
        replication_id.encode(),
        b"%d" % settings.size,
        epoch,
        offset,
    ]


def parse_stream(reply: Sequence[Any], read_at: int) -> Stream:
    """The stream the read script answered, read at ``read_at`` (unix time)."""
    epoch, offset, entries = reply
    epoch_text = epoch.decode() if isinstance(epoch, bytes) else epoch
    return Stream(Position(epoch_text, int(offset)), read_at, tuple(parse_entry(raw) for raw in entries))


def recover(since: Position | None, stream: Stream, settings: Settings) -> Recovery:
    """What a connection resuming after ``since`` gets from ``stream``.

    All the entries after ``since.offset`` in order, or none and a reason: never a
    partial recovery, since the client must then reload its state anyway. What is kept
    is the last ``settings.size`` entries younger than ``settings.ttl``. ``since`` None
    is a first connection, which has no position to resume from.
    """
    if since is None:
        return Recovery(False, reason="no_position")
    current = stream.position
    if since.epoch != current.epoch or since.offset > current.offset:
        return Recovery(False, reason="epoch_changed")
    missed = current.offset - since.offset
    if missed == 0:
        return Recovery(True)
    oldest_kept = current.offset - settings.size
    fresh_after = stream.now - settings.ttl
    kept = tuple(e for e in stream.entries if e.offset > max(since.offset, oldest_kept) and e.time >= fresh_after)
    if len(kept) != missed or kept[0].offset != since.offset + 1 or kept[-1].offset != current.offset:
        return Recovery(False, reason="too_old")
    return Recovery(True, kept)


def append_arguments(
    settings: Settings, entries: Sequence[tuple[str, str | None, str]], prefix: str, replication_id: str = ""
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of the append script for ``entries`` of (client id, sender, payload JSON).

    Without the ``replication_id`` (a writer that does not know it), the script asks INFO.
    """
    keys: list[str] = []
    args: list[str | int] = [settings.size, settings.ttl, settings.stream_ttl, now(), new_epoch(), replication_id]
    for client_id, sender, payload_json in entries:
        keys += [stream_key(prefix, client_id), history_key(prefix, client_id)]
        args += [bus_channel(prefix, client_id), sender or "", payload_json]
    return keys, args


def append_pushes(
    client: redis.Redis, prefix: str, settings: Settings, ids: Sequence[str], payload_json: str
) -> dict[str, Position]:
    """Store and publish a server push to each of ``ids``, in one script call; their positions."""
    keys, args = append_arguments(settings, [(client_id, None, payload_json) for client_id in ids], prefix)
    replies = client.register_script(APPEND_SCRIPT)(keys=keys, args=args)
    return {client_id: position_of(reply) for client_id, reply in zip(ids, replies, strict=True)}

"""Appending to and reading the clients' streams over the relay's command pipe (the per-message path).

The appends of one event-loop turn go to Redis as one script call (up to
``MAX_BATCH``): the script's own cost is paid once per turn, not once per frame.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis

from relay.redis.keys import bus_channel, history_key, stream_key
from relay.redis.resp import CommandPipe, OnReply, encode_command
from relay.redis.streams import (
    APPEND_SCRIPT,
    APPEND_SHA,
    READ_SCRIPT,
    READ_SHA,
    Position,
    Settings,
    Stream,
    new_epoch,
    now,
    parse_stream,
    read_arguments,
)

#: At most this many entries per script call: a script blocks Redis while it runs.
MAX_BATCH = 200


def answer_each(callbacks: Sequence[OnReply | None]) -> OnReply:
    """The reply callback of one batched append: each entry's own callback gets its {epoch, offset}."""

    def on_reply(reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):  # refused, or lost: every entry of the batch with it
            for callback in callbacks:
                if callback is not None:
                    callback(reply)
            return
        for callback, position in zip(callbacks, reply, strict=True):
            if callback is not None:
                callback(position)

    return on_reply


class History:
    """Appends to streams and reads them over the relay's command pipe."""

    def __init__(self, commands: CommandPipe, prefix: str, settings: Settings) -> None:
        self._commands = commands
        self.settings = settings
        self._stream_prefix = stream_key(prefix, "").encode()
        self._history_prefix = history_key(prefix, "").encode()
        self._bus_prefix = bus_channel(prefix, "").encode()
        self._limits = (b"%d" % settings.size, b"%d" % settings.ttl, b"%d" % settings.stream_ttl)
        self._pending: list[tuple[bytes, bytes, bytes, OnReply | None]] = []
        self._flush_scheduled = False
        commands.link.on_up(self._load_scripts)

    def _load_scripts(self) -> None:
        # Redis forgets scripts when it restarts: load them before anything else on each connection.
        for script in (APPEND_SCRIPT, READ_SCRIPT):
            self._commands.send(encode_command(b"SCRIPT", b"LOAD", script.encode()))

    def append(self, client_id: str, sender: str | None, payload_json: str, on_reply: OnReply | None) -> None:
        """Store and publish one delivery to ``client_id``; ``on_reply`` gets {epoch, offset} or a ReplyError.

        Sent with the other appends of this event-loop turn. The caller checks ``connected`` first.
        """
        self._pending.append((client_id.encode(), (sender or "").encode(), payload_json.encode(), on_reply))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        keys: list[bytes] = []
        entries: list[bytes] = []
        for client_id, sender, payload, _ in batch:
            keys += (self._stream_prefix + client_id, self._history_prefix + client_id)
            entries += (self._bus_prefix + client_id, sender, payload)
        replication_id = self._commands.link.replication_id.encode()
        limits = (*self._limits, b"%d" % now(), new_epoch().encode(), replication_id)
        command = encode_command(b"EVALSHA", APPEND_SHA, b"%d" % len(keys), *keys, *limits, *entries)
        callbacks = [callback for *_, callback in batch]
        self._commands.send(command, answer_each(callbacks) if any(callbacks) else None)

    async def read(self, client_id: str, since: Position | None) -> Stream:
        """``client_id``'s stream, for a resume after ``since``: its position and the entries a replay needs.

        Raises ConnectionError when Redis cannot answer.
        """
        if not self._commands.connected:
            raise ConnectionError("no connection to Redis")
        replied: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Any) -> None:
            if not replied.done():
                replied.set_result(reply)

        keys = (self._stream_prefix + client_id.encode(), self._history_prefix + client_id.encode())
        args = read_arguments(self.settings, since, self._commands.link.replication_id)
        self._commands.send(encode_command(b"EVALSHA", READ_SHA, b"2", *keys, *args), on_reply)
        reply = await replied
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(str(reply))
        return parse_stream(reply, now())

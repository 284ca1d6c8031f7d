"""Appending to and reading the clients' streams over the relay's command pipe (the per-message path)."""

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis

from relay.redis.keys import bus_channel, history_key, stream_key
from relay.redis.resp import CommandPipe, encode_command
from relay.redis.streams import APPEND_SCRIPT, APPEND_SHA, READ_SCRIPT, READ_SHA, Settings, Stream, parse_stream


class History:
    """Appends to streams and reads them over the relay's command pipe (the per-message path)."""

    def __init__(self, commands: CommandPipe, prefix: str, settings: Settings) -> None:
        self._commands = commands
        self._prefix = prefix
        self.settings = settings
        self._arguments = (b"%d" % settings.size, b"%d" % settings.ttl, b"%d" % settings.stream_ttl)
        commands.link.on_up(self._load_scripts)

    def _load_scripts(self) -> None:
        # Redis forgets scripts when it restarts: load them before anything else on each connection.
        for script in (APPEND_SCRIPT, READ_SCRIPT):
            self._commands.send(encode_command(b"SCRIPT", b"LOAD", script.encode()))

    def append(
        self, client_id: str, sender: str | None, payload_json: str, on_reply: Callable[[Any], None] | None
    ) -> None:
        """Store and publish one delivery to ``client_id``; ``on_reply`` gets {epoch, offset} or a ReplyError.

        The caller checks ``connected`` first.
        """
        prefix = self._prefix
        size, ttl, stream_ttl = self._arguments
        command = encode_command(
            b"EVALSHA",
            APPEND_SHA,
            b"2",
            stream_key(prefix, client_id).encode(),
            history_key(prefix, client_id).encode(),
            bus_channel(prefix, client_id).encode(),
            (sender or "").encode(),
            payload_json.encode(),
            size,
            ttl,
            stream_ttl,
        )
        self._commands.send(command, on_reply)

    async def read(self, client_id: str) -> Stream:
        """``client_id``'s stream, for a resume; raises ConnectionError when Redis cannot answer."""
        if not self._commands.connected:
            raise ConnectionError("no connection to Redis")
        replied: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Any) -> None:
            if not replied.done():
                replied.set_result(reply)

        keys = (stream_key(self._prefix, client_id).encode(), history_key(self._prefix, client_id).encode())
        self._commands.send(encode_command(b"EVALSHA", READ_SHA, b"2", *keys, self._arguments[2]), on_reply)
        reply = await replied
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(str(reply))
        return parse_stream(reply)

"""What the relay needs of the server beyond ASGI, where daphne lets it reach.

Behind daphne's ASGI ``send`` (``functools.partial(server.handle_reply, protocol)``)
is the autobahn protocol of the connection. The relay uses it for what ASGI
cannot say under daphne:

- sending, with how many bytes the socket has not sent yet: ``websocket.send`` never
  waits, so what a client does not read piles up in Twisted's write buffer (slow clients);
- closing with the RFC 6455 codes 1001, 1008 and 1013: autobahn's ``sendClose``, which
  daphne's ``websocket.close`` calls, only allows 1000 and 3000-4999 (django/daphne#374);
- telling a client why its connection failed: daphne leaves autobahn's ``failByDrop``
  on, so a frame over daphne's size limit drops the TCP connection (the client sees
  1006) instead of closing with 1009.

Under another server ``server_connection`` returns None: the relay then closes through
ASGI and does not bound the send buffer (README, "Slow clients").
"""

from typing import Any


class ServerConnection:
    """The socket-level side of one daphne WebSocket connection."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        protocol.failByDrop = False  # send the close code (1009, 1002, ...) before dropping

    def send(self, text: str) -> int | None:
        """Send a text frame; return the bytes not yet sent to the client, or None if closing.

        What daphne's ``websocket.send`` does, in one call: no coroutine, no message dict,
        and no frame sent to a socket that either side started closing (autobahn would
        raise into the sender).
        """
        protocol = self._protocol
        if protocol.state != protocol.STATE_OPEN:
            return None
        protocol.sendMessage(text.encode(), False)
        transport = self._transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def close(self, code: int) -> None:
        """Start the closing handshake with ``code``; the peer is dropped if it does not answer."""
        if self._protocol.state == self._protocol.STATE_OPEN:
            self._protocol.sendCloseFrame(code=code, isReply=False)


def server_connection(send) -> ServerConnection | None:
    """The daphne connection behind an ASGI ``send`` callable, or None under another server."""
    args = getattr(send, "args", ())
    protocol = args[0] if args else None
    transport = getattr(protocol, "transport", None)
    if not hasattr(protocol, "sendCloseFrame") or not all(
        hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")
    ):
        return None
    return ServerConnection(protocol)

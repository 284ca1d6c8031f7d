"""What the relay needs of daphne beyond ASGI, where daphne lets it reach.

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

Under another server ``server_connection`` returns None and the relay closes through
ASGI. So it does under a daphne whose internals are not the ones this module knows
(a new release): it logs one warning, and ``asgi_close_code`` turns the codes daphne's
``websocket.close`` would refuse into the nearest ones it accepts (``ASGI_CLOSE_CODES``).
"""

import functools
import logging
from typing import Any

from asgiref.typing import ASGISendCallable

logger = logging.getLogger(__name__)

#: What the relay reads of the Twisted transport behind a daphne connection.
TRANSPORT_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen")

#: Close codes daphne's ASGI ``websocket.close`` refuses (autobahn allows only 1000 and
#: 3000-4999), mapped to the private-use code 3000 above them: 1001 -> 4001 and so on.
ASGI_CLOSE_CODES = {1001: 4001, 1008: 4008, 1009: 4009, 1011: 4011, 1013: 4013}

_warned = False


class DaphneConnection:
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
        unsent: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return unsent

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code``; the peer is dropped if it does not answer."""
        if self._protocol.state == self._protocol.STATE_OPEN:
            self._protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode() or None, isReply=False)


def under_daphne(send: ASGISendCallable) -> bool:
    """Whether ``send`` is daphne's (a partial of its server's ``handle_reply``)."""
    server = getattr(send.func, "__self__", None) if isinstance(send, functools.partial) else None
    return type(server).__module__.startswith("daphne.")


def server_connection(send: ASGISendCallable) -> DaphneConnection | None:
    """The daphne connection behind an ASGI ``send`` callable, or None under another server.

    Under a daphne that does not look as expected, warns once per process: the relay
    then cannot bound what a slow client leaves unsent, nor send every close code.
    """
    args = getattr(send, "args", ())
    protocol = args[0] if args else None
    transport = getattr(protocol, "transport", None)
    if hasattr(protocol, "sendCloseFrame") and all(hasattr(transport, name) for name in TRANSPORT_ATTRIBUTES):
        return DaphneConnection(protocol)
    if under_daphne(send):
        warn_unknown_daphne(protocol)
    return None


def warn_unknown_daphne(protocol: Any) -> None:
    """Log, once per process, that this daphne's connections are not the ones the relay knows."""
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "event=daphne_unknown protocol=%s: this daphne's internals are not the ones the relay knows; "
            "slow clients are not bounded and close codes %s are sent as %s (see relay/server/daphne.py)",
            type(protocol).__name__,
            "/".join(map(str, ASGI_CLOSE_CODES)),
            "/".join(map(str, ASGI_CLOSE_CODES.values())),
        )


def asgi_close_code(send: ASGISendCallable, code: int) -> int:
    """The code to put in an ASGI ``websocket.close``: under daphne, one it accepts."""
    return ASGI_CLOSE_CODES.get(code, code) if under_daphne(send) else code

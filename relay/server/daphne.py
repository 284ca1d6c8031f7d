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
  1006) instead of closing with 1009;
- bounding what the kernel holds for a client that does not read (``relay.server.tcp``):
  the socket is Twisted's transport's handle;
- the socket's own peer: with ``--proxy-headers`` daphne puts whatever X-Forwarded-For
  a client sends in ``scope["client"]``.

Under another server ``server_connection`` returns None (``relay.server.adapters`` asks
the uvicorn adapter next). So it does under a daphne whose internals are not the ones this module knows
(a new release): it logs one warning, and ``asgi_close_code`` turns the codes daphne's
``websocket.close`` would refuse into the nearest ones it accepts (``ASGI_CLOSE_CODES``).
"""

import functools
import logging
from typing import Any

from asgiref.typing import ASGISendCallable

from relay.server.tcp import bound_kernel_buffer

logger = logging.getLogger(__name__)

#: What the relay reads of the Twisted transport behind a daphne connection.
TRANSPORT_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen")

#: Close codes daphne's ASGI ``websocket.close`` refuses (autobahn allows only 1000 and
#: 3000-4999), mapped to the private-use code 3000 above them: 1001 -> 4001 and so on.
ASGI_CLOSE_CODES = {1001: 4001, 1008: 4008, 1009: 4009, 1011: 4011, 1013: 4013}

_warned = False
_warned_proxy_headers = False


class DaphneConnection:
    """The socket-level side of one daphne WebSocket connection."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        protocol.failByDrop = False  # send the close code (1009, 1002, ...) before dropping
        get_handle = getattr(self._transport, "getHandle", None)
        bound_kernel_buffer(get_handle() if callable(get_handle) else None)

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


def socket_peer(send: ASGISendCallable, default: tuple[str, int] | None) -> tuple[str, int] | None:
    """The address of the socket's own peer under daphne (None: a unix socket); ``default`` if unknown.

    Not ``scope["client"]``, which daphne's ``--proxy-headers`` fills with the
    X-Forwarded-For of anyone: the relay decides itself whom to believe
    (``relay.identity.peers``). Warns once per process when ``--proxy-headers`` is on.
    """
    assert isinstance(send, functools.partial)  # under_daphne: a partial of the server's handle_reply
    warn_proxy_headers(send.func.__self__)  # type: ignore[attr-defined]
    protocol = send.args[0] if send.args else None
    get_client_address = getattr(protocol, "getClientAddress", None)  # an HTTP request (twisted.web)
    transport = getattr(protocol, "transport", None)  # a WebSocket protocol (autobahn)
    if callable(get_client_address):
        address = get_client_address()
    elif transport is not None and callable(getattr(transport, "getPeer", None)):
        address = transport.getPeer()
    else:
        return default
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return None if hasattr(address, "name") else default  # twisted's UNIXAddress has a name
    return (str(host), int(port or 0))


def warn_proxy_headers(server: Any) -> None:
    """Log, once per process, that daphne's ``--proxy-headers`` believes X-Forwarded-For from anyone."""
    global _warned_proxy_headers
    if not _warned_proxy_headers and getattr(server, "proxy_forwarded_address_header", None):
        _warned_proxy_headers = True
        logger.warning(
            "event=proxy_headers_ignored: daphne runs with --proxy-headers, which believes X-Forwarded-For "
            "from any client; the relay reads it only from RELAY_TRUSTED_PROXIES and unix sockets, "
            "and daphne no longer needs the flag"
        )


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

"""PeerMiddleware: ``scope["client"]`` is the socket's peer, or the client a trusted proxy names (issue 12)."""

import functools

import pytest
from daphne.server import Server
from twisted.internet.address import IPv4Address, UNIXAddress

from relay.server.peers import PeerMiddleware


async def seen_by_the_application(scope: dict, send=None) -> dict:
    seen = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    await PeerMiddleware(inner)(scope, None, send)
    return seen


def daphne_send(address, proxy_headers: bool = True) -> functools.partial:
    """daphne's send for a connection whose socket's peer is ``address``."""
    server = Server.__new__(Server)
    server.proxy_forwarded_address_header = "X-Forwarded-For" if proxy_headers else None

    class Request:  # twisted.web's request, as daphne's HTTP requests are
        def getClientAddress(self):  # noqa: N802
            return address

    return functools.partial(server.handle_reply, Request())


def scope(kind: str, client, forwarded_for: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded_for.encode())] if forwarded_for else []
    return {"type": kind, "client": client, "headers": headers}


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_daphne_proxy_headers_cannot_make_a_client_loopback(settings, kind):
    """The finding: 127.0.0.3 with X-Forwarded-For: 127.0.0.1 read /relay/metrics under --proxy-headers."""
    settings.RELAY_TRUSTED_PROXIES = []
    # What --proxy-headers put in the scope: the header's value, port 0.
    seen = await seen_by_the_application(
        scope(kind, ["127.0.0.1", 0], "127.0.0.1"), daphne_send(IPv4Address("TCP", "127.0.0.3", 41000))
    )
    assert seen["client"] == ("127.0.0.3", 41000)
    assert seen["relay_peer"] == ("127.0.0.3", 41000)


async def test_a_trusted_proxy_names_the_client(settings):
    settings.RELAY_TRUSTED_PROXIES = ["127.0.0.1"]
    seen = await seen_by_the_application(scope("http", ["127.0.0.1", 5000], "203.0.113.9"))
    assert (seen["client"], seen["relay_peer"]) == (("203.0.113.9", 0), ("127.0.0.1", 5000))


async def test_a_proxy_on_a_unix_socket_is_trusted(settings):
    settings.RELAY_TRUSTED_PROXIES = []
    send = daphne_send(UNIXAddress("/run/relay/relay-1.sock"), proxy_headers=False)
    seen = await seen_by_the_application(scope("websocket", None, "203.0.113.9"), send)
    assert (seen["client"], seen["relay_peer"]) == (("203.0.113.9", 0), None)


async def test_other_scopes_pass_untouched():
    assert await seen_by_the_application({"type": "lifespan"}) == {"type": "lifespan"}

"""relay.identity.peers: X-Forwarded-For names the client only when a trusted proxy sent it (issue 12)."""

import pytest

from relay.identity.peers import is_trusted_proxy, resolve_client

NGINX = ["127.0.0.1", "10.0.0.0/8"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "client"),
    [
        # No proxy trusted (the default): the header is anyone's, and ignored.
        (("127.0.0.3", 5000), "127.0.0.1", [], ("127.0.0.3", 5000)),
        (("203.0.113.9", 5000), "127.0.0.1", NGINX, ("203.0.113.9", 5000)),
        (("127.0.0.3", 5000), "127.0.0.1", NGINX, ("127.0.0.3", 5000)),  # 127.0.0.3 is not nginx
        # From a trusted proxy: the client it names.
        (("127.0.0.1", 5000), "203.0.113.9", NGINX, ("203.0.113.9", 0)),
        (("10.1.2.3", 5000), "203.0.113.9", NGINX, ("203.0.113.9", 0)),
        (("127.0.0.1", 5000), None, NGINX, ("127.0.0.1", 5000)),
        # $proxy_add_x_forwarded_for: what the client wrote on the left is never believed.
        (("127.0.0.1", 5000), "127.0.0.1, 203.0.113.9", NGINX, ("203.0.113.9", 0)),
        (("127.0.0.1", 5000), "8.8.8.8, 203.0.113.9, 10.0.0.7", NGINX, ("203.0.113.9", 0)),
        # A unix socket's peer is a proxy on this host: trusted.
        (None, "203.0.113.9", [], ("203.0.113.9", 0)),
        (None, None, [], None),
        # Ports and brackets, as some proxies write them.
        (None, "203.0.113.9:4711", [], ("203.0.113.9", 0)),
        (None, "[2001:db8::1]:4711", [], ("2001:db8::1", 0)),
        # Not an address: kept (escaped in logs), and never matches an allow-list.
        (None, "1.2.3.4 event=connect", [], ("1.2.3.4 event=connect", 0)),
    ],
)
def test_resolve_client(peer, forwarded_for, trusted, client):
    assert resolve_client(peer, forwarded_for, trusted) == client


def test_trusted_proxies_are_addresses_or_networks():
    assert is_trusted_proxy("10.9.8.7", ["10.0.0.0/8"]) is True
    assert is_trusted_proxy("::1", ["::1"]) is True
    assert is_trusted_proxy("127.0.0.2", ["127.0.0.1"]) is False
    assert is_trusted_proxy("not-an-address", ["0.0.0.0/0"]) is False
    assert is_trusted_proxy("127.0.0.1", ["bad entry", "127.0.0.1"]) is True  # relay.E027 reports the bad one
    assert is_trusted_proxy(None, []) is True

"""RELAY_ALLOWED_ORIGINS: which browser origins may open a socket, as a function and at the handshake."""

import pytest

from relay.identity.origins import origin_allowed
from relay.identity.tokens import issue

EXAMPLE = ["example.com", ".example.org", "https://app.example.net:8443"]


@pytest.mark.parametrize(
    "origin",
    [
        "http://example.com",
        "https://example.com",
        "https://example.com:8000",
        "HTTPS://EXAMPLE.COM",
        "https://example.com/",
        " https://example.com ",
        "https://example.org",
        "https://www.example.org",
        "http://a.b.example.org:81",
        "https://app.example.net:8443",
        "https://APP.example.net:8443",
    ],
)
def test_allowed(origin):
    assert origin_allowed(origin, EXAMPLE) is True


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("https://www.example.com", id="subdomain-of-plain-host-pattern"),
        pytest.param("https://example.com.evil.test", id="suffix-attack"),
        pytest.param("https://notexample.com", id="prefix-attack"),
        pytest.param("https://evilexample.org", id="dot-pattern-prefix-attack"),
        pytest.param("https://app.example.net", id="full-origin-without-its-port"),
        pytest.param("http://app.example.net:8443", id="full-origin-other-scheme"),
        pytest.param("https://app.example.net:8444", id="full-origin-other-port"),
        pytest.param("https://www.app.example.net:8443", id="full-origin-subdomain"),
        pytest.param("https://evil.example", id="foreign"),
        pytest.param("null", id="null"),
        pytest.param("", id="empty"),
        pytest.param("example.com", id="no-scheme"),
        pytest.param("//example.com", id="scheme-relative"),
        pytest.param("http://", id="no-host"),
        pytest.param("garbage", id="garbage"),
        pytest.param("http://[bad", id="unparseable"),
    ],
)
def test_refused(origin):
    assert origin_allowed(origin, EXAMPLE) is False


@pytest.mark.parametrize("origin", ["https://anything.test", "http://localhost:3000", "https://example.com"])
def test_star_allows_any_origin(origin):
    assert origin_allowed(origin, ["*"]) is True


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://example.com", ["EXAMPLE.COM"], True),
        ("https://www.example.com", [".EXAMPLE.COM"], True),
        ("https://app.example.net:8443", ["HTTPS://APP.EXAMPLE.NET:8443"], True),
        ("https://app.example.net:8443", ["https://app.example.net:8443/"], True),
        ("https://example.com", [], False),
        ("http://localhost:8000", ["localhost", "127.0.0.1", "[::1]"], True),
        ("http://127.0.0.1:8000", ["localhost", "127.0.0.1", "[::1]"], True),
        ("http://[::1]:8000", ["localhost", "127.0.0.1", "[::1]"], True),  # ALLOWED_HOSTS writes IPv6 bracketed
        ("http://[::2]:8000", ["localhost", "127.0.0.1", "[::1]"], False),
    ],
)
def test_patterns(origin, allowed, expected):
    assert origin_allowed(origin, allowed) is expected


# At the handshake, through the full ASGI app


def origin(value: str) -> tuple[bytes, bytes]:
    return (b"origin", value.encode())


async def test_no_origin_is_allowed(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted


@pytest.mark.parametrize("value", ["https://example.com", "http://example.com:8000", "https://app.example.com"])
async def test_allowed_origin_is_accepted(open_socket, settings, value):
    settings.RELAY_ALLOWED_ORIGINS = [".example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin(value)])
    assert accepted


@pytest.mark.parametrize("value", ["http://evil.example", "null", "garbage", "https://example.com.evil.example"])
async def test_foreign_origin_is_refused(open_socket, settings, value):
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin(value)])
    assert accepted is False


@pytest.mark.django_db(transaction=True)
async def test_foreign_origin_is_refused_even_with_a_valid_session(open_socket, settings, logged_in):
    """Cross-site WebSocket hijacking: evil.example opens a socket riding the user's cookie."""
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    _, cookie = logged_in
    accepted, _ = await open_socket("/ws", headers=[origin("http://evil.example"), cookie])
    assert accepted is False
    accepted, _ = await open_socket("/ws", headers=[origin("https://example.com"), cookie])
    assert accepted


async def test_foreign_origin_is_refused_even_with_a_valid_token(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    accepted, _ = await open_socket(f"/ws?token={issue('bob')}", headers=[origin("http://evil.example")])
    assert accepted is False


@pytest.mark.parametrize(
    ("allowed_hosts", "value", "expected"),
    [
        (["relay.example.com"], "https://relay.example.com", True),
        (["relay.example.com"], "https://evil.example", False),
        ([".example.com"], "https://app.example.com", True),
        (["*"], "https://evil.example", True),
        ([], "https://relay.example.com", False),
    ],
)
async def test_default_follows_allowed_hosts(open_socket, settings, allowed_hosts, value, expected):
    if hasattr(settings, "RELAY_ALLOWED_ORIGINS"):
        del settings.RELAY_ALLOWED_ORIGINS
    settings.ALLOWED_HOSTS = allowed_hosts
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin(value)])
    assert accepted is expected


async def test_origins_are_read_at_handshake_time(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin("https://other.example")])
    assert accepted is False
    settings.RELAY_ALLOWED_ORIGINS = ["example.com", "https://other.example"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin("https://other.example")])
    assert accepted

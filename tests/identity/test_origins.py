"""RELAY_ALLOWED_ORIGINS: which browser origins may open a socket, as a function and at the handshake."""

import pytest

from relay.identity.origins import Origin, origin_allowed, refusal_detail, request_origin
from relay.identity.tokens import issue

# RELAY_ALLOWED_ORIGINS lists origins as CSRF_TRUSTED_ORIGINS does (it used to take host
# patterns that ignored scheme and port: issue 12).
EXAMPLE = ["https://example.com", "https://*.example.org", "https://app.example.net:8443"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",
        "https://example.com:443",
        "HTTPS://EXAMPLE.COM",
        " https://example.com ",
        "https://example.org",
        "https://www.example.org",
        "https://a.b.example.org",
        "https://app.example.net:8443",
        "https://APP.example.net:8443",
    ],
)
def test_allowed(origin):
    assert origin_allowed(origin, EXAMPLE) is True


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://example.com", id="other-scheme"),
        pytest.param("https://example.com:8000", id="other-port"),
        pytest.param("https://www.example.com", id="subdomain-of-an-exact-origin"),
        pytest.param("http://www.example.org", id="wildcard-other-scheme"),
        pytest.param("https://www.example.org:81", id="wildcard-other-port"),
        pytest.param("https://example.com.evil.test", id="suffix-attack"),
        pytest.param("https://notexample.com", id="prefix-attack"),
        pytest.param("https://evilexample.org", id="wildcard-prefix-attack"),
        pytest.param("https://app.example.net", id="full-origin-without-its-port"),
        pytest.param("http://app.example.net:8443", id="full-origin-other-scheme"),
        pytest.param("https://app.example.net:8444", id="full-origin-other-port"),
        pytest.param("https://www.app.example.net:8443", id="full-origin-subdomain"),
        pytest.param("https://evil.example", id="foreign"),
        pytest.param("https://example.com/", id="with-a-path"),
        pytest.param("https://example.com?x", id="with-a-query"),
        pytest.param("https://user@example.com", id="userinfo"),
        pytest.param("https://example.com@evil.example", id="userinfo-naming-the-allowed-host"),
        pytest.param("wss://example.com", id="ws-scheme"),
        pytest.param("chrome-extension://abcdef", id="extension"),
        pytest.param("file://", id="file"),
        pytest.param("https://example.com:0", id="port-0"),
        pytest.param("https://example.com:99999", id="port-out-of-range"),
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


@pytest.mark.parametrize("origin", ["null", "https://user@x.test", "ftp://x.test", "garbage"])
def test_star_still_refuses_what_is_not_an_origin(origin):
    assert origin_allowed(origin, ["*"]) is False


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://example.com", ["HTTPS://EXAMPLE.COM"], True),
        ("https://www.example.com", ["https://*.EXAMPLE.COM"], True),
        ("https://example.com", ["https://*.example.com"], True),  # as in CSRF_TRUSTED_ORIGINS
        ("https://app.example.net:8443", ["HTTPS://APP.EXAMPLE.NET:8443"], True),
        ("https://app.example.net:8443", ["https://app.example.net:8443/"], True),
        ("https://example.com", [], False),
        ("http://[::1]:8000", ["http://[::1]:8000"], True),
        ("http://[::2]:8000", ["http://[::1]:8000"], False),
        # Host patterns of older releases allow nothing now (relay.E024 says how to write them).
        ("https://example.com", ["example.com"], False),
        ("https://www.example.com", [".example.com"], False),
        ("http://localhost:8000", ["localhost", "127.0.0.1", "[::1]"], False),
    ],
)
def test_patterns(origin, allowed, expected):
    assert origin_allowed(origin, allowed) is expected


# The same-origin rule: the handshake's own origin, as Django's CSRF check builds it


def handshake(host: str | None, *extra: tuple[bytes, bytes], scheme: str = "ws", path: str = "/ws") -> dict:
    headers = [(b"host", host.encode())] if host is not None else []
    return {"type": "websocket", "scheme": scheme, "path": path, "headers": [*headers, *extra]}


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "expected"),
    [
        ("http://127.0.0.1:8102", "127.0.0.1:8102", "ws", True),
        ("https://relay.example.com", "relay.example.com", "wss", True),
        ("https://relay.example.com", "relay.example.com:443", "wss", True),  # the default port, written out
        ("http://relay.example.com", "relay.example.com:80", "ws", True),
        # The cross-site hijack of issue 12: another port, or scheme, of an allowed host.
        ("http://127.0.0.1:9999", "127.0.0.1:8102", "ws", False),
        ("http://relay.example.com", "relay.example.com", "wss", False),
        ("https://relay.example.com", "relay.example.com", "ws", False),
        ("https://relay.example.com:8443", "relay.example.com", "wss", False),
        ("https://sub.relay.example.com", "relay.example.com", "wss", False),
        # A Host outside ALLOWED_HOSTS has no same origin (DNS rebinding).
        ("http://evil.example:8102", "evil.example:8102", "ws", False),
    ],
)
def test_same_origin(settings, origin, host, scheme, expected):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "relay.example.com"]
    assert origin_allowed(origin, [], request_origin(handshake(host, scheme=scheme))) is expected


def test_same_origin_needs_a_host():
    assert request_origin(handshake(None)) is None


@pytest.mark.parametrize(
    ("forwarded_proto", "origin", "expected"),
    [
        (b"https", "https://relay.example.com", True),
        (b"https", "http://relay.example.com", False),
        (b"http", "http://relay.example.com", True),
        (b"https, http", "https://relay.example.com", True),  # the first value, as Django reads it
    ],
)
def test_same_origin_behind_a_tls_proxy_honours_secure_proxy_ssl_header(settings, forwarded_proto, origin, expected):
    """nginx terminates TLS: the handshake reaching daphne is ws://, X-Forwarded-Proto says https."""
    settings.ALLOWED_HOSTS = ["relay.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    scope = handshake("relay.example.com", (b"x-forwarded-proto", forwarded_proto))
    assert origin_allowed(origin, [], request_origin(scope)) is expected


def test_forwarded_proto_is_ignored_without_secure_proxy_ssl_header(settings):
    settings.ALLOWED_HOSTS = ["relay.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = None
    scope = handshake("relay.example.com", (b"x-forwarded-proto", b"https"))
    assert origin_allowed("https://relay.example.com", [], request_origin(scope)) is False
    assert origin_allowed("http://relay.example.com", [], request_origin(scope)) is True


def test_x_forwarded_host_counts_only_with_use_x_forwarded_host(settings):
    settings.ALLOWED_HOSTS = ["relay.example.com", "internal"]
    scope = handshake("internal", (b"x-forwarded-host", b"relay.example.com"))
    assert request_origin(scope) == Origin("http", "internal", 80)
    settings.USE_X_FORWARDED_HOST = True
    assert request_origin(scope) == Origin("http", "relay.example.com", 80)


@pytest.mark.parametrize(
    ("allowed_hosts", "debug", "host", "expected"),
    [
        # startproject's ALLOWED_HOSTS = [] with DEBUG on: Django allows localhost, so does the relay.
        ([], True, "localhost:8000", True),
        ([], True, "sub.localhost:8000", True),
        ([], True, "127.0.0.1:8000", True),
        ([], True, "[::1]:8000", True),
        ([], True, "example.com:8000", False),
        ([], False, "localhost:8000", False),  # DEBUG off: an empty ALLOWED_HOSTS allows no host
        (["*"], False, "anything.test:8000", True),
    ],
)
def test_same_origin_follows_djangos_allowed_hosts_rule(settings, allowed_hosts, debug, host, expected):
    settings.ALLOWED_HOSTS = allowed_hosts
    settings.DEBUG = debug
    origin = f"http://{host}"
    assert origin_allowed(origin, [], request_origin(handshake(host))) is expected


def test_refusal_detail_names_the_setting_to_change(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    scope = handshake("127.0.0.1:8102")
    assert refusal_detail("http://x:9999", scope) == (
        "http://x:9999 is not the same origin as ws://127.0.0.1:8102/ws, nor in RELAY_ALLOWED_ORIGINS"
    )
    assert refusal_detail("http://x:9999", handshake("evil.example")) == (
        "http://x:9999 is not in RELAY_ALLOWED_ORIGINS, and the handshake's Host 'evil.example' is not in ALLOWED_HOSTS"
    )
    assert "not a web origin" in refusal_detail("null", scope)


# At the handshake, through the full ASGI app


def origin(value: str) -> tuple[bytes, bytes]:
    return (b"origin", value.encode())


async def test_no_origin_is_allowed(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["https://example.com"]
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted


@pytest.mark.parametrize("value", ["https://example.com", "https://app.example.com", "https://a.b.example.com"])
async def test_allowed_origin_is_accepted(open_socket, settings, value):
    settings.RELAY_ALLOWED_ORIGINS = ["https://*.example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin(value)])
    assert accepted


@pytest.mark.parametrize(
    "value",
    ["http://evil.example", "null", "garbage", "https://example.com.evil.example", "http://app.example.com"],
)
async def test_foreign_origin_is_refused(open_socket, settings, value):
    settings.RELAY_ALLOWED_ORIGINS = ["https://*.example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin(value)])
    assert accepted is False


@pytest.mark.django_db(transaction=True)
async def test_foreign_origin_is_refused_even_with_a_valid_session(open_socket, settings, logged_in):
    """Cross-site WebSocket hijacking: evil.example opens a socket riding the user's cookie."""
    settings.RELAY_ALLOWED_ORIGINS = ["https://example.com"]
    _, cookie = logged_in
    accepted, _ = await open_socket("/ws", headers=[origin("http://evil.example"), cookie])
    assert accepted is False
    accepted, _ = await open_socket("/ws", headers=[origin("https://example.com"), cookie])
    assert accepted


async def test_foreign_origin_is_refused_even_with_a_valid_token(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["https://example.com"]
    accepted, _ = await open_socket(f"/ws?token={issue('bob')}", headers=[origin("http://evil.example")])
    assert accepted is False


def host(value: str) -> tuple[bytes, bytes]:
    return (b"host", value.encode())


@pytest.mark.parametrize(
    ("allowed_hosts", "handshake_host", "value", "expected"),
    [
        (["relay.example.com"], "relay.example.com", "http://relay.example.com", True),
        (["relay.example.com"], "relay.example.com", "https://evil.example", False),
        (["relay.example.com"], "relay.example.com", "http://relay.example.com:8080", False),
        (["relay.example.com"], "relay.example.com", "https://relay.example.com", False),  # ws://, not wss://
        ([".example.com"], "app.example.com", "http://app.example.com", True),
        ([".example.com"], "app.example.com", "http://other.example.com", False),
        # ALLOWED_HOSTS = ["*"] used to mean any origin: now only the page's own.
        (["*"], "relay.example.com", "https://evil.example", False),
        ([], "relay.example.com", "http://relay.example.com", False),
    ],
)
async def test_default_is_the_same_origin_only(open_socket, settings, allowed_hosts, handshake_host, value, expected):
    if hasattr(settings, "RELAY_ALLOWED_ORIGINS"):
        del settings.RELAY_ALLOWED_ORIGINS
    settings.ALLOWED_HOSTS = allowed_hosts
    accepted, _ = await open_socket("/ws?id=alice", headers=[host(handshake_host), origin(value)])
    assert accepted is expected


async def test_startproject_settings_let_a_page_on_localhost_connect(open_socket, settings):
    """ALLOWED_HOSTS = [] with DEBUG on: http://localhost:8000 connects to ws://localhost:8000/ws."""
    if hasattr(settings, "RELAY_ALLOWED_ORIGINS"):
        del settings.RELAY_ALLOWED_ORIGINS
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    accepted, _ = await open_socket("/ws?id=alice", headers=[host("localhost:8000"), origin("http://localhost:8000")])
    assert accepted
    accepted, _ = await open_socket("/ws?id=alice", headers=[host("localhost:8000"), origin("http://localhost:3000")])
    assert accepted is False


async def test_origins_are_read_at_handshake_time(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["https://example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin("https://other.example")])
    assert accepted is False
    settings.RELAY_ALLOWED_ORIGINS = ["https://example.com", "https://other.example"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[origin("https://other.example")])
    assert accepted

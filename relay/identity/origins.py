"""Which browser origins may open a WebSocket: the page's own origin, and ``RELAY_ALLOWED_ORIGINS``.

A browser sends ``Origin`` with every WebSocket handshake, and the cookies of the
relay's site with it, whichever page opened the socket. Refusing foreign origins is
what stops another site (or another port or scheme of this host) from opening a socket
with a logged-in user's session (cross-site WebSocket hijacking). The rule is Django's
CSRF origin check: a page may connect when it is of the same origin as the handshake
(scheme from ``ws``/``wss`` or ``SECURE_PROXY_SSL_HEADER``, host and port from a
``Host`` that passes ``ALLOWED_HOSTS``), or when ``RELAY_ALLOWED_ORIGINS`` lists its
origin as ``CSRF_TRUSTED_ORIGINS`` would (``https://app.example.com``,
``https://*.example.com``). A client without ``Origin`` is not a browser and cannot
ride a cookie that is not its own, so it is allowed.
"""

import re
from dataclasses import dataclass

from asgiref.typing import WebSocketScope
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from relay.conf import conf
from relay.identity.handshake import header

#: A serialized origin as browsers send it: scheme, host (Django's host syntax), optional port.
ORIGIN_PATTERN = re.compile(r"(https?)://([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([0-9]{1,5}))?")
#: An entry of RELAY_ALLOWED_ORIGINS: an origin, its host optionally ``*.`` and a domain.
ENTRY_PATTERN = re.compile(r"(https?)://(\*\.)?([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([0-9]{1,5}))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Django's hosts for an empty ALLOWED_HOSTS under DEBUG (django.http.request.HttpRequest.get_host).
DEBUG_ALLOWED_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


@dataclass(frozen=True, slots=True)
class Origin:
    """A web origin: scheme, host (lower case, IPv6 in brackets) and port (the scheme's default if none)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_origin(value: str) -> Origin | None:
    """The origin an ``Origin`` header names; None for anything a browser would not send.

    Refused: ``null`` (sandboxed frames, ``file://``), schemes other than http and https,
    user info (``https://user@host``), a path, query or fragment, a bad port.
    """
    match = ORIGIN_PATTERN.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    return _origin(scheme, host.removesuffix("."), port)


def _origin(scheme: str, host: str, port: str | None) -> Origin | None:
    number = int(port) if port else DEFAULT_PORTS[scheme]
    if not host or not 0 < number < 65536:
        return None
    return Origin(scheme, host, number)


def allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS as Django applies it: an empty list under DEBUG means localhost."""
    hosts = list(settings.ALLOWED_HOSTS)
    return DEBUG_ALLOWED_HOSTS if settings.DEBUG and not hosts else hosts


def is_secure(scope: WebSocketScope) -> bool:
    """Whether the handshake came over TLS, as Django's ``request.is_secure()`` decides.

    Behind a proxy that terminates TLS, ``SECURE_PROXY_SSL_HEADER`` (e.g.
    ``X-Forwarded-Proto: https``) says so; else the scope's ``wss`` scheme.
    """
    if settings.SECURE_PROXY_SSL_HEADER:
        name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1"))
        if value is not None:
            return value.decode("latin-1").split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "wss"


def request_host(scope: WebSocketScope) -> str | None:
    """The handshake's host (and port), as Django's ``request.get_host()`` reads it; None if absent."""
    value = None
    if settings.USE_X_FORWARDED_HOST:
        value = header(scope, b"x-forwarded-host")
    if value is None:
        value = header(scope, b"host")
    return value.decode("latin-1").strip() if value is not None else None


def request_origin(scope: WebSocketScope) -> Origin | None:
    """The origin of the handshake itself; None when its Host does not pass ALLOWED_HOSTS."""
    host = request_host(scope)
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, allowed_hosts()):
        return None
    scheme = "https" if is_secure(scope) else "http"
    match = ORIGIN_PATTERN.fullmatch(f"{scheme}://{host.lower()}")
    if match is None:
        return None
    return _origin(scheme, match.group(2).removesuffix("."), match.group(3))


def entry_matches(entry: str, origin: Origin) -> bool:
    """Whether an entry of RELAY_ALLOWED_ORIGINS allows ``origin``.

    ``"*"`` allows any origin; ``"https://app.example.com[:port]"`` exactly that origin;
    ``"https://*.example.com[:port]"`` that scheme and port on example.com and its
    subdomains. Anything else (a bare host pattern of older releases) allows nothing:
    ``manage.py check`` reports it (relay.E024).
    """
    if entry == "*":
        return True
    match = ENTRY_PATTERN.fullmatch(entry.strip().lower().rstrip("/"))
    if match is None:
        return False
    scheme, wildcard, host, port = match.groups()
    if scheme != origin.scheme or (int(port) if port else DEFAULT_PORTS[scheme]) != origin.port:
        return False
    return origin.host == host or (wildcard is not None and origin.host.endswith("." + host))


def is_origin_entry(entry: object) -> bool:
    """Whether ``entry`` is something RELAY_ALLOWED_ORIGINS understands (for the system check)."""
    return isinstance(entry, str) and (entry == "*" or ENTRY_PATTERN.fullmatch(entry.strip().lower()) is not None)


def origin_allowed(origin: str, allowed: list[str], own: Origin | None = None) -> bool:
    """Whether a page of ``origin`` (an ``Origin`` header) may connect.

    ``own`` is the handshake's own origin (``request_origin``): the same origin is allowed,
    as are the origins ``allowed`` lists. A malformed origin is never allowed, not even by ``"*"``.
    """
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    return parsed == own or any(entry_matches(entry, parsed) for entry in allowed)


def refusal_detail(origin: str, scope: WebSocketScope) -> str:
    """Why ``origin`` was refused, naming the setting to change, for the log."""
    if parse_origin(origin) is None:
        return f"{origin} is not a web origin (http or https, scheme://host[:port]): refused"
    host = request_host(scope)
    scheme = "wss" if is_secure(scope) else "ws"
    if request_origin(scope) is None:
        hint = f"the handshake's Host {host!r} is not in ALLOWED_HOSTS" if host else "the handshake has no Host"
        return f"{origin} is not in RELAY_ALLOWED_ORIGINS, and {hint}"
    return f"{origin} is not the same origin as {scheme}://{host}{scope.get('path', '')}, nor in RELAY_ALLOWED_ORIGINS"


def origin_refusal(scope: WebSocketScope) -> str | None:
    """Why the handshake's browser origin is not allowed (the log's detail), or None if it is.

    A handshake without an ``Origin`` header is not a browser's, and holds no victim's cookie.
    """
    origin = header(scope, b"origin")
    if origin is None:
        return None
    origin_text = origin.decode("latin-1")
    if origin_allowed(origin_text, conf.RELAY_ALLOWED_ORIGINS, request_origin(scope)):
        return None
    return refusal_detail(origin_text, scope)

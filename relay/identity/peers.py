"""Who is at the other end: the client's address, from X-Forwarded-For only when a trusted proxy sent it.

The address is what the logs show and what ``RELAY_METRICS_ALLOWED_IPS`` is checked
against, so a client must not be able to choose it. A proxy in front of the relay names
the client in ``X-Forwarded-For``; anyone else can write that header too. So the header
counts only when the socket's peer is a proxy the site trusts: one of
``RELAY_TRUSTED_PROXIES``, or a peer on a unix socket (a proxy on this host: only local
processes with the socket file's permissions can connect). Daphne's ``--proxy-headers``
believes the header from anyone, uvicorn's from its ``--forwarded-allow-ips``; the relay
reads the socket's own peer under both (``relay.server.adapters.socket_peer``) and
decides itself.
"""

import ipaddress
from collections.abc import Iterable

from relay.conf import conf

#: A peer address as ASGI gives it: ``(host, port)``, or None for a unix socket.
Peer = tuple[str, int] | None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address written alone, with a port (``1.2.3.4:5``, ``[::1]:5``) or in brackets; else None."""
    text = text.strip()
    candidates = [text]
    if text.startswith("["):
        candidates.append(text[1:].partition("]")[0])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None


def is_trusted_proxy(host: str | None, trusted: Iterable[str]) -> bool:
    """Whether a peer may name the client: a unix socket (``host`` None), or an address in ``trusted``."""
    if host is None:
        return True
    address = _address(host)
    if address is None:
        return False
    for network in trusted:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue  # a wrong entry: relay.E027 reports it
    return False


def resolve_client(peer: Peer, forwarded_for: str | None, trusted: Iterable[str]) -> Peer:
    """The client's address: the socket's peer, unless trusted proxies name it in X-Forwarded-For.

    The header is read from the right, where the nearest proxy appended its own peer:
    trusted proxies are skipped, and the first hop that is not one is the client (what a
    client wrote further left is never believed). The port of a forwarded client is
    unknown: 0.
    """
    trusted = list(trusted)
    if not is_trusted_proxy(peer[0] if peer else None, trusted) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return (hop[:100], 0)  # not an address: shown escaped in logs, never allowed by address
        if not is_trusted_proxy(str(address), trusted):
            return (str(address), 0)
    return (str(_address(hops[0])), 0) if hops else peer


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The X-Forwarded-For of ASGI headers, several of them joined as one list; None without."""
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"]
    return ", ".join(values) if values else None


def client_of(peer: Peer, headers: Iterable[tuple[bytes, bytes]]) -> Peer:
    """The client's address of a request from ``peer`` with these headers (``RELAY_TRUSTED_PROXIES``)."""
    return resolve_client(peer, forwarded_for(headers), conf.RELAY_TRUSTED_PROXIES)

"""Which framing a connection gets: ``relay.v1`` when the client asks for it, else the original one.

``RELAY_FRAMINGS`` says which are allowed. In the original framing a delivery is the
bare payload, so a client's message and a server push are the same bytes: any client
that may send to another can forge a push. In ``relay.v1`` every delivery says who sent
it (``"from": null`` only for the server). So the original framing is off by default
with DEBUG off, and a handshake that would get it is refused (403) before it is accepted.
"""

from collections.abc import Iterable, Sequence

from relay.exceptions import Refused
from relay.protocol import FRAMING_ORIGINAL, SUBPROTOCOL_V1


def negotiate(offered: Iterable[str], allowed: Sequence[str]) -> str | None:
    """The subprotocol to accept: ``relay.v1`` if the client offers it and it is allowed, else None (original)."""
    return SUBPROTOCOL_V1 if SUBPROTOCOL_V1 in offered and SUBPROTOCOL_V1 in allowed else None


def check_allowed(subprotocol: str | None, allowed: Sequence[str]) -> None:
    """Refuse a connection whose framing (``negotiate``'s choice) RELAY_FRAMINGS does not allow."""
    if subprotocol is None and FRAMING_ORIGINAL not in allowed:
        raise Refused(
            "framing",
            f"the original framing (no subprotocol) is off here (RELAY_FRAMINGS): open the socket with the "
            f"{SUBPROTOCOL_V1} subprotocol, new WebSocket(url, {SUBPROTOCOL_V1!r})",
        )
    if subprotocol is not None and subprotocol not in allowed:
        raise Refused("framing", f"the {subprotocol} framing is off here (RELAY_FRAMINGS)")

"""What the relay sets on each TCP socket its server accepts, under daphne and uvicorn alike.

A client that does not read leaves what is sent to it in two places: the server's own
write buffer, which the relay counts against ``RELAY_MAX_PENDING_BYTES``, and the
kernel's send buffer, which grows to ``net.ipv4.tcp_wmem``'s maximum (4 MiB) where the
relay's limit cannot see it. ``TCP_NOTSENT_LOWAT`` bounds the second.

A peer that is gone (or never reads) while bytes are unsent would keep its socket until
TCP gives up, ~15 minutes: the server's close waits for them to be sent. ``TCP_USER_TIMEOUT``
drops it once sent bytes stay unacknowledged, or unsent behind a zero window, for
UNACKED_TIMEOUT_MS; a connection with nothing to send is not affected.
"""

import logging
import socket
from typing import Any

logger = logging.getLogger(__name__)

#: Unsent bytes the kernel may hold for one accepted TCP socket (``TCP_NOTSENT_LOWAT``):
#: past them, what a client does not read stays in the server's buffer, where the relay counts
#: it against RELAY_MAX_PENDING_BYTES. Bytes in flight are not limited, so a fast client on
#: a long link is not slowed down (``SO_SNDBUF`` would be: it caps those too).
KERNEL_UNSENT_BYTES = 64 * 1024
#: Milliseconds the kernel lets sent bytes go unacknowledged before it drops the connection.
UNACKED_TIMEOUT_MS = 30_000


def bound_kernel_buffer(sock: Any) -> bool:
    """Let the kernel hold at most KERNEL_UNSENT_BYTES unsent for ``sock``; whether it could.

    ``sock`` is the socket, or what stands for it (uvloop's ``PseudoSocket``); a unix socket
    (behind a proxy on this host) keeps its fixed buffer (``net.core.wmem_default``), and
    None (a TLS transport has no socket to reach) is left alone.
    """
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):  # Linux, macOS
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, KERNEL_UNSENT_BYTES)
            if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_TIMEOUT_MS)
        else:  # elsewhere a fixed send buffer, which caps the bytes in flight too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * KERNEL_UNSENT_BYTES)
    except OSError as exc:
        logger.warning("event=socket_buffer_unbounded error=%s", exc)
        return False
    return True

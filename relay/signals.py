"""Signals the relay sends, for the site's own code to receive.

Receivers may be sync or async; the relay sends with ``asend_robust`` from its event
loop, so a sync receiver runs in a worker thread, and a receiver that raises is logged
and never reaches the connection or the other receivers.

``client_connected`` and ``client_disconnected`` are sent by the process holding the
connection, with ``sender=Connection`` and ``connection`` (a ``relay.Connection``:
client id, connection id, user, identity data, scope); ``client_disconnected`` also
has ``code`` (the close code, None if the socket dropped without one) and ``duration``
(seconds). They are not a record of who is online: a process killed with SIGKILL, or
one that loses power, sends no ``client_disconnected``. Use ``relay.presence`` for that.
"""

import logging
from typing import Any

from django.dispatch import Signal

from relay import metrics
from relay.connections import Connection

logger = logging.getLogger(__name__)

#: After the handshake completed: the connection is open and receives what is sent to its id.
client_connected = Signal()

#: After the connection is gone (closed by either side, or dropped).
client_disconnected = Signal()

#: Sent after a push made by a person or a service: the admin's "Send a message", the
#: ``relay_send`` command, the HTTP API. Arguments: ``source`` ("admin", "command",
#: "api"), ``actor`` (who: a username, an OS user, an API key's name), ``targets`` (the
#: client ids), ``online`` (how many were online), ``size`` (bytes of the payload's
#: JSON). ``relay.contrib.admin`` records each one in its audit log.
operator_push = Signal()


async def send_robustly(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` from the event loop; count and log each receiver that raised, never raise.

    Django's ``asend_robust`` logs the traceback (logger ``django.dispatch``); the relay
    adds one ``event=`` line and the ``relay_site_code_errors_total{kind="signal"}`` count.
    """
    if not signal.receivers:  # nothing connected costs nothing
        return
    for receiver, result in await signal.asend_robust(sender=Connection, **kwargs):
        if isinstance(result, Exception):
            metrics.SITE_CODE_ERRORS.labels("signal").inc()
            name = getattr(receiver, "__qualname__", repr(receiver))
            logger.error(
                "event=signal_receiver_failed receiver=%s error=%s: %s",
                name,
                type(result).__name__,
                result,
                exc_info=result,
            )

"""Logging out closes the sockets that session opened (Django's ``user_logged_out``).

A socket authenticated by the session cookie stays open after the session is gone
unless something closes it: a stolen laptop's tab would keep receiving. The receiver
closes, in every relay process, the connections of the user's client id that this
session authenticated, with 4401: the same user's other browsers and token
connections stay open. Connected in ``RelayConfig.ready()``.
"""

import logging
from typing import Any

from django.http import HttpRequest

from relay import api
from relay.exceptions import LAYER_ERRORS
from relay.identity.backends import SessionBackend, load_backends
from relay.protocol import CLOSE_LOGGED_OUT, normalize_client_id

logger = logging.getLogger(__name__)

#: The close reason a client sees with 4401.
LOGGED_OUT_REASON = "logged out"


def session_client_ids(user: Any) -> list[str]:
    """The client ids the configured session backends connect ``user`` as (usually one: ``str(user.pk)``)."""
    ids: list[str] = []
    for backend in load_backends():
        if isinstance(backend, SessionBackend):
            client_id = normalize_client_id(backend.get_client_id(user))
            if client_id is not None and client_id not in ids:
                ids.append(client_id)
    return ids


def close_sockets_on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Close the connections the logged-out session authenticated, in every relay process.

    Never fails the logout: a Redis that cannot be reached is logged, and the sockets
    then stay open until they close (their session no longer lets them reconnect).
    """
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if user is None or not session_key:
        return
    try:
        client_ids = session_client_ids(user)
    except Exception:  # a broken RELAY_IDENTITY_BACKENDS (relay.E020) must not break the site's logout
        logger.exception("event=logout_disconnect_failed error=the session backends could not be loaded")
        return
    for client_id in client_ids:
        try:
            api.disconnect(client_id, CLOSE_LOGGED_OUT, LOGGED_OUT_REASON, session_key=session_key)
        except LAYER_ERRORS as exc:
            logger.warning("event=logout_disconnect_failed client=%s error=%s", client_id, exc)

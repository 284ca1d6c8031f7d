"""The end of a Django session closes the sockets it opened: a logout, another user's login, a password change.

A socket authenticated by a session stays open after the session is gone unless
something closes it: a stolen laptop's tab would keep receiving. Django ends a session
in these ways, each heard here (the receivers are connected in ``RelayConfig.ready()``):

- ``user_logged_out``: that session, which is about to be flushed, and every session of
  the user that no longer logs them in (the key a password change cycled away, say);
- ``user_logged_in`` into a session that the login flushed (another user on the same
  browser) or cycled: the session the browser came with, which is gone;
- a password change (``set_password``, then ``save``): the user's sessions whose hash no
  longer matches, and the key ``update_session_auth_hash`` cycled away.

Each is one order to every relay process (``SessionsEnded`` on the sessions channel;
without Redis, this process), which closes with 4401 the connections those sessions
authenticated, whatever identity backend decided and whatever client id they have
(``relay.server.sessions``), asking of the user's other sessions what
``django.contrib.auth.get_user`` would (``relay.identity.sessions``). The user's other
browsers and token connections stay open.
"""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from relay.conf import conf
from relay.exceptions import LAYER_ERRORS
from relay.identity.sessions import user_key
from relay.protocol import CLOSE_LOGGED_OUT
from relay.redis import servers
from relay.redis.keys import sessions_channel
from relay.redis.messages import SessionsEnded, encode_sessions_ended

logger = logging.getLogger(__name__)

#: The close reason a client sees with 4401.
LOGGED_OUT_REASON = "logged out"


def end_sessions(session_keys: list[str], user: str | None) -> None:
    """Close, in every relay process, the sockets of ``session_keys`` and those of ``user`` (a
    ``user_key``) whose session no longer logs them in.

    Never fails the logout, login or save that called it: a Redis that cannot be reached
    is logged, and the sockets then stay open until they close (their session no longer
    lets them reconnect).
    """
    ended = SessionsEnded(CLOSE_LOGGED_OUT, LOGGED_OUT_REASON, tuple(session_keys), user)
    shards = servers.configured()
    try:
        if not shards:
            async_to_sync(end_here)(ended)
            return
        # Every process listens on every shard: one of them carries the order, chosen by a stable hash.
        server = shards[servers.shard_index(user or session_keys[0], len(shards), servers.layer_prefix())]
        channel = sessions_channel(conf.RELAY_REDIS_PREFIX)
        servers.sync_client(server).publish(channel, encode_sessions_ended(ended))
    except LAYER_ERRORS as exc:
        logger.warning("event=logout_disconnect_failed sessions=%d error=%s", len(session_keys), exc)


async def end_here(ended: SessionsEnded) -> None:
    """Without Redis: close the sockets of those sessions in this process (the in-memory layer serves one)."""
    from relay.server.hub import local_hubs  # the server's side, loaded where it runs

    for hub in local_hubs():
        await hub.end_sessions(ended)


def session_keys_of(request: HttpRequest | None) -> list[str]:
    """The request's session key and, if this request changed it, the key its cookie named."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    keys = [session_key, getattr(request, "COOKIES", {}).get(settings.SESSION_COOKIE_NAME)]
    return list(dict.fromkeys(key for key in keys if key))


def close_sockets_on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """``user_logged_out``: the sockets of the session logging out, and of the user's stale sessions."""
    session_keys, account = session_keys_of(request), user_key(user)
    if session_keys or account is not None:
        end_sessions(session_keys, account)


def close_sockets_on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """``user_logged_in``: the sockets of the session the browser came with, if the login flushed or cycled it."""
    came_with = getattr(request, "COOKIES", {}).get(settings.SESSION_COOKIE_NAME)
    if came_with and came_with != getattr(getattr(request, "session", None), "session_key", None):
        end_sessions([came_with], None)


def close_sockets_on_password_change(
    sender: Any, instance: Any, created: bool = False, using: str | None = None, **kwargs: Any
) -> None:
    """``post_save`` of the user model: after a password change, the sockets of the sessions it ended.

    Once the change is committed, so that the relay's processes read the new password.
    """
    # set_password() keeps the new password in _password until save() has passed it to the
    # validators' password_changed(): Django's own mark of a password change. A new user has no session.
    if created or getattr(instance, "_password", None) is None:
        return
    account = user_key(instance)
    if account is not None:
        transaction.on_commit(lambda: end_sessions([], account), using=using)

"""Whether a Django session still logs its user in: for closing the sockets of sessions that ended.

Django ends a session in ways that send no signal: a password change cycles the
session's key (``update_session_auth_hash``) and makes the user's other sessions fail
their hash check, and ``django.contrib.auth.get_user`` then flushes them at their next
request. So the relay asks, of each session a user's connections were opened with,
what ``get_user`` would decide (``relay.logout``).
"""

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.utils.crypto import constant_time_compare


def user_key(user: Any) -> str | None:
    """How a Django session names ``user`` (its ``SESSION_KEY``): the primary key as text; None without a user."""
    if user is None or getattr(user, "pk", None) is None:
        return None
    meta = getattr(user, "_meta", None)
    return meta.pk.value_to_string(user) if meta is not None else str(user.pk)


def session_logs_in(session_key: str, user: str | None) -> bool:
    """Whether the session ``session_key`` still logs in ``user`` (a ``user_key``; None: anyone).

    As ``django.contrib.auth.get_user`` decides it — the session exists, names that user
    by a configured backend that still finds them (an inactive user is not found), and
    its hash matches the user's password (or a ``SECRET_KEY_FALLBACKS`` one) — but without
    its side effects: it flushes a session it refuses, or cycles one it accepts by a
    fallback. Sync: it reads the session store and the user from the database.
    """
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = session.load()
    if session.session_key is None:  # the engines forget the key of a session they do not have
        return False
    if SESSION_KEY not in data:  # not django.contrib.auth's login: only its existence can be judged
        return True
    if user is not None and data[SESSION_KEY] != user:
        return False
    backend = data.get(BACKEND_SESSION_KEY)
    if backend not in settings.AUTHENTICATION_BACKENDS:
        return False
    found = load_backend(backend).get_user(get_user_model()._meta.pk.to_python(data[SESSION_KEY]))
    if found is None:
        return False
    if not hasattr(found, "get_session_auth_hash"):
        return True
    session_hash = data.get(HASH_SESSION_KEY)
    hashes = [found.get_session_auth_hash(), *found.get_session_auth_fallback_hash()]
    return bool(session_hash) and any(constant_time_compare(session_hash, known) for known in hashes)

"""Which connections each Django session authenticated, so that the end of a session closes them.

Recorded at connect time from the connection's identity (``Identity.session_key`` and
``user``), whichever backend decided: the orders of ``relay.logout`` name sessions and
users, never client ids, so a site's own backend that connects users as ``user-<pk>``
is reached as well as ``SessionBackend``'s ``str(user.pk)``.
"""

import logging
from collections.abc import Iterable
from typing import Generic, TypeVar

from relay.identity.sessions import session_logs_in
from relay.redis.messages import SessionsEnded
from relay.threads import as_async

logger = logging.getLogger(__name__)

#: A connection (the hub's).
C = TypeVar("C")


class SessionIndex(Generic[C]):
    """The connections of each session key, and the sessions each user's connections were opened with."""

    def __init__(self) -> None:
        self._logins: dict[C, tuple[str, str | None]] = {}
        self._by_session: dict[str, set[C]] = {}
        self._by_user: dict[str, set[C]] = {}

    def add(self, connection: C, session_key: str, user: str | None) -> None:
        """Record that ``session_key`` authenticated ``connection``, as ``user`` (a ``user_key``) if known."""
        self._logins[connection] = (session_key, user)
        self._by_session.setdefault(session_key, set()).add(connection)
        if user is not None:
            self._by_user.setdefault(user, set()).add(connection)

    def discard(self, connection: C) -> None:
        """Forget ``connection`` (it left); nothing happens for one that was never added."""
        login = self._logins.pop(connection, None)
        if login is None:
            return
        session_key, user = login
        forget(self._by_session, session_key, connection)
        if user is not None:
            forget(self._by_user, user, connection)

    def of_sessions(self, session_keys: Iterable[str]) -> set[C]:
        """The connections those sessions authenticated."""
        return {connection for key in session_keys for connection in self._by_session.get(key, ())}

    def sessions_of(self, user: str) -> dict[str, set[C]]:
        """The connections of ``user``, by the session each was opened with."""
        sessions: dict[str, set[C]] = {}
        for connection in self._by_user.get(user, ()):
            sessions.setdefault(self._logins[connection][0], set()).add(connection)
        return sessions

    async def ended(self, order: SessionsEnded) -> set[C]:
        """The connections to close for ``order``: those of its sessions, and those of its user whose
        session no longer logs them in (gone, cycled, another user's, or its password hash stale)."""
        closing = self.of_sessions(order.session_keys)
        if order.user is None:
            return closing
        check = as_async(session_logs_in)  # the session store and the user: in a worker thread
        for session_key, connections in self.sessions_of(order.user).items():
            if session_key in order.session_keys:
                continue
            try:
                logs_in = await check(session_key, order.user)
            except Exception:  # the database is away, say: left open, as before the order came
                logger.exception("event=session_check_failed connections=%d", len(connections))
                continue
            if not logs_in:
                closing |= connections
        return closing


def forget(index: dict[str, set[C]], key: str, connection: C) -> None:
    """Take ``connection`` out of ``index[key]``, and the key out when it holds no connection."""
    connections = index.get(key)
    if connections is not None:
        connections.discard(connection)
        if not connections:
            del index[key]

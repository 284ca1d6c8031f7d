"""Logging out closes the sockets that session opened (4401), and only those (relay.logout; issue 12).

In process, with the in-memory layer: ``relay.disconnect`` closes this process's
connections. Across processes, through Redis: ``tests/e2e/test_security.py``.
"""

import logging
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import Client

import relay
from relay import logout as relay_logout
from relay.identity.tokens import issue
from relay.protocol import CLOSE_LOGGED_OUT

pytestmark = pytest.mark.django_db(transaction=True)  # the handshake reads the session in another thread

LOGGED_OUT = {"type": "websocket.close", "code": CLOSE_LOGGED_OUT, "reason": "logged out"}


def session_cookie(client: Client) -> tuple[bytes, bytes]:
    name = django_settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


async def test_logout_closes_the_sockets_of_that_session_only(open_socket, logged_in, client, django_user_model):
    """``client`` is the browser ``logged_in`` logged in: it logs out."""
    user, cookie = logged_in
    other_browser = Client()
    await sync_to_async(other_browser.force_login)(user)
    tab, second_tab = (await open_socket("/ws", headers=[cookie]))[1], (await open_socket("/ws", headers=[cookie]))[1]
    elsewhere = (await open_socket("/ws", headers=[session_cookie(other_browser)]))[1]
    by_token = (await open_socket(f"/ws?token={issue(str(user.pk))}"))[1]
    someone_else = await sync_to_async(django_user_model.objects.create_user)("someone-else")
    their_browser = Client()
    await sync_to_async(their_browser.force_login)(someone_else)
    theirs = (await open_socket("/ws", headers=[session_cookie(their_browser)]))[1]

    await sync_to_async(client.logout)()

    assert await tab.receive_output() == LOGGED_OUT
    assert await second_tab.receive_output() == LOGGED_OUT
    for still_open in (elsewhere, by_token, theirs):
        assert await still_open.receive_nothing(timeout=0.05)
    await sync_to_async(their_browser.logout)()
    assert await theirs.receive_output() == LOGGED_OUT
    assert await elsewhere.receive_nothing(timeout=0.05)


async def test_logout_reaches_sockets_of_the_username_when_the_session_backend_says_so(
    open_socket, settings, logged_in, client
):
    """A site that connects session users by username: the logout finds them by that id."""
    settings.RELAY_IDENTITY_BACKENDS = ["tests.identity.test_backends.UsernameSessionBackend"]
    user, cookie = logged_in
    accepted, socket = await open_socket("/ws", headers=[cookie])
    assert accepted
    await sync_to_async(client.logout)()
    assert await socket.receive_output() == LOGGED_OUT


async def test_a_logout_that_cannot_reach_redis_still_logs_out(logged_in, client, monkeypatch, caplog):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 10.0.0.5:6379. Connection refused.")

    monkeypatch.setattr(relay_logout.api, "disconnect", unreachable)
    _, cookie = logged_in
    session_key = cookie[1].decode().split("=", 1)[1]
    with caplog.at_level(logging.WARNING, "relay"):
        await sync_to_async(client.logout)()
    session_store = import_module(django_settings.SESSION_ENGINE).SessionStore
    assert not await session_store().aexists(session_key)  # logged out all the same
    assert [r.getMessage().split()[0] for r in caplog.records] == ["event=logout_disconnect_failed"]


def test_a_logout_without_a_user_or_a_session_does_nothing(monkeypatch):
    monkeypatch.setattr(relay_logout.api, "disconnect", lambda *a, **k: pytest.fail("nothing to close"))
    relay_logout.close_sockets_on_logout(None, request=None, user=None)


def test_disconnect_refuses_a_session_key_a_bus_message_cannot_carry():
    with pytest.raises(ValueError, match="not a session key"):
        relay.disconnect("alice", session_key="a\nb")
    with pytest.raises(ValueError, match="not a session key"):
        relay.disconnect("alice", session_key="")


def test_a_logout_with_broken_identity_backends_still_logs_out(settings, caplog):
    settings.RELAY_IDENTITY_BACKENDS = ["no_such_module.Backend"]
    request = type("Request", (), {"session": type("Session", (), {"session_key": "k"})()})()
    with caplog.at_level(logging.ERROR, "relay"):
        relay_logout.close_sockets_on_logout(None, request=request, user=object())
    assert [r.getMessage().split()[0] for r in caplog.records] == ["event=logout_disconnect_failed"]

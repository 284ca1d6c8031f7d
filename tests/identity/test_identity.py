"""Who a handshake connects as, through the full ASGI app: token, then session, then ``?id=``."""

import json
import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from relay.identity.tokens import issue
from tests.conftest import frame, send_text

V1 = ["relay.v1"]
session_db = pytest.mark.django_db(transaction=True)  # the handshake reads the session in another thread


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


async def assert_identity(communicator, client_id: str) -> None:
    """The connection (opened with relay.v1) is ``client_id``: a frame to that id comes back from it."""
    await send_text(communicator, frame([client_id], "who"))
    assert json.loads(await communicator.receive_from()) == {"type": "message", "from": client_id, "payload": "who"}
    assert await communicator.receive_nothing(timeout=0.01)


# Tokens


@pytest.mark.parametrize("path", ["/ws?token={}", "/ws/?token={}", "/ws?other=1&token={}"])
async def test_query_token_is_the_identity(open_socket, path):
    accepted, communicator = await open_socket(path.format(issue("bob")), subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "bob")


async def test_bearer_header_is_the_identity(open_socket):
    accepted, communicator = await open_socket("/ws", headers=[bearer(issue("bob"))], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "bob")


async def test_bearer_scheme_is_case_insensitive(open_socket):
    header = (b"authorization", f"bearer {issue('bob')}".encode())
    accepted, communicator = await open_socket("/ws", headers=[header], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "bob")


async def test_token_minted_by_another_backend_connects(open_socket, settings):
    token = jwt.encode({"sub": "42", "exp": int(time.time()) + 60}, settings.SECRET_KEY, algorithm="HS256")
    accepted, communicator = await open_socket(f"/ws?token={token}", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "42")


async def test_delivery_to_a_token_identity(open_socket, connect):
    accepted, bob = await open_socket(f"/ws?token={issue('bob')}")
    assert accepted
    alice = await connect("alice")
    await send_text(alice, frame(["bob"], {"hi": 1}))
    assert await bob.receive_from() == '{"hi":1}'


def expired() -> str:
    return jwt.encode({"sub": "bob", "exp": int(time.time()) - 3600}, django_settings.SECRET_KEY, algorithm="HS256")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/ws?token=garbage", [], id="garbage-query-token"),
        pytest.param("/ws?token=garbage&id=alice", [], id="garbage-query-token-with-id"),
        pytest.param("/ws?id=alice", [bearer("garbage")], id="garbage-bearer-with-id"),
        pytest.param("/ws?id=alice", [(b"authorization", b"Bearer ")], id="empty-bearer-with-id"),
        pytest.param("/ws?token={expired}&id=alice", [], id="expired-token-with-id"),
        pytest.param("/ws?id=alice", [bearer("{expired}")], id="expired-bearer-with-id"),
        pytest.param("/ws?token={bob}&token={bob}", [], id="two-query-tokens"),
        pytest.param("/ws?token={forged}&id=alice", [], id="token-of-another-secret-with-id"),
    ],
)
async def test_bad_token_refuses_and_never_falls_through(open_socket, path, headers):
    values = {
        "expired": expired(),
        "bob": issue("bob"),
        "forged": jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, "f" * 64, algorithm="HS256"),
    }
    path = path.format(**values)
    headers = [(name, value.decode().format(**values).encode()) for name, value in headers]
    accepted, _ = await open_socket(path, headers=headers)
    assert accepted is False


async def test_non_bearer_authorization_header_is_not_a_token(open_socket):
    """Browsers resend HTTP Basic credentials on WebSocket handshakes: not a token, so not a refusal."""
    header = (b"authorization", b"Basic dXNlcjpwYXNz")
    accepted, communicator = await open_socket("/ws?id=alice", headers=[header], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "alice")


# Sessions


@session_db
async def test_session_login_is_the_identity(open_socket, logged_in):
    user, cookie = logged_in
    accepted, communicator = await open_socket("/ws", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, str(user.pk))


@session_db
@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(b"sessionid=no-such-session", id="unknown-session"),
        pytest.param(b"sessionid=", id="empty-session"),
        pytest.param(b"csrftoken=abc", id="other-cookie-only"),
    ],
)
async def test_anonymous_session_falls_through_to_query_id(open_socket, cookie):
    accepted, communicator = await open_socket("/ws?id=alice", headers=[(b"cookie", cookie)], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "alice")


@session_db
async def test_anonymous_session_without_query_id_is_refused(open_socket):
    accepted, _ = await open_socket("/ws", headers=[(b"cookie", b"sessionid=no-such-session")])
    assert accepted is False


@session_db
async def test_session_of_an_inactive_user_is_anonymous(open_socket, logged_in):
    user, cookie = logged_in
    user.is_active = False
    await sync_to_async(user.save)()
    accepted, _ = await open_socket("/ws", headers=[cookie])
    assert accepted is False


# Open mode off: only tokens and sessions


async def test_query_id_refused_when_open_mode_is_off(open_socket, settings):
    settings.RELAY_ALLOW_QUERY_ID = False
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False


async def test_tokens_work_when_open_mode_is_off(open_socket, settings):
    settings.RELAY_ALLOW_QUERY_ID = False
    accepted, by_query = await open_socket(f"/ws?token={issue('bob')}", subprotocols=V1)
    assert accepted
    accepted, by_header = await open_socket("/ws", headers=[bearer(issue("carol"))], subprotocols=V1)
    assert accepted
    await assert_identity(by_query, "bob")
    await assert_identity(by_header, "carol")


@session_db
async def test_sessions_work_when_open_mode_is_off(open_socket, settings, logged_in):
    settings.RELAY_ALLOW_QUERY_ID = False
    user, cookie = logged_in
    accepted, communicator = await open_socket("/ws?id=alice", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, str(user.pk))


# Precedence: token > session > ?id=


@session_db
@pytest.mark.parametrize("token_in", ["query", "header"])
async def test_token_wins_over_session_and_query_id(open_socket, logged_in, token_in):
    _, cookie = logged_in
    if token_in == "query":
        path, headers = f"/ws?id=alice&token={issue('bob')}", [cookie]
    else:
        path, headers = "/ws?id=alice", [cookie, bearer(issue("bob"))]
    accepted, communicator = await open_socket(path, headers=headers, subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "bob")


@session_db
async def test_session_wins_over_query_id(open_socket, logged_in):
    user, cookie = logged_in
    accepted, communicator = await open_socket("/ws?id=alice", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, str(user.pk))


@session_db
async def test_bad_token_with_a_valid_session_is_refused(open_socket, logged_in):
    _, cookie = logged_in
    accepted, _ = await open_socket("/ws?token=garbage", headers=[cookie])
    assert accepted is False

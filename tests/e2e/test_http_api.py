"""The HTTP API over a plain HTTP client, against two daphne processes sharing the real Redis.

Keys come from ``manage.py relay_apikey`` run with the servers' environment; deliveries are
checked on real WebSocket clients of both processes; every error is JSON with the same
codes as WebSocket frames; pushes land in the audit log of the servers' database.
"""

import asyncio
import http.client
import json
import os
import re
import select
import socket
import sqlite3
import stat
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from .conftest import SUBPROTOCOL_V1, Server, assert_all_silent, run_manage_sync

MAX_BYTES = 64 * 1024  # RELAY_MAX_MESSAGE_BYTES default
SEND_AND_PRESENCE = ("--scope", "send", "--scope", "presence")


# --- helpers (test_presence and test_admin use them too) ----------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self):
        assert self.headers.get("content-type") == "application/json", (self.status, self.headers, self.body[:300])
        return json.loads(self.body)


def request_sync(server: Server, method: str, path: str, body: bytes | str | None = None, headers=None) -> Response:
    """One HTTP request to ``server`` with http.client: no redirects followed, no cookies kept."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        payload = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


async def request(server: Server, method: str, path: str, body=None, headers=None) -> Response:
    """``request_sync`` in a thread, so the test's WebSocket clients keep being served."""
    return await asyncio.to_thread(request_sync, server, method, path, body, headers)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def api_send(server: Server, key: str, body) -> Response:
    """POST /relay/api/send with a JSON body (``str``/``bytes`` bodies are sent as they are)."""
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await request(server, "POST", "/relay/api/send", raw, bearer(key))


async def api_presence(server: Server, key: str, ids: list[str]) -> dict:
    """GET /relay/api/presence?ids=...: the JSON answer (which must be a 200)."""
    response = await request(server, "GET", f"/relay/api/presence?ids={','.join(ids)}", headers=bearer(key))
    assert response.status == 200, (response.status, response.body)
    return response.json


def create_named_api_key(server: Server, name: str, *options: str) -> str:
    """``manage.py relay_apikey create NAME [options]``: the key it prints once.

    Without options, a key that may send and read presence, for any id.
    """
    result = run_manage_sync(server, "relay_apikey", "create", name, *(options or SEND_AND_PRESENCE))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("rk_"), key
    return key


def audit_entries(server: Server, actor: str) -> list[dict]:
    """The audit log rows of ``actor``, oldest first, read from the servers' SQLite database."""
    path = urlsplit(server.env["DATABASE_URL"]).path[1:]
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT source, actor, targets, online, size FROM relay_admin_auditentry WHERE actor = ? ORDER BY id",
            (actor,),
        ).fetchall()
    return [{**dict(row), "targets": json.loads(row["targets"])} for row in rows]


async def wait_online(server: Server, key: str, expected: dict[str, int], timeout: float = 3.0) -> None:
    """Wait until presence reports exactly ``expected`` for its ids (connects are written asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await api_presence(server, key, list(expected))
        if answer["connections"] == {i: n for i, n in expected.items() if n}:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"presence on {server} is {answer}, expected {expected}")
        await asyncio.sleep(0.05)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_b(start_server) -> Server:
    """A second daphne process on the same Redis and database."""
    return start_server(name="b")


@pytest.fixture(scope="module")
def key_name(asgi_server) -> str:
    """One key per server the module runs under: they share the database."""
    return f"e2e-api-{asgi_server}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api_key(server, key_name) -> str:
    return create_named_api_key(server, key_name)


@pytest.fixture(scope="module")
def revoked_key(server) -> str:
    name = f"e2e-revoked-{uuid.uuid4().hex[:8]}"
    key = create_named_api_key(server, name)
    result = run_manage_sync(server, "relay_apikey", "revoke", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Revoked {name}."
    return key


def assert_json_error(response: Response, status: int, code: str) -> None:
    """An error answer: the status, JSON (never HTML), ``{"error": {"code", "detail"}}``."""
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["content-type"] == "application/json"
    body = response.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "detail"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["detail"], str) and body["error"]["detail"]


# --- sending --------------------------------------------------------------------------------


async def test_send_reaches_clients_on_both_processes(server, server_b, api_key, key_name, connect, uid):
    on_a = await connect(server, uid("on-a"))
    on_b = await connect(server_b, uid("on-b"), subprotocol=SUBPROTOCOL_V1)
    both_a, both_b = await connect(server, uid("both")), await connect(server_b, uid("both"))
    bystander = await connect(server_b, uid("bystander"))
    offline = uid("offline")
    await wait_online(server, api_key, {on_a.client_id: 1, on_b.client_id: 1, both_a.client_id: 2})
    payload = {"invoice": 1234, "text": "paid ✓"}
    targets = [on_a.client_id, on_b.client_id, both_a.client_id, offline, on_a.client_id]

    response = await api_send(server, api_key, {"targets": targets, "payload": payload})

    assert response.status == 202
    # Duplicates once; ``offline`` has no connection; each target's stream got the push.
    assert response.json == {
        "targets": 4,
        "online": 3,
        "offsets": {on_a.client_id: 1, on_b.client_id: 1, both_a.client_id: 1, offline: 1},
    }
    assert await on_a.recv_json() == payload
    assert await on_b.recv_json() == {"type": "message", "from": None, "payload": payload}
    assert await both_a.recv_json() == payload
    assert await both_b.recv_json() == payload
    await assert_all_silent([on_a, on_b, both_a, both_b, bystander])
    assert audit_entries(server, f"api key {key_name}")[-1] == {
        "source": "api",
        "actor": f"api key {key_name}",
        "targets": [on_a.client_id, on_b.client_id, both_a.client_id, offline],
        "online": 3,
        "size": len(json.dumps(payload, separators=(",", ":"))),
    }


async def test_send_through_the_other_process(server, server_b, api_key, key_name, connect, uid):
    client = await connect(server, uid("on-a"))
    numeric = uuid.uuid4().int % 10**15 + 10**14
    by_number = await connect(server, numeric)
    before = len(audit_entries(server, f"api key {key_name}"))

    response = await api_send(server_b, api_key, {"targets": [client.client_id, numeric], "payload": None})

    assert response.status == 202
    assert response.json == {"targets": 2, "online": 2, "offsets": {client.client_id: 1, str(numeric): 1}}
    assert await client.recv_text() == "null"
    assert await by_number.recv_text() == "null"
    entries = audit_entries(server, f"api key {key_name}")
    assert len(entries) == before + 1
    assert entries[-1]["targets"] == [client.client_id, str(numeric)]


async def test_body_of_exactly_64_kib_is_accepted(server, api_key, connect, uid):
    client = await connect(server, uid("big"))
    head = json.dumps({"targets": [client.client_id], "payload": ""})[:-2]
    body = head + "a" * (MAX_BYTES - len(head) - 2) + '"}'
    assert len(body.encode()) == MAX_BYTES

    response = await api_send(server, api_key, body)

    assert response.status == 202
    assert await client.recv_json() == json.loads(body)["payload"]


# --- authentication -------------------------------------------------------------------------

UNAUTHORIZED = {
    "no Authorization": lambda key, revoked: {},
    "Basic scheme": lambda key, revoked: {"Authorization": f"Basic {key}"},
    "Token scheme": lambda key, revoked: {"Authorization": f"Token {key}"},
    "bare key": lambda key, revoked: {"Authorization": key},
    "empty Bearer": lambda key, revoked: {"Authorization": "Bearer "},
    "unknown key": lambda key, revoked: {"Authorization": "Bearer rk_0123456789ab_" + "x" * 43},
    "key with a wrong secret": lambda key, revoked: {"Authorization": f"Bearer {key[:-4]}abcd"},
    "not a key": lambda key, revoked: {"Authorization": "Bearer hello"},
    "revoked key": lambda key, revoked: {"Authorization": f"Bearer {revoked}"},
}


@pytest.mark.parametrize("case", UNAUTHORIZED)
async def test_send_without_a_valid_key_is_401(server, api_key, revoked_key, connect, uid, case):
    client = await connect(server, uid("target"))
    headers = {"Content-Type": "application/json", **UNAUTHORIZED[case](api_key, revoked_key)}
    body = json.dumps({"targets": [client.client_id], "payload": "must not arrive"})

    response = await request(server, "POST", "/relay/api/send", body, headers)

    assert_json_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="relay"'
    await client.assert_silent()


@pytest.mark.parametrize("case", ["no Authorization", "revoked key", "unknown key"])
async def test_presence_without_a_valid_key_is_401(server, api_key, revoked_key, connect, uid, case):
    client = await connect(server, uid("watched"))

    response = await request(
        server, "GET", f"/relay/api/presence?ids={client.client_id}", headers=UNAUTHORIZED[case](api_key, revoked_key)
    )

    assert_json_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="relay"'


# --- bad bodies: the WebSocket error codes --------------------------------------------------

BAD_BODIES = {
    "invalid JSON": (lambda t: '{"targets": [', "invalid_json"),
    "NaN payload": (lambda t: f'{{"targets": ["{t}"], "payload": NaN}}', "invalid_json"),
    "not an object": (lambda t: json.dumps([{"targets": [t], "payload": 1}]), "invalid_message"),
    "a string": (lambda t: json.dumps(t), "invalid_message"),
    "targets missing": (lambda t: json.dumps({"payload": 1}), "invalid_message"),
    "targets not a list": (lambda t: json.dumps({"targets": t, "payload": 1}), "invalid_message"),
    "targets empty": (lambda t: json.dumps({"targets": [], "payload": 1}), "invalid_message"),
    "invalid target": (lambda t: json.dumps({"targets": [t, "bad id"], "payload": 1}), "invalid_target"),
    "too many targets": (
        lambda t: json.dumps({"targets": [t] + [f"{t}-{i}" for i in range(100)], "payload": 1}),
        "too_many_targets",
    ),
    "payload missing": (lambda t: json.dumps({"targets": [t]}), "invalid_message"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
async def test_bad_body_is_400_with_the_websocket_error_code(server, api_key, connect, uid, case):
    build, code = BAD_BODIES[case]
    target = await connect(server, uid("target"))
    websocket_sender = await connect(server, uid("ws-sender"))
    body = build(target.client_id)

    response = await api_send(server, api_key, body)

    assert_json_error(response, 400, code)
    # The same text as a WebSocket frame gets the same code.
    await websocket_sender.send_text(body)
    assert (await websocket_sender.recv_json())["error"]["code"] == code
    await assert_all_silent([target, websocket_sender])


async def test_body_that_is_not_utf8_is_400(server, api_key, connect, uid):
    target = await connect(server, uid("target"))
    body = b'{"targets": ["' + target.client_id.encode() + b'"], "payload": "\xff\xfe"}'

    response = await api_send(server, api_key, body)

    assert_json_error(response, 400, "invalid_json")
    await target.assert_silent()


async def test_body_over_64_kib_is_413(server, api_key, connect, uid):
    target = await connect(server, uid("target"))
    head = json.dumps({"targets": [target.client_id], "payload": ""})[:-2]
    body = head + "a" * (MAX_BYTES + 1 - len(head) - 2) + '"}'
    assert len(body.encode()) == MAX_BYTES + 1

    response = await api_send(server, api_key, body)

    assert_json_error(response, 413, "message_too_large")
    response = await api_send(server, api_key, body.replace('"a', '"' + "a" * 1_000_000))
    assert_json_error(response, 413, "message_too_large")
    await target.assert_silent()


# --- methods and paths ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_send_are_405(server, api_key, connect, uid, method):
    target = await connect(server, uid("target"))
    body = json.dumps({"targets": [target.client_id], "payload": 1})

    response = await request(server, method, "/relay/api/send", body if method != "GET" else None, bearer(api_key))

    assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    await target.assert_silent()


async def test_post_on_presence_is_405(server, api_key):
    response = await request(server, "POST", "/relay/api/presence?ids=x", "{}", bearer(api_key))

    assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "path", ["/relay/api/x", "/relay/api/send/extra", "/relay/api/", "/relay/api/presence/x", "/relay/api"]
)
async def test_unknown_api_path_is_404_json(server, api_key, path):
    response = await request(server, "GET", path, headers=bearer(api_key))

    assert_json_error(response, 404, "not_found")


# --- presence -------------------------------------------------------------------------------


async def test_presence_counts_connections_on_both_processes(server, server_b, api_key, connect, uid):
    both, only_b, nobody = uid("both"), uid("only-b"), uid("nobody")
    await connect(server, both)
    await connect(server, both)
    await connect(server_b, both)
    await connect(server_b, only_b)
    await wait_online(server, api_key, {both: 3, only_b: 1})

    for answering in (server, server_b):
        assert await api_presence(answering, api_key, [nobody, only_b, both]) == {
            "online": [only_b, both],
            "connections": {only_b: 1, both: 3},
        }


@pytest.mark.parametrize(
    ("query", "code"),
    [("", "invalid_message"), ("?ids=", "invalid_message"), ("?ids=ok,bad%20id", "invalid_target")],
)
async def test_presence_with_bad_ids_is_400(server, api_key, query, code):
    response = await request(server, "GET", f"/relay/api/presence{query}", headers=bearer(api_key))

    assert_json_error(response, 400, code)


async def test_integers_beyond_64_bits_are_pushed_like_any_json(server, api_key, connect, uid):
    client = await connect(server, uid("big"))
    body = f'{{"targets": ["{client.client_id}"], "payload": [123456789012345678901234567890, -1]}}'
    response = await api_send(server, api_key, body)
    assert (response.status, json.loads(response.body)) == (
        202,
        {"targets": 1, "online": 1, "offsets": {client.client_id: 1}},
    )
    assert await client.recv_text() == "[123456789012345678901234567890,-1]"


# --- issue 12: bodies refused before they are read, JSON everywhere, scoped keys ------------------


def open_file_bytes(pid: int) -> int:
    """Bytes in the regular files a process holds open but its database and log: its temporary files."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if stat.S_ISREG(info.st_mode) and not target.endswith((".sqlite3", ".log", "-journal", "-wal")):
            total += info.st_size
    return total


def post_chunked(port: int, path: str, megabytes: int, headers: str = "") -> bytes:
    """POST ``megabytes`` of chunked body; the start of the answer, which may come before the body is sent.

    uvicorn lets the relay answer 413 as soon as the limit is read, and then closes the
    connection: the answer is read as soon as it is there, before the close resets it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(megabytes):
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed while the body was still coming
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """An HTTP answer's head and its Content-Length of body (or what came before the connection ended)."""
    answer = b""
    while True:
        head, _, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head) if _ else None
        if length and len(body) >= int(length.group(1)):
            return answer
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return answer
        if not data:
            return answer
        answer += data


HUGE_MB = 50


async def test_a_huge_body_without_a_key_is_refused_before_django_reads_it(server):
    """The finding: 300 MB chunked with no key was read whole, then spooled again by Django, before the 401.

    Daphne (Twisted) still receives the whole body before any application code runs (one
    copy, in a temporary file: only the proxy's client_max_body_size prevents that); Django's
    second copy is gone.
    """
    pid = server.process.pid
    peak = baseline = open_file_bytes(pid)
    sending = asyncio.create_task(asyncio.to_thread(post_chunked, server.port, "/relay/api/send", HUGE_MB))
    while not sending.done():
        peak = max(peak, open_file_bytes(pid))
        await asyncio.sleep(0.01)
    answer = await sending

    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"code": "unauthorized"' in answer
    growth = peak - baseline
    print(f"\n{HUGE_MB} MB chunked, no key: 401; the server's temporary files peaked at +{growth / 1e6:.0f} MB")
    assert growth < 1.2 * HUGE_MB * 2**20, f"temporary files grew by {growth / 1e6:.0f} MB: Django spooled it too"


async def test_a_declared_body_over_the_limit_is_413_with_a_key(server, api_key):
    answer = await asyncio.to_thread(
        post_chunked, server.port, "/relay/api/send", 2, f"Authorization: Bearer {api_key}\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"code": "message_too_large"' in answer


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/relay/api/x", "/relay/api/send/extra", "/relay/api/", "/relay/api"])
async def test_unknown_api_path_is_404_json_for_every_method(server, api_key, path, method):
    """The findings: a POST there got Django's CSRF page (HTML), not the JSON 404; ``/relay/api`` an HTML 301."""
    response = await request(server, method, path, headers={"Authorization": f"Bearer {api_key}"})

    assert_json_error(response, 404, "not_found")


async def test_a_body_to_the_api_path_without_its_slash_is_refused_before_django_reads_it(server):
    """The finding: ``POST /relay/api`` was outside the guard's prefix, so Django read the body before its 301."""
    response = await request(server, "POST", "/relay/api", b"{}" * 1000, {"Content-Type": "application/json"})

    assert_json_error(response, 401, "unauthorized")


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "BREW"])
async def test_other_methods_on_known_paths_are_json_405(server, api_key, method):
    response = await request(server, method, "/relay/api/send", headers=bearer(api_key))
    if method == "BREW" and server.kind == "uvicorn":  # httptools refuses methods it does not know
        assert (response.status, response.body) == (400, b"Invalid HTTP request received."), response
        return
    assert response.status == 405, (response.status, response.body[:300])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["allow"] == "POST"


async def test_a_send_only_key_cannot_enumerate_who_is_online(server, api_key, connect, uid):
    """The findings: any key enumerated who of ids 1..5000 was online, 100 ids a request, with /presence,
    and a send-only key still could, by a binary search over sends: each answer said how many were online."""
    online = await connect(server, uid("online"))
    key = create_named_api_key(server, f"e2e-send-only-{uuid.uuid4().hex[:8]}", "--scope", "send")
    ids = [online.client_id, *(str(n) for n in range(1, 100))]

    response = await request(server, "GET", f"/relay/api/presence?ids={','.join(ids)}", headers=bearer(key))

    assert_json_error(response, 403, "forbidden")
    assert response.json["error"]["detail"] == "This key may not read presence (its scope: send; any id)."
    sent = await api_send(server, key, {"targets": [online.client_id, uid("offline")], "payload": "still sends"})
    assert sent.status == 202
    assert set(sent.json) == {"targets", "offsets"} and sent.json["targets"] == 2  # and not who was online
    assert await online.recv_json() == "still sends"
    # A key that may read presence is told, as /presence would tell it.
    told = await api_send(server, api_key, {"targets": [online.client_id, uid("offline")], "payload": "told"})
    assert (told.status, told.json["online"]) == (202, 1)
    assert await online.recv_json() == "told"


async def test_a_key_limited_to_client_id_patterns_reaches_those_only(server, connect, uid):
    ours, theirs = await connect(server, uid("tenant-a")), await connect(server, uid("tenant-b"))
    prefix = ours.client_id.removesuffix("tenant-a")
    key = create_named_api_key(
        server,
        f"e2e-tenant-{uuid.uuid4().hex[:8]}",
        "--scope",
        "send",
        "--scope",
        "presence",
        "--ids",
        f"{prefix}tenant-a*",
    )

    response = await api_send(server, key, {"targets": [ours.client_id, theirs.client_id], "payload": "no"})
    assert_json_error(response, 403, "forbidden")
    assert theirs.client_id in response.json["error"]["detail"]
    assert (await api_send(server, key, {"targets": [ours.client_id], "payload": "yes"})).status == 202
    assert await ours.recv_json() == "yes"
    await assert_all_silent([ours, theirs])
    assert (await api_presence(server, key, [ours.client_id]))["online"] == [ours.client_id]
    denied = await request(server, "GET", f"/relay/api/presence?ids={theirs.client_id}", headers=bearer(key))
    assert_json_error(denied, 403, "forbidden")

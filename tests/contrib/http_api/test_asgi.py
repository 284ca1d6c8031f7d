"""ApiRequestGuard: an HTTP API request with a body is refused before Django reads the body (issue 12).

Driven through the site's ASGI application, message by message, so the tests see which
body messages were read: a refusal happens before the first one.
"""

import json

import pytest
from asgiref.testing import ApplicationCommunicator

from relay.contrib.http_api.asgi import ApiRequestGuard
from relay.contrib.http_api.models import ApiKey
from relayproject.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)  # the guard reads keys in another thread

LIMIT = 64 * 1024


def http_scope(path: str, headers: dict[str, str], method: str = "POST") -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def response_of(communicator: ApplicationCommunicator) -> tuple[int, dict, dict]:
    start = await communicator.receive_output(5)
    body = await communicator.receive_output(5)
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, json.loads(body["body"])


@pytest.fixture
def key() -> str:
    return ApiKey.generate("guarded")[1]


async def test_a_declared_body_over_the_limit_is_413_before_a_byte_is_read():
    communicator = ApplicationCommunicator(
        application, http_scope("/relay/api/send", {"content-length": str(300 * 1024 * 1024)})
    )
    status, headers, body = await response_of(communicator)  # no body message was sent: none was awaited
    assert (status, body["error"]["code"]) == (413, "message_too_large")
    assert headers["content-type"] == "application/json"
    await communicator.wait(1)


@pytest.mark.parametrize("authorization", [None, "Bearer rk_000000000000_nope", "Basic abc"])
async def test_a_body_without_a_valid_key_is_401_before_a_byte_is_read(authorization):
    """The finding: 300 MB chunked with no key was read whole (to temporary files) before the 401."""
    headers = {"transfer-encoding": "chunked", **({"authorization": authorization} if authorization else {})}
    communicator = ApplicationCommunicator(application, http_scope("/relay/api/send", headers))
    status, headers, body = await response_of(communicator)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert headers["www-authenticate"] == 'Bearer realm="relay"'
    await communicator.wait(1)


async def test_the_api_path_without_its_slash_is_guarded_too():
    """The finding: ``POST /relay/api`` was outside the guard's prefix; Django read the body, then redirected."""
    communicator = ApplicationCommunicator(application, http_scope("/relay/api", {"content-length": "100"}))
    status, _, body = await response_of(communicator)  # no body message was sent: none was awaited
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    await communicator.wait(1)


async def test_the_api_path_without_its_slash_is_a_json_404_with_a_key(key):
    communicator = ApplicationCommunicator(
        application, http_scope("/relay/api", {"content-length": "2", "authorization": f"Bearer {key}"})
    )
    await communicator.send_input({"type": "http.request", "body": b"{}", "more_body": False})
    status, _, body = await response_of(communicator)  # JSON, not Django's redirect
    assert (status, body["error"]["code"]) == (404, "not_found")
    await communicator.wait(1)


async def test_a_chunked_body_is_read_only_up_to_the_limit(key):
    communicator = ApplicationCommunicator(
        application,
        http_scope("/relay/api/send", {"transfer-encoding": "chunked", "authorization": f"Bearer {key}"}),
    )
    chunk = b"x" * 8192
    for _ in range(LIMIT // len(chunk) + 1):  # one chunk past the limit
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": True})
    status, _, body = await response_of(communicator)
    assert (status, body["error"]["code"]) == (413, "message_too_large")
    await communicator.wait(1)


async def test_a_body_within_the_limit_reaches_the_view_with_the_key(key, connect):
    alice = await connect("alice")
    payload = json.dumps({"targets": ["alice"], "payload": "through the guard"}).encode()
    communicator = ApplicationCommunicator(
        application,
        http_scope("/relay/api/send", {"transfer-encoding": "chunked", "authorization": f"Bearer {key}"}),
    )
    await communicator.send_input({"type": "http.request", "body": payload[:10], "more_body": True})
    await communicator.send_input({"type": "http.request", "body": payload[10:], "more_body": False})
    status, _, body = await response_of(communicator)
    assert (status, body) == (202, {"targets": 1, "offsets": {}})  # a send-only key: not who was online
    assert await alice.receive_from() == '"through the guard"'


async def test_requests_that_are_not_the_apis_pass_untouched():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope.get("path", scope["type"]))

    guard = ApiRequestGuard(inner)
    huge = {"content-length": str(10**9)}
    await guard(http_scope("/admin/upload", huge), None, None)
    await guard(http_scope("/relay/api/presence", {}, method="GET"), None, None)  # no body: the view decides
    await guard({"type": "lifespan"}, None, None)
    assert seen == ["/admin/upload", "/relay/api/presence", None] or seen[:2] == [
        "/admin/upload",
        "/relay/api/presence",
    ]

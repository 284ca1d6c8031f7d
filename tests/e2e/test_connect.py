"""Connecting to a real daphne: the seed's ``/ws?id=`` flow, both framings, refused handshakes."""

import json

import pytest
from websockets.exceptions import InvalidStatus

from .conftest import SUBPROTOCOL_V1, numeric_id, open_ws

# JSON values of every kind, including text that is not ASCII and a lone surrogate
# (valid JSON as the escape "\ud800", not encodable as UTF-8 unescaped).
PAYLOADS = [
    {"text": "hello", "n": 1},
    {"nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}]}},
    [1, "two", None],
    "just a string",
    "é ü ß 中文 😀",
    "\ud800",
    "",
    42,
    -3.25,
    0,
    True,
    False,
    None,
    {},
    [],
]


# --- the seed's flow ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_seed_flow_in_memory(memory_server, connect, path):
    """``make run``'s default: /ws?id=1 and /ws?id=2 on the in-memory layer."""
    one = await connect(memory_server, 1, path=path)
    two = await connect(memory_server, 2, path=path)
    payload = {"text": "hello from 1"}

    await one.send_json({"targets": [2], "payload": payload})

    assert json.loads(await two.recv_text()) == payload
    await one.assert_silent()
    await two.assert_silent()


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_seed_flow_on_redis(server, connect, path):
    """The same flow on the Redis-backed site, with numeric ids unique to this test."""
    first, second = numeric_id(), numeric_id()
    one = await connect(server, first, path=path)
    two = await connect(server, second, path=path)
    payload = {"text": "hello", "from": first}

    await one.send_json({"targets": [second], "payload": payload})

    assert json.loads(await two.recv_text()) == payload
    await one.assert_silent()
    await two.assert_silent()


# --- framings ---------------------------------------------------------------------------


async def test_both_framings_deliver_every_kind_of_json_value(server, connect, uid):
    sender = await connect(server, uid("sender"))
    raw = await connect(server, uid("raw"))
    enveloped = await connect(server, uid("v1"), subprotocol=SUBPROTOCOL_V1)
    assert sender.subprotocol is None
    assert raw.subprotocol is None
    assert enveloped.subprotocol == SUBPROTOCOL_V1

    for payload in PAYLOADS:
        await sender.send_json({"targets": [raw.client_id, enveloped.client_id], "payload": payload})

    assert await raw.recv_many(len(PAYLOADS)) == PAYLOADS
    assert await enveloped.recv_many(len(PAYLOADS)) == [
        {"type": "message", "from": sender.client_id, "payload": payload} for payload in PAYLOADS
    ]
    await sender.assert_silent()


async def test_framing_belongs_to_the_receiving_connection(server, connect, uid):
    """A relay.v1 sender reaching a raw client: the raw client still gets the bare payload."""
    sender = await connect(server, uid("v1-sender"), subprotocol=SUBPROTOCOL_V1)
    raw = await connect(server, uid("raw"))

    await sender.send_json({"targets": [raw.client_id], "payload": {"k": "v"}})

    assert await raw.recv_text() == '{"k":"v"}'
    await sender.assert_silent()


async def test_v1_from_is_the_sender_id_as_a_string(server, connect):
    sender_id, target_id = numeric_id(), numeric_id()
    sender = await connect(server, sender_id)
    target = await connect(server, target_id, subprotocol=SUBPROTOCOL_V1)

    await sender.send_json({"targets": [target_id], "payload": 1})

    assert await target.recv_json() == {"type": "message", "from": str(sender_id), "payload": 1}


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([SUBPROTOCOL_V1], SUBPROTOCOL_V1),
        (["chat.other", SUBPROTOCOL_V1], SUBPROTOCOL_V1),
        (["chat.other"], None),
    ],
)
async def test_subprotocol_negotiation(server, uid, offered, chosen):
    """relay.v1 is chosen when offered; an unknown one alone gets the raw framing."""
    async with open_ws(server, f"id={uid('nego')}", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen


async def test_raw_error_shape(server, connect, uid):
    client = await connect(server, uid("raw"))

    await client.send_text("not json")

    error = await client.recv_json()
    assert set(error) == {"error"}
    assert set(error["error"]) == {"code", "detail"}
    assert error["error"]["code"] == "invalid_json"
    assert isinstance(error["error"]["detail"], str) and error["error"]["detail"]


@pytest.mark.parametrize(("ref", "expected"), [("req-1", "req-1"), (7, 7), (None, None)])
async def test_v1_error_envelope_carries_the_frames_id(server, connect, uid, ref, expected):
    client = await connect(server, uid("v1"), subprotocol=SUBPROTOCOL_V1)
    frame = {"targets": ["not a valid id"], "payload": 1}
    if ref is not None:
        frame["id"] = ref

    await client.send_json(frame)

    error = await client.recv_json()
    assert error["type"] == "error"
    assert error["code"] == "invalid_target"
    assert isinstance(error["detail"], str) and error["detail"]
    assert set(error) <= {"type", "code", "detail", "ref"}
    assert error.get("ref") == expected


async def test_v1_error_for_a_frame_that_is_not_json(server, connect, uid):
    client = await connect(server, uid("v1"), subprotocol=SUBPROTOCOL_V1)

    await client.send_text("{oops")

    error = await client.recv_json()
    assert error["type"] == "error"
    assert error["code"] == "invalid_json"
    assert error.get("ref") is None


# --- handshakes -------------------------------------------------------------------------


async def test_longest_id_and_every_allowed_character_are_accepted(server, connect, uid):
    longest = (uid("x") + "x" * 64)[:64]
    every = "AZaz09_.-" + uid()[-12:]
    a = await connect(server, longest)
    b = await connect(server, every, subprotocol=SUBPROTOCOL_V1)

    await a.send_json({"targets": [every], "payload": "hi"})

    assert await b.recv_json() == {"type": "message", "from": longest, "payload": "hi"}


REFUSED = {
    "no identity": ("/ws", ""),
    "no identity, trailing slash": ("/ws/", ""),
    "other query only": ("/ws", "foo=1"),
    "empty id": ("/ws", "id="),
    "space in id": ("/ws", "id=bad%20id"),
    "slash in id": ("/ws", "id=a%2Fb"),
    "non-ASCII id": ("/ws", "id=caf%C3%A9"),
    "65 characters": ("/ws", "id=" + "x" * 65),
    "two ids": ("/ws", "id=a1&id=b2"),
    "unknown path": ("/other", "id={id}"),
    "root path": ("/", "id={id}"),
    "path below /ws": ("/ws/extra", "id={id}"),
    "path like /ws": ("/wsx", "id={id}"),
    "double slash": ("/ws//", "id={id}"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_handshake_refused_with_403(server, uid, case):
    path, query = REFUSED[case]
    client_id = uid("refused")
    query = query.format(id=client_id)
    refusals_before = len(server.events("refused"))

    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, query, path=path):
            pass

    assert refused.value.response.status_code == 403
    assert len(await server.wait_for_events("refused", refusals_before + 1)) == refusals_before + 1
    assert server.events("connect", client=client_id) == []  # never reached a consumer

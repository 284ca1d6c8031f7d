"""Every kind of bad frame over a real socket: exactly one error, and nothing else changes.

Each case checks that the sender gets exactly the right error code, that the connection
stays open (a valid frame afterwards is delivered), that no other client received
anything because of the bad frame (the observer is among its targets where it has any),
and that the server logged one line for the refused frame.
"""

import json
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import SUBPROTOCOL_V1, assert_all_silent

MAX_BYTES = 64 * 1024  # RELAY_MAX_MESSAGE_BYTES default
#: The servers' own frame size limits: daphne's websocket_max_message_size, uvicorn's --ws-max-size.
DEFAULT_LIMITS = {"daphne": 1024 * 1024, "uvicorn": 16 * 1024 * 1024}
MAKEFILE_LIMIT = 128 * 1024  # DAPHNE_FLAGS of ``make run`` and the README's deploy commands


def frame(targets, payload="x", **extra) -> str:
    return json.dumps({"targets": targets, "payload": payload, **extra})


def frame_of_size(target: str, size: int, char: str = "a") -> str:
    """A valid-looking frame of exactly ``size`` UTF-8 bytes addressed to ``target``."""
    head = frame([target], "")[:-2]  # ... "payload": "
    tail = '"}'
    room = size - len(head.encode()) - len(tail)
    width = len(char.encode())
    text = head + char * (room // width) + "a" * (room % width) + tail
    assert len(text.encode()) == size
    return text


def raw_frame(target: str, payload_json: str, extra_target_json: str = "") -> str:
    """A frame written by hand, for payloads (NaN, deep nesting) that json.dumps will not write."""
    targets = f'["{target}", {extra_target_json}]' if extra_target_json else f'["{target}"]'
    return f'{{"targets": {targets}, "payload": {payload_json}}}'


# name -> (frame for an observer id, error code); bytes are sent as a binary frame.
BAD_FRAMES: dict[str, tuple[Callable[[str], str | bytes], str]] = {
    "not JSON": (lambda t: "hello, relay", "invalid_json"),
    "empty text": (lambda t: "", "invalid_json"),
    "truncated JSON": (lambda t: frame([t])[:-1], "invalid_json"),
    "trailing garbage": (lambda t: frame([t]) + " x", "invalid_json"),
    "a list": (lambda t: json.dumps([{"targets": [t], "payload": 1}]), "invalid_message"),
    "a string": (lambda t: json.dumps(t), "invalid_message"),
    "a number": (lambda t: "42", "invalid_message"),
    "null": (lambda t: "null", "invalid_message"),
    "true": (lambda t: "true", "invalid_message"),
    "targets missing": (lambda t: json.dumps({"payload": 1, "to": [t]}), "invalid_message"),
    "targets a string": (lambda t: frame(t), "invalid_message"),
    "targets an object": (lambda t: frame({t: True}), "invalid_message"),
    "targets a number": (lambda t: frame(2), "invalid_message"),
    "targets null": (lambda t: frame(None), "invalid_message"),
    "targets empty": (lambda t: frame([]), "invalid_message"),
    "101 targets": (lambda t: frame([t] + [f"{t}-{i}" for i in range(100)]), "too_many_targets"),
    "target with a space": (lambda t: frame([t, "bad id"]), "invalid_target"),
    "target empty": (lambda t: frame([t, ""]), "invalid_target"),
    "target of 65 characters": (lambda t: frame([t, "x" * 65]), "invalid_target"),
    "target non-ASCII": (lambda t: frame([t, "café"]), "invalid_target"),
    "target with a slash": (lambda t: frame([t, "a/b"]), "invalid_target"),
    "target true": (lambda t: frame([t, True]), "invalid_target"),
    "target null": (lambda t: frame([t, None]), "invalid_target"),
    "target a float": (lambda t: frame([t, 2.5]), "invalid_target"),
    "target a list": (lambda t: frame([t, [t]]), "invalid_target"),
    "target an object": (lambda t: frame([t, {"id": t}]), "invalid_target"),
    "payload missing": (lambda t: json.dumps({"targets": [t]}), "invalid_message"),
    "one byte over 64 KiB": (lambda t: frame_of_size(t, MAX_BYTES + 1), "message_too_large"),
    "over 64 KiB in UTF-8, under in characters": (
        lambda t: frame_of_size(t, MAX_BYTES + 2, char="é"),
        "message_too_large",
    ),
    "500 KB, under daphne's 1 MiB": (lambda t: frame_of_size(t, 500_000), "message_too_large"),
    "binary frame": (lambda t: frame([t]).encode(), "binary_not_supported"),
    "empty binary frame": (lambda t: b"", "binary_not_supported"),
    "50,000 open brackets": (lambda t: "[" * 50_000, "invalid_json"),
    "payload nested 30,000 deep": (lambda t: raw_frame(t, "[" * 30_000 + "]" * 30_000), "invalid_json"),
    "objects nested 10,000 deep": (
        lambda t: raw_frame(t, '{"a":' * 10_000 + "1" + "}" * 10_000),
        "invalid_json",
    ),
    "NaN payload": (lambda t: raw_frame(t, "NaN"), "invalid_json"),
    "Infinity payload": (lambda t: raw_frame(t, "Infinity"), "invalid_json"),
    "-Infinity payload": (lambda t: raw_frame(t, "[-Infinity]"), "invalid_json"),
    "NaN target": (lambda t: raw_frame(t, "1", extra_target_json="NaN"), "invalid_json"),
}


async def check_still_open_and_nothing_spurious(sender, observer, bystander, marker) -> None:
    """A valid frame to all three is the next (and only) thing each of them receives."""
    await sender.send_json({"targets": [observer.client_id, sender.client_id, bystander.client_id], "payload": marker})
    for client in (observer, sender, bystander):
        received = await client.recv_json()
        if client.subprotocol == SUBPROTOCOL_V1:
            received = received["payload"]
        assert received == marker, f"{client} got {received!r} before the frame sent after the bad one"
    await assert_all_silent([sender, observer, bystander], 0.1)


@pytest.mark.parametrize("case", BAD_FRAMES)
async def test_bad_frame(server, connect, uid, case):
    build, code = BAD_FRAMES[case]
    sender = await connect(server, uid("sender"))
    observer = await connect(server, uid("observer"))
    bystander = await connect(server, uid("bystander"))
    bad = build(observer.client_id)
    assert len(bad) < min(DEFAULT_LIMITS.values())  # the server's own limit: the relay's error, not 1009

    if isinstance(bad, bytes):
        await sender.send_bytes(bad)
    else:
        await sender.send_text(bad)

    error = await sender.recv_json()
    assert set(error) == {"error"}, error
    assert error["error"]["code"] == code, error
    assert isinstance(error["error"]["detail"], str) and error["error"]["detail"]
    await check_still_open_and_nothing_spurious(sender, observer, bystander, {"after": case})
    assert [line["code"] for line in server.events("frame_refused", client=sender.client_id)] == [code]


V1_CASES = {
    "targets missing": ({"payload": 1}, "invalid_message"),
    "targets empty": ({"targets": [], "payload": 1}, "invalid_message"),
    "payload missing": ({"targets": ["{t}"]}, "invalid_message"),
    "invalid target": ({"targets": ["{t}", "no way"], "payload": 1}, "invalid_target"),
    "101 targets": ({"targets": ["{t}"] + [f"{{t}}-{i}" for i in range(100)], "payload": 1}, "too_many_targets"),
    "NaN payload": ({"targets": ["{t}"], "payload": float("nan")}, "invalid_json"),
}


@pytest.mark.parametrize("case", V1_CASES)
async def test_bad_frame_relay_v1(server, connect, uid, case):
    """The relay.v1 error envelope: type, code, detail, and ref where the frame had an id."""
    template, code = V1_CASES[case]
    sender = await connect(server, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    observer = await connect(server, uid("observer"), subprotocol=SUBPROTOCOL_V1)
    bystander = await connect(server, uid("bystander"))
    ref = f"req-{uid()[-6:]}"
    bad = json.dumps({**template, "id": ref}).replace("{t}", observer.client_id)  # NaN: json.dumps allows it

    await sender.send_text(bad)

    error = await sender.recv_json()
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["detail"], str) and error["detail"]
    # A frame that is not valid JSON has no readable id.
    assert error.get("ref") == (None if code == "invalid_json" else ref)
    assert set(error) <= {"type", "code", "detail", "ref"}
    await check_still_open_and_nothing_spurious(sender, observer, bystander, {"after": case})
    assert [line["code"] for line in server.events("frame_refused", client=sender.client_id)] == [code]


async def test_boundaries_are_accepted(server, connect, uid):
    """Exactly 64 KiB and exactly 100 targets are within the limits."""
    sender = await connect(server, uid("sender"))
    observer = await connect(server, uid("observer"))

    largest = frame_of_size(observer.client_id, MAX_BYTES)
    await sender.send_text(largest)
    assert await observer.recv_json() == json.loads(largest)["payload"]

    targets = [observer.client_id] + [f"{observer.client_id}-{i}" for i in range(99)]
    await sender.send_json({"targets": targets, "payload": "to 100"})
    assert await observer.recv_json() == "to 100"

    # Duplicates count once: 150 entries naming 100 distinct ids.
    await sender.send_json({"targets": targets + targets[:50], "payload": "to 100 again"})
    assert await observer.recv_json() == "to 100 again"

    await sender.send_json({"targets": [observer.client_id], "payload": "x", "unknown": {"keys": "ignored"}})
    assert await observer.recv_json() == "x"
    await assert_all_silent([sender, observer])
    assert server.events("frame_refused", client=sender.client_id) == []


async def test_bad_frames_in_a_row_leave_the_connection_usable(server, connect, uid):
    """Ten different bad frames back to back: ten errors in order, then normal service."""
    sender = await connect(server, uid("sender"))
    observer = await connect(server, uid("observer"))
    bystander = await connect(server, uid("bystander"))
    cases = list(BAD_FRAMES)[:10]

    for case in cases:
        bad = BAD_FRAMES[case][0](observer.client_id)
        await (sender.send_bytes(bad) if isinstance(bad, bytes) else sender.send_text(bad))

    codes = [error["error"]["code"] for error in await sender.recv_many(len(cases))]
    assert codes == [BAD_FRAMES[case][1] for case in cases]
    await check_still_open_and_nothing_spurious(sender, observer, bystander, "still here")
    logged = [line["code"] for line in server.events("frame_refused", client=sender.client_id)]
    assert logged == [BAD_FRAMES[case][1] for case in cases]


@pytest.mark.parametrize("configured", [None, MAKEFILE_LIMIT], ids=["the server's default", "make run's 128 KiB"])
@pytest.mark.server_internals
async def test_frame_over_the_servers_limit_closes_with_1009(start_server, asgi_server, connect, uid, configured):
    """SPEC §3: a frame too big for the server closes the connection with 1009."""
    limit = configured or DEFAULT_LIMITS[asgi_server]
    limited = start_server(name=f"limit-{limit}", max_frame_bytes=configured)
    sender = await connect(limited, uid("sender"))
    other = await connect(limited, uid("other"))

    with pytest.raises(ConnectionClosed) as closed:
        await sender.send_text("x" * (limit + 1))
        await sender.recv_text()

    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    assert closed.value.rcvd.code == 1009
    await other.send_json({"targets": [other.client_id], "payload": "ok"})  # the others are untouched
    assert await other.recv_json() == "ok"

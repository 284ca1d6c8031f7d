"""relay.protocol: client ids, parsing and validating client frames, encoding server frames."""

import json

import pytest

from relay import protocol
from relay.protocol import (
    CallFrame,
    Frame,
    PingFrame,
    ProtocolError,
    encode_delivery,
    encode_error,
    encode_pong,
    encode_reply,
    normalize_client_id,
    parse_frame,
    validate_error_code,
)
from tests.conftest import frame

MAX_TARGETS = 100
MAX_BYTES = 64 * 1024


def parse(text: str, max_targets: int = MAX_TARGETS, max_bytes: int = MAX_BYTES) -> Frame | CallFrame:
    return parse_frame(text, max_targets=max_targets, max_bytes=max_bytes)


def refusal(text: str, max_targets: int = MAX_TARGETS, max_bytes: int = MAX_BYTES) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(text, max_targets, max_bytes)
    return info.value


# Client ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", "a"),
        ("alice", "alice"),
        ("Az09_.-", "Az09_.-"),
        ("-", "-"),
        ("...", "..."),
        ("x" * 64, "x" * 64),
        (0, "0"),
        (2, "2"),
        (-5, "-5"),
        (10**63, "1" + "0" * 63),
    ],
)
def test_normalize_client_id_accepts(value, expected):
    assert normalize_client_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * 65,
        10**64,  # 65 digits
        "a b",
        "a/b",
        "a:b",
        "a\n",
        "a\x00",
        "é",
        "ａ",  # fullwidth a
        "١",  # Arabic-Indic digit one
        True,
        False,
        1.0,
        2.5,
        None,
        [],
        ["a"],
        {"a": 1},
        b"a",
    ],
)
def test_normalize_client_id_refuses(value):
    assert normalize_client_id(value) is None


def test_group_for_names_the_channel_layer_group():
    assert protocol.group_for("bob") == "relay.bob"


# Valid frames


def test_parse_frame_valid():
    assert parse('{"targets": ["bob", 2], "payload": {"any": ["JSON", 1, true, null]}}') == Frame(
        targets=("bob", "2"),
        payload_json='{"any":["JSON",1,true,null]}',
        ref=None,
        payload={"any": ["JSON", 1, True, None]},
    )


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ([2, "2", 3], ("2", "3")),
        (["b", "a", "b", "a"], ("b", "a")),
        (["x"] * 500, ("x",)),
    ],
)
def test_parse_frame_delivers_duplicates_once_in_first_seen_order(targets, expected):
    assert parse(frame(targets, 1)).targets == expected


def test_parse_frame_payload_null_is_a_payload():
    assert parse('{"targets": [1], "payload": null}').payload_json == "null"


def test_parse_frame_ignores_unknown_keys():
    text = '{"targets": [1], "payload": 1, "type": "whatever", "extra": {"deep": [1]}}'
    assert parse(text) == Frame(targets=("1",), payload_json="1", ref=None, payload=1)


@pytest.mark.parametrize(
    ("payload_text", "payload_json"),
    [
        ("0", "0"),
        ("-1.5e3", "-1500.0"),
        ('"text"', '"text"'),
        ("[ 1 , [ 2 ] ]", "[1,[2]]"),
        ('{ "a" : { "b" : false } }', '{"a":{"b":false}}'),
        ('"é😀"', '"\\u00e9\\ud83d\\ude00"'),
    ],
)
def test_parse_frame_reencodes_payload_compactly(payload_text, payload_json):
    assert parse(f'{{"targets": [1], "payload": {payload_text}}}').payload_json == payload_json


@pytest.mark.parametrize(("ref_text", "ref"), [('"abc"', "abc"), ("7", 7), ("0", 0), ('""', "")])
def test_parse_frame_echoes_correlation_id(ref_text, ref):
    assert parse(f'{{"targets": [1], "payload": 1, "id": {ref_text}}}').ref == ref


@pytest.mark.parametrize("ref_text", ['{"a": 1}', "[1]", "true", "false", "1.5", "null"])
def test_parse_frame_ignores_correlation_id_of_other_types(ref_text):
    assert parse(f'{{"targets": [1], "payload": 1, "id": {ref_text}}}').ref is None


def test_parse_frame_accepts_exactly_max_targets():
    assert len(parse(frame(list(range(3)), 1), max_targets=3).targets) == 3


def test_parse_frame_lone_surrogate_survives_as_ascii_escape():
    message = parse('{"targets": [1], "payload": "\\ud800"}')
    assert message.payload_json == '"\\ud800"'
    delivery = encode_delivery(protocol.SUBPROTOCOL_V1, "a", message.payload_json)
    assert delivery.encode("utf-8") == b'{"type":"message","from":"a","payload":"\\ud800"}'


# Invalid frames


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        " ",
        "{",
        '{"targets": [1], "payload": 1',
        "{'targets': [1], 'payload': 1}",
        '{"targets": [1], "payload": 1} trailing',
        "[" * 100000,
        '{"targets": [1], "payload": ' + "[" * 100000,
        '{"targets": [1], "payload": ' + "[" * 5000 + "]" * 5000 + "}",
        "NaN",
        '{"targets": [1], "payload": NaN}',
        '{"targets": [1], "payload": Infinity}',
        '{"targets": [1], "payload": -Infinity}',
        '{"targets": [1], "payload": [1, {"x": NaN}]}',
        '{"targets": [1], "payload": 1e400}',
        '{"targets": [1], "payload": -1e400}',
        '{"targets": [1], "payload": ' + "1" * 5000 + "}",
        '{"targets": [' + "1" * 5000 + '], "payload": 1}',
    ],
)
def test_parse_frame_invalid_json(text):
    assert refusal(text, max_bytes=10**6).code == protocol.INVALID_JSON


@pytest.mark.parametrize("text", ["[]", "[1]", '"targets"', "42", "1.5", "null", "true"])
def test_parse_frame_not_an_object(text):
    error = refusal(text)
    assert (error.code, error.ref) == (protocol.INVALID_MESSAGE, None)


@pytest.mark.parametrize(
    "text",
    [
        '{"payload": 1}',
        '{"targets": "bob", "payload": 1}',
        '{"targets": 2, "payload": 1}',
        '{"targets": null, "payload": 1}',
        '{"targets": {"bob": 1}, "payload": 1}',
        '{"targets": [], "payload": 1}',
        '{"targets": [1]}',
        "{}",
    ],
)
def test_parse_frame_invalid_message(text):
    assert refusal(text).code == protocol.INVALID_MESSAGE


@pytest.mark.parametrize(
    "target_text",
    ['"a b"', '"a/b"', '""', '"' + "x" * 65 + '"', "true", "false", "1.5", "null", "{}", "[]", '["bob"]'],
)
def test_parse_frame_invalid_target(target_text):
    error = refusal(f'{{"targets": ["ok", {target_text}], "payload": 1}}')
    assert error.code == protocol.INVALID_TARGET
    assert "is not a client id" in error.detail


@pytest.mark.parametrize("target_text", ["1e400", "-1e400"])
def test_parse_frame_out_of_range_number_target_is_invalid_target(target_text):
    assert refusal(f'{{"targets": [{target_text}], "payload": 1}}').code == protocol.INVALID_TARGET


@pytest.mark.parametrize(("count", "max_targets"), [(101, 100), (3, 2), (2, 1)])
def test_parse_frame_too_many_targets(count, max_targets):
    error = refusal(frame([f"c{i}" for i in range(count)], 1), max_targets=max_targets)
    assert error.code == protocol.TOO_MANY_TARGETS
    assert error.detail == f"{count} targets; at most {max_targets} are allowed."


@pytest.mark.parametrize(
    "text",
    [
        '{"targets": [], "payload": 1, "id": "r1"}',
        '{"targets": "bob", "payload": 1, "id": "r1"}',
        '{"payload": 1, "id": "r1"}',
        '{"targets": [1], "id": "r1"}',
        '{"targets": ["a b"], "payload": 1, "id": "r1"}',
        '{"targets": [1, 2], "payload": 1, "id": "r1"}',
        '{"targets": [1], "payload": 1e400, "id": "r1"}',
    ],
)
def test_parse_frame_errors_carry_the_correlation_id(text):
    assert refusal(text, max_targets=1).ref == "r1"


def test_parse_frame_error_with_int_correlation_id():
    assert refusal('{"targets": [], "payload": 1, "id": 9}').ref == 9


@pytest.mark.parametrize("ref_text", ['{"a": 1}', "true"])
def test_parse_frame_error_without_usable_correlation_id(ref_text):
    assert refusal(f'{{"targets": [], "payload": 1, "id": {ref_text}}}').ref is None


# Size limit, in UTF-8 bytes


def sized_frame(char: str, size: int) -> str:
    """A valid frame of exactly ``size`` UTF-8 bytes whose payload is a string of ``char``."""
    head = '{"targets":[1],"payload":"'
    tail = '"}'
    room = size - len(head) - len(tail)
    count, padding = divmod(room, len(char.encode()))
    text = head + char * count + "a" * padding + tail
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_parse_frame_accepts_exactly_max_bytes(char):
    text = sized_frame(char, 1032)
    assert json.loads(parse(text, max_bytes=1032).payload_json) == json.loads(text)["payload"]


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_parse_frame_counts_utf8_bytes_not_characters(char):
    text = sized_frame(char, 1032)
    assert len(text) < 1031  # under the limit in characters ...
    assert refusal(text, max_bytes=1031).code == protocol.MESSAGE_TOO_LARGE  # ... over it in bytes


def test_parse_frame_too_large_is_checked_before_parsing():
    error = refusal("x" * (MAX_BYTES + 1))
    assert (error.code, error.ref) == (protocol.MESSAGE_TOO_LARGE, None)
    assert error.detail == f"A frame may be at most {MAX_BYTES} bytes."


def test_protocol_error_is_a_value_error():
    error = ProtocolError(protocol.INVALID_TARGET, "detail", "r")
    assert isinstance(error, ValueError)
    assert (error.code, error.detail, error.ref, str(error)) == (protocol.INVALID_TARGET, "detail", "r", "detail")


# Server frames


@pytest.mark.parametrize("subprotocol", [None, "other"])
def test_encode_delivery_raw_is_the_payload(subprotocol):
    assert encode_delivery(subprotocol, "alice", '{"a":[1,null]}') == '{"a":[1,null]}'


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("alice", '{"type":"message","from":"alice","payload":{"a":1}}'),
        (None, '{"type":"message","from":null,"payload":{"a":1}}'),
    ],
)
def test_encode_delivery_v1_envelope(sender, expected):
    assert encode_delivery("relay.v1", sender, '{"a":1}') == expected


@pytest.mark.parametrize("subprotocol", [None, "other"])
@pytest.mark.parametrize("ref", [None, "r1"])
def test_encode_error_raw(subprotocol, ref):
    text = encode_error(subprotocol, "invalid_target", "bad target", ref)
    expected = {"code": "invalid_target", "detail": "bad target"} | ({"ref": ref} if ref else {})
    assert json.loads(text) == {"error": expected}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (None, {"type": "error", "code": "invalid_json", "detail": "bad"}),
        ("r1", {"type": "error", "code": "invalid_json", "detail": "bad", "ref": "r1"}),
        (7, {"type": "error", "code": "invalid_json", "detail": "bad", "ref": 7}),
        (0, {"type": "error", "code": "invalid_json", "detail": "bad", "ref": 0}),
    ],
)
def test_encode_error_v1(ref, expected):
    assert json.loads(encode_error("relay.v1", "invalid_json", "bad", ref)) == expected


def test_an_error_about_one_target_of_a_frame_names_it_in_both_framings():
    v1 = json.loads(encode_error("relay.v1", "unavailable", "not delivered to bob", 2, "bob"))
    assert v1 == {"type": "error", "code": "unavailable", "detail": "not delivered to bob", "ref": 2, "target": "bob"}
    original = json.loads(encode_error(None, "unavailable", "not delivered to bob", None, "bob"))
    assert original == {"error": {"code": "unavailable", "detail": "not delivered to bob", "target": "bob"}}


# Calls and replies


def test_parse_call():
    assert parse('{"call": "chat.history", "payload": {"room": 1}, "id": 7}') == CallFrame(
        name="chat.history", payload={"room": 1}, ref=7
    )


def test_parse_call_payload_defaults_to_null():
    assert parse('{"call": "ping", "id": "a"}') == CallFrame(name="ping", payload=None, ref="a")


@pytest.mark.parametrize(
    ("text", "code", "ref"),
    [
        pytest.param('{"call": "chat.history"}', "invalid_message", None, id="no-id"),
        pytest.param('{"call": "chat.history", "id": true}', "invalid_message", None, id="bool-id"),
        pytest.param('{"call": "chat.history", "id": 1.5}', "invalid_message", None, id="float-id"),
        pytest.param('{"call": 5, "id": 1}', "invalid_message", 1, id="name-not-string"),
        pytest.param('{"call": "", "id": 1}', "invalid_message", 1, id="name-empty"),
        pytest.param('{"call": "a b", "id": 1}', "invalid_message", 1, id="name-space"),
        pytest.param('{"call": "' + "a" * 101 + '", "id": 1}', "invalid_message", 1, id="name-too-long"),
        pytest.param('{"call": "x", "id": 1, "payload": 1e400}', "invalid_json", 1, id="payload-1e400"),
    ],
)
def test_parse_call_refuses(text, code, ref):
    with pytest.raises(ProtocolError) as refused:
        parse(text)
    assert (refused.value.code, refused.value.ref) == (code, ref)


def test_a_frame_with_call_is_a_call_even_with_targets():
    assert isinstance(parse('{"call": "x", "id": 1, "targets": ["bob"], "payload": 1}'), CallFrame)


@pytest.mark.parametrize(
    ("subprotocol", "expected"),
    [
        ("relay.v1", {"type": "reply", "ref": 7, "payload": {"ok": [1]}}),
        (None, {"reply": {"ref": 7, "payload": {"ok": [1]}}}),
    ],
)
def test_encode_reply(subprotocol, expected):
    assert json.loads(encode_reply(subprotocol, 7, '{"ok":[1]}')) == expected


@pytest.mark.parametrize("code", ["quota_exceeded", "a", "x" * 64, "e2"])
def test_valid_error_codes(code):
    assert validate_error_code(code) == code


@pytest.mark.parametrize("code", ["", "Quota", "2fast", "a-b", "x" * 65, None, 5, "a b"])
def test_invalid_error_codes(code):
    with pytest.raises(ValueError, match="is not an error code"):
        validate_error_code(code)


# Pings


@pytest.mark.parametrize(("text", "ref"), [('{"type": "ping"}', None), ('{"type": "ping", "id": 3}', 3)])
def test_parse_ping(text, ref):
    assert parse(text) == PingFrame(ref)


def test_a_frame_with_targets_and_type_ping_is_a_message():
    assert isinstance(parse('{"type": "ping", "targets": ["bob"], "payload": 1}'), Frame)


@pytest.mark.parametrize(
    ("subprotocol", "ref", "expected"),
    [("relay.v1", None, {"type": "pong"}), ("relay.v1", "p", {"type": "pong", "ref": "p"}), (None, 4, {"pong": 4})],
)
def test_encode_pong(subprotocol, ref, expected):
    assert json.loads(encode_pong(subprotocol, ref)) == expected

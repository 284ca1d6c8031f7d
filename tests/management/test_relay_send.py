"""``manage.py relay_send``: pushing from the command line, and refusing what cannot work."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from relay.contrib.admin.models import AuditEntry


def relay_send(*args: str) -> str:
    stdout = io.StringIO()
    call_command("relay_send", *args, stdout=stdout)
    return stdout.getvalue()


class UnreadableStdin:
    def read(self, *args):
        raise AssertionError("stdin was read although --payload was given")


def event(payload) -> dict:
    return {"type": "relay.deliver", "from": None, "payload_json": json.dumps(payload, separators=(",", ":"))}


@pytest.mark.django_db
def test_sends_to_every_target_and_records_it(recording_layer, monkeypatch):
    monkeypatch.setattr("sys.stdin", UnreadableStdin())
    output = relay_send("bob", "2", "bob", "--payload", '{"a": [1, null]}')
    assert recording_layer.sent == [("relay.bob", event({"a": [1, None]})), ("relay.2", event({"a": [1, None]}))]
    assert output == "Sent to bob (not online), 2 (not online).\n"
    entry = AuditEntry.objects.get()
    assert (entry.source, entry.targets, entry.online, entry.size) == (
        "command",
        ["bob", "2"],
        0,
        len('{"a":[1,null]}'),
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("stdin", "payload"), [('{"from": "stdin"}\n', {"from": "stdin"}), ("null", None)])
def test_reads_payload_from_stdin_without_payload_option(recording_layer, monkeypatch, stdin, payload):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert relay_send("bob") == "Sent to bob (not online).\n"
    assert recording_layer.sent == [("relay.bob", event(payload))]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("{", "The payload is not valid JSON", id="truncated"),
        pytest.param("", "The payload is not valid JSON", id="empty"),
        pytest.param("hello", "The payload is not valid JSON", id="bare-word"),
        pytest.param("{'a': 1}", "The payload is not valid JSON", id="single-quotes"),
        pytest.param("NaN", "The payload is not valid JSON", id="nan"),
        pytest.param("[" * 100000, "The payload is not valid JSON", id="deep-nesting"),
        pytest.param("1" * 5000, "The payload is not valid JSON", id="huge-int"),
        pytest.param("1e400", "The payload is not a JSON value", id="1e400"),
    ],
)
def test_bad_json_payload(recording_layer, raw, message):
    with pytest.raises(CommandError, match=message):
        relay_send("bob", "--payload", raw)
    assert recording_layer.sent == []


def test_bad_json_payload_from_stdin(recording_layer, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="The payload is not valid JSON"):
        relay_send("bob")
    assert recording_layer.sent == []


@pytest.mark.parametrize("target", ["a b", "a/b", "x" * 65, ""])
def test_invalid_target(recording_layer, target):
    with pytest.raises(CommandError, match="is not a client id"):
        relay_send("bob", target, "--payload", "1")
    assert recording_layer.sent == []


def test_no_target(recording_layer):
    with pytest.raises(CommandError, match="targets"):
        relay_send("--payload", "1")
    assert recording_layer.sent == []


def test_in_memory_layer_is_refused_clearly():
    with pytest.raises(CommandError) as info:
        relay_send("bob", "--payload", "1")
    message = str(info.value)
    assert "in-memory" in message
    assert "cannot reach" in message
    assert "REDIS_URL" in message

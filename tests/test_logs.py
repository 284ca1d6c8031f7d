"""relay.logs.field: what a client sends cannot forge a field of a ``key=value`` log line (issue 12)."""

import json

import pytest

from relay.logs import field


@pytest.mark.parametrize("value", ["alice", "127.0.0.1:5000", "[::1]:80", "/ws", "no_identity", "e2e-1a2b.c_d"])
def test_plain_values_are_written_as_they_are(value):
    assert field(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.2.3.4 event=connect client=victim",
        'a"b',
        "line\nevent=connect",
        "tab\there",
        "back\\slash",
        "é",
        "x=y",
        "\x1b[31mred",
    ],
)
def test_anything_else_is_one_quoted_json_string(value):
    written = field(value)
    assert written.startswith('"') and written.endswith('"')
    assert json.loads(written) == value
    assert "\n" not in written and "\t" not in written and "\x1b" not in written


def test_a_forged_field_stays_inside_the_value():
    line = f"event=refused peer={field('1.2.3.4 event=connect client=victim')} reason=origin"
    assert line == 'event=refused peer="1.2.3.4 event=connect client=victim" reason=origin'

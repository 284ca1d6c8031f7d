"""relay.server.framings: which framing a handshake gets, and which RELAY_FRAMINGS refuses."""

import pytest

from relay.exceptions import Refused
from relay.protocol import FRAMING_ORIGINAL, SUBPROTOCOL_V1
from relay.server.framings import check_allowed, negotiate

BOTH = [SUBPROTOCOL_V1, FRAMING_ORIGINAL]


@pytest.mark.parametrize(
    ("offered", "allowed", "chosen"),
    [
        ([SUBPROTOCOL_V1], BOTH, SUBPROTOCOL_V1),
        (["chat", SUBPROTOCOL_V1], BOTH, SUBPROTOCOL_V1),  # among others, in any order
        ([], BOTH, None),
        (["chat"], BOTH, None),  # a subprotocol the relay does not speak: the original framing
        ([SUBPROTOCOL_V1], [FRAMING_ORIGINAL], None),  # relay.v1 off: not accepted with it
    ],
)
def test_relay_v1_is_chosen_only_when_offered_and_allowed(offered, allowed, chosen):
    assert negotiate(offered, allowed) == chosen


def test_the_original_framing_is_refused_where_it_is_off_with_how_to_connect():
    with pytest.raises(Refused) as refused:
        check_allowed(None, [SUBPROTOCOL_V1])
    assert refused.value.reason == "framing"
    assert "new WebSocket(url, 'relay.v1')" in refused.value.detail


def test_relay_v1_is_refused_where_only_the_original_framing_is_on():
    with pytest.raises(Refused, match="the relay.v1 framing is off here"):
        check_allowed(SUBPROTOCOL_V1, [FRAMING_ORIGINAL])


@pytest.mark.parametrize("subprotocol", [None, SUBPROTOCOL_V1])
def test_an_allowed_framing_passes(subprotocol):
    check_allowed(subprotocol, BOTH)

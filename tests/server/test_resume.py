"""relay.server.resume: the gate that keeps a resume's live deliveries from doubling its replay."""

from relay.redis.streams import Position
from relay.server.resume import ReplayGate


def at(offset: int, epoch: str = "e1") -> Position:
    return Position(epoch, offset)


def released(gate: ReplayGate) -> list[str]:
    texts = []
    while (text := gate.next_held()) is not None:
        texts.append(text)
    return texts


def test_deliveries_during_the_replay_are_held_and_those_it_covered_dropped():
    gate = ReplayGate()
    for offset in (4, 5, 6):
        assert not gate.passes(f"m{offset}", at(offset))
    gate.replayed(at(5))
    assert released(gate) == ["m6"]
    assert gate.open  # m6 was past the replay: nothing more can be covered


def test_covered_deliveries_that_arrive_after_the_replay_are_dropped_until_one_past_it():
    """Redis answered the read before the process handled every delivery published before it."""
    gate = ReplayGate()
    gate.replayed(at(10))
    assert released(gate) == []
    assert not gate.open
    assert [gate.passes(f"m{n}", at(n)) for n in (8, 9, 10)] == [False, False, False]
    assert gate.passes("m11", at(11)) and gate.open
    assert gate.passes("m12", at(12))


def test_unstored_deliveries_and_other_epochs_pass_without_opening_the_gate():
    gate = ReplayGate()
    gate.replayed(at(10))
    released(gate)
    assert gate.passes("live", None)
    assert gate.passes("old epoch", at(3, "e0"))
    assert not gate.open
    assert not gate.passes("m10", at(10))


def test_without_a_covered_position_everything_held_is_released_in_order():
    gate = ReplayGate()  # the read failed: nothing was replayed
    gate.passes("a", at(1))
    gate.passes("b", None)
    gate.replayed(None)
    assert released(gate) == ["a", "b"]
    assert gate.open


def test_what_arrives_while_the_held_ones_are_sent_is_held_behind_them():
    gate = ReplayGate()
    gate.passes("m3", at(3))
    gate.replayed(at(2))
    assert gate.next_held() == "m3"
    assert not gate.passes("m4", at(4))  # sending m3 yielded; m4 came meanwhile
    assert gate.next_held() == "m4"
    assert gate.next_held() is None
    assert gate.passes("m5", at(5))

from __future__ import annotations

from controller.fleet.health import HealthTracker, View


def test_sequence_gaps_are_found_and_reordering_is_not_a_gap() -> None:
    h = HealthTracker()
    h.views["c"] = View("online", 1, None, 30, None)
    assert not h.note_seq("c", 10)  # baseline after a birth
    assert not h.note_seq("c", 11)
    assert not h.note_seq("c", 11)  # duplicate
    assert h.note_seq("c", 14)  # 12 and 13 missed
    assert not h.note_seq("c", 13)  # late arrival of a missed one
    assert h.counters["seq_gaps"] == 1
    assert not h.note_seq("unknown", 5)

"""Every change of a broadcast's or an occurrence's state goes through one table: what it
allows happens, what it does not is refused and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.broadcasting.states import (
    BROADCAST_FINAL,
    BROADCAST_MOVES,
    OCCURRENCE_MOVES,
    BroadcastStatus,
    IllegalMove,
    OccurrenceStatus,
    move,
)


@dataclass
class Thing:
    status: str


def test_the_tables_cover_every_state() -> None:
    assert set(BROADCAST_MOVES) == set(BroadcastStatus)
    assert set(OCCURRENCE_MOVES) == set(OccurrenceStatus)
    for table in (BROADCAST_MOVES, OCCURRENCE_MOVES):
        for targets in table.values():
            assert targets <= set(table)


def test_a_broadcast_lives_its_lifecycle() -> None:
    bc = Thing("pending_approval")
    for to in (BroadcastStatus.SCHEDULED, BroadcastStatus.ACTIVE, BroadcastStatus.COMPLETED):
        move(bc, to)
        assert bc.status == to
    assert bc.status == "completed"  # stored as the plain string


@pytest.mark.parametrize("final", sorted(BROADCAST_FINAL))
def test_nothing_comes_after_a_final_state(final: BroadcastStatus) -> None:
    bc = Thing(final.value)
    with pytest.raises(IllegalMove):
        move(bc, BroadcastStatus.SCHEDULED)
    assert bc.status == final.value


def test_an_illegal_move_changes_nothing() -> None:
    occ = Thing("sent")
    with pytest.raises(IllegalMove, match="from sent to pending"):
        move(occ, OccurrenceStatus.PENDING)
    assert occ.status == "sent"
    move(occ, OccurrenceStatus.SENT)  # staying put is allowed
    move(occ, OccurrenceStatus.COMPLETED)
    assert occ.status == "completed"


def test_a_report_moves_a_delivery_forward_only_but_beats_an_assumption() -> None:
    from controller.broadcasting.states import REPORT_MOVES
    from controller.broadcasting.states import DeliveryStatus as D

    assert D.RECEIVED not in REPORT_MOVES[D.PLAYING]  # a late "received": ignored
    assert D.PLAYING in REPORT_MOVES[D.PREEMPTED] and D.PREEMPTED in REPORT_MOVES[D.PLAYING]
    assert not REPORT_MOVES[D.PLAYED] and not REPORT_MOVES[D.FAILED]
    # the controller assumed "missed" or "cancelled"; the cluster says what happened
    assert {D.PLAYING, D.PLAYED, D.FAILED} <= REPORT_MOVES[D.MISSED]
    assert D.PLAYED in REPORT_MOVES[D.CANCELLED]


def test_the_controller_closes_deliveries_only_as_its_table_says() -> None:
    from controller.broadcasting.states import DeliveryStatus as D

    d = Thing("sent")
    d.state = "sent"  # type: ignore[attr-defined]
    move(d, D.MISSED)
    assert d.state == "missed"  # type: ignore[attr-defined]
    with pytest.raises(IllegalMove):
        move(d, D.SENT)


def test_an_action_outcome_is_final_once_done() -> None:
    from controller.fleet.actions import ActionState as A

    r = Thing("sent")
    r.state = "sent"  # type: ignore[attr-defined]
    move(r, A.TIMED_OUT)
    move(r, A.DONE)  # a late acknowledgement still counts
    with pytest.raises(IllegalMove):
        move(r, A.FAILED)
    assert r.state == "done"  # type: ignore[attr-defined]

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

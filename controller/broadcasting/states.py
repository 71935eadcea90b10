"""The lifecycles of broadcasts, occurrences and deliveries: typed states, and one table
per lifecycle that every change of state goes through (:func:`move`).

A move the table does not allow is a bug in the controller, not a user's mistake:
:class:`IllegalMove` is raised, and nothing is changed.

Broadcast::

    pending_approval ─approve─► scheduled ─first slot sent─► active ─last slot─► completed
          │ reject / no approval in time        │ cancel            │ cancel / expiry
          ▼                                     ▼                   ▼
      rejected / expired                    cancelled           cancelled / completed
    inbox (a copy from above) ─accept─► scheduled;  ─decline─► declined;  ─expiry─► expired
    distributed (the issuer's original, its copies carry the airings) ─cancel─► cancelled

Occurrence (one airing): ``pending → sent → completed``; ``pending → missed`` (too late or
expired); ``pending | sent → cancelled``.

Delivery (one cluster, one airing): ``pending → sent → received → ready → playing ⇄
preempted → played``, or ``failed`` / ``cancelled`` / ``missed``; reports only move it
forward (``Dispatcher``'s ``ORDER``), except that a cluster's own final report replaces a
final state the controller had assumed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

__all__ = ["BROADCAST_FINAL", "BROADCAST_INITIAL", "BROADCAST_LIVE", "BROADCAST_MOVES",
           "BROADCAST_WAITING", "DELIVERY_FINAL", "OCCURRENCE_MOVES", "OCCURRENCE_OPEN",
           "BroadcastStatus", "DeliveryStatus", "IllegalMove", "OccurrenceStatus", "move"]


class BroadcastStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    DISTRIBUTED = "distributed"
    INBOX = "inbox"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DECLINED = "declined"
    REJECTED = "rejected"
    EXPIRED = "expired"


class OccurrenceStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    RECEIVED = "received"
    READY = "ready"
    PLAYING = "playing"
    PREEMPTED = "preempted"
    PLAYED = "played"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"


B, O, D = BroadcastStatus, OccurrenceStatus, DeliveryStatus

BROADCAST_MOVES: dict[BroadcastStatus, frozenset[BroadcastStatus]] = {
    B.PENDING_APPROVAL: frozenset({B.SCHEDULED, B.REJECTED, B.EXPIRED, B.CANCELLED}),
    B.INBOX: frozenset({B.SCHEDULED, B.DECLINED, B.EXPIRED, B.CANCELLED}),
    B.SCHEDULED: frozenset({B.ACTIVE, B.CANCELLED}),
    B.ACTIVE: frozenset({B.COMPLETED, B.CANCELLED}),
    B.DISTRIBUTED: frozenset({B.CANCELLED}),
    B.COMPLETED: frozenset(),
    B.CANCELLED: frozenset(),
    B.DECLINED: frozenset(),
    B.REJECTED: frozenset(),
    B.EXPIRED: frozenset(),
}
#: states a broadcast is created in
BROADCAST_INITIAL = frozenset({B.SCHEDULED, B.PENDING_APPROVAL, B.DISTRIBUTED, B.INBOX})
#: broadcast states nothing comes after
BROADCAST_FINAL = frozenset(s for s, nxt in BROADCAST_MOVES.items() if not nxt)
#: planned or on the air: the scheduler and the programme count it
BROADCAST_LIVE = frozenset({B.SCHEDULED, B.ACTIVE})
#: waiting for someone's decision, or standing for copies that carry the airings
BROADCAST_WAITING = frozenset({B.INBOX, B.DISTRIBUTED, B.PENDING_APPROVAL})

OCCURRENCE_MOVES: dict[OccurrenceStatus, frozenset[OccurrenceStatus]] = {
    O.PENDING: frozenset({O.SENT, O.MISSED, O.CANCELLED}),
    O.SENT: frozenset({O.COMPLETED, O.CANCELLED}),
    O.COMPLETED: frozenset(),
    O.MISSED: frozenset(),
    O.CANCELLED: frozenset(),
}
#: not yet closed: it may still be sent, moved or cancelled
OCCURRENCE_OPEN = frozenset({O.PENDING, O.SENT})

#: delivery states nothing comes after
DELIVERY_FINAL = frozenset({D.PLAYED, D.FAILED, D.MISSED, D.CANCELLED})


class IllegalMove(RuntimeError):
    """A change of state the lifecycle does not allow (a bug: nothing was changed)."""


class _HasStatus(Protocol):
    status: str


def move(obj: _HasStatus, to: BroadcastStatus | OccurrenceStatus) -> None:
    """Set ``obj.status`` to ``to`` if its lifecycle allows it from where it is (a move to
    the state it is in already is allowed and changes nothing)."""
    table: dict = BROADCAST_MOVES if isinstance(to, BroadcastStatus) else OCCURRENCE_MOVES  # type: ignore[type-arg]
    kind = type(to)
    here = kind(obj.status)
    if here != to and to not in table[here]:
        raise IllegalMove(f"{type(obj).__name__} cannot go from {here} to {to}")
    obj.status = to.value

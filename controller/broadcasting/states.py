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
preempted → played``, or ``failed`` / ``cancelled`` / ``missed``. A cluster's report only
moves it forward (``REPORT_MOVES``), except that its own final report replaces a final
state the controller had assumed (``ASSUMED``, and any delivery whose ``assumed`` flag
says the controller concluded it for want of a report: the replaced conclusion is kept in
``corrected_from``); the controller itself may send again, cancel, and close what was never
reported (``DELIVERY_MOVES``).

Remote actions (per cluster) have their table in :mod:`controller.fleet.actions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["ASSUMED", "BROADCAST_FINAL", "BROADCAST_INITIAL", "BROADCAST_LIVE",
           "BROADCAST_MOVES", "BROADCAST_WAITING", "CLUSTER_FINAL", "DELIVERY_FINAL",
           "DELIVERY_MOVES", "OCCURRENCE_MOVES", "OCCURRENCE_OPEN", "ORDER", "REPORT_MOVES",
           "TABLES", "BroadcastStatus", "DeliveryStatus", "IllegalMove", "OccurrenceStatus",
           "move"]


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

#: delivery states nothing comes after (but see ``ASSUMED``)
DELIVERY_FINAL = frozenset({D.PLAYED, D.FAILED, D.MISSED, D.CANCELLED})
#: a delivery's progress as clusters report it; a report never moves it backwards
ORDER = (D.PENDING, D.SENT, D.RECEIVED, D.READY, D.PLAYING, D.PREEMPTED, D.PLAYED)
#: final states that may be the controller's assumption: the cluster's own report of what
#: happened (``CLUSTER_FINAL``) wins over them
ASSUMED = frozenset({D.CANCELLED, D.MISSED})
CLUSTER_FINAL = frozenset({D.PLAYING, D.PLAYED, D.FAILED, D.CANCELLED})


def _report_may(here: DeliveryStatus, new: DeliveryStatus) -> bool:
    if here in DELIVERY_FINAL and not (here in ASSUMED and new in CLUSTER_FINAL):
        return False
    if {here, new} == {D.PLAYING, D.PREEMPTED}:
        return True  # interrupted by a higher priority, and resumed
    return not (new in ORDER and here in ORDER and ORDER.index(new) <= ORDER.index(here))


#: what a cluster's report may do to its delivery
REPORT_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    here: frozenset(new for new in D if _report_may(here, new)) for here in D}
#: what the controller itself may do: send (again, after a content update), cancel what
#: has not started, and close what was never reported (missed) or never finished (failed)
_CONTROLLER_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    D.PENDING: frozenset({D.SENT, D.CANCELLED, D.MISSED, D.FAILED}),
    D.SENT: frozenset({D.CANCELLED, D.MISSED, D.FAILED}),
    D.RECEIVED: frozenset({D.SENT, D.CANCELLED, D.FAILED}),
    D.READY: frozenset({D.SENT, D.CANCELLED, D.FAILED}),
    D.PLAYING: frozenset({D.FAILED}),
    D.PREEMPTED: frozenset({D.FAILED}),
}
DELIVERY_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    here: REPORT_MOVES[here] | _CONTROLLER_MOVES.get(here, frozenset()) for here in D}


class IllegalMove(RuntimeError):
    """A change of state the lifecycle does not allow (a bug: nothing was changed)."""


#: each lifecycle: its table, and the attribute that holds the state
TABLES: dict[type[StrEnum], tuple[Mapping[Any, frozenset[Any]], str]] = {
    BroadcastStatus: (BROADCAST_MOVES, "status"),
    OccurrenceStatus: (OCCURRENCE_MOVES, "status"),
    DeliveryStatus: (DELIVERY_MOVES, "state"),
}


def move(obj: object, to: StrEnum) -> None:
    """Set ``obj``'s state to ``to`` if its lifecycle's table allows it from where it is (a
    move to the state it is in already is allowed and changes nothing)."""
    table, attr = TABLES[type(to)]
    here = type(to)(getattr(obj, attr))
    if here != to and to not in table[here]:
        raise IllegalMove(f"{type(obj).__name__} cannot go from {here} to {to}")
    setattr(obj, attr, to.value)

"""Remote actions: signed commands to clusters or a whole area, acknowledged per cluster.

Per-cluster outcome: ``sent`` → ``accepted`` → ``done`` | ``failed``; ``refused`` when the
cluster refused the command; ``timed_out`` when no outcome came within the time-out (the
controller never assumes what a cluster did not confirm).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from nacl.signing import SigningKey
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.broadcasting.states import TABLES, move
from controller.broadcasting.targeting import descendant_area_ids, resolve
from controller.db.models import Action, ActionResult, Cluster, utcnow
from controller.errors import Invalid
from devices import topics
from devices.messages import ACTION_KINDS, COMMAND_BODIES, AckEvent
from devices.signing import sign_command

log = logging.getLogger(__name__)

__all__ = ["TIMEOUT_S", "ActionError", "ActionService"]

TIMEOUT_S = {"reboot": 90, "self_test": 30}
DEFAULT_TIMEOUT_S = 20
COMMAND_LIFETIME = timedelta(minutes=2)


class ActionState(StrEnum):
    """One cluster's outcome of a remote action."""

    SENT = "sent"
    ACCEPTED = "accepted"
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"
    TIMED_OUT = "timed_out"


A = ActionState
#: what an outcome may become: a late acknowledgement still counts after a time-out or a
#: refusal (of a forged copy); done and failed are final
ACTION_MOVES: dict[ActionState, frozenset[ActionState]] = {
    A.SENT: frozenset({A.ACCEPTED, A.DONE, A.FAILED, A.REFUSED, A.TIMED_OUT}),
    A.ACCEPTED: frozenset({A.DONE, A.FAILED, A.REFUSED, A.TIMED_OUT}),
    A.REFUSED: frozenset({A.ACCEPTED, A.DONE, A.FAILED}),
    A.TIMED_OUT: frozenset({A.ACCEPTED, A.DONE, A.FAILED, A.REFUSED}),
    A.DONE: frozenset(),
    A.FAILED: frozenset(),
}
TABLES[ActionState] = (ACTION_MOVES, "state")
ACTION_FINAL = frozenset(s for s, nxt in ACTION_MOVES.items() if not nxt)


class ActionError(Invalid, ValueError):
    """A remote action that cannot be carried out as asked."""


class ActionService:
    def __init__(self, key: SigningKey, publish: Callable[[str, bytes, int], bool]):
        self.key = key
        self.publish = publish

    def create(self, db: Session, *, kind: str, params: dict[str, Any], areas: list[str],
               clusters: list[str], user: str | None) -> Action:
        if kind not in ACTION_KINDS:
            raise ActionError("action_unknown",
                              f"unknown action {kind!r}; one of: {', '.join(ACTION_KINDS)}",
                              kind=kind, kinds=list(ACTION_KINDS))
        try:
            body = COMMAND_BODIES[kind].model_validate(params).model_dump(mode="json")
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise ActionError("action_params_invalid",
                              f"{kind}: {'.'.join(map(str, err['loc']))}: {err['msg']}",
                              kind=kind, field=".".join(map(str, err["loc"])),
                              type=err["type"]) from None
        resolved = resolve(db, areas, clusters)  # raises TargetError
        action = Action(id=uuid.uuid4().hex, kind=kind, params=body,
                        targets={"areas": areas, "clusters": clusters}, requested_by=user)
        now = utcnow()
        outgoing: list[tuple[str, bytes, list[str]]] = []
        covered: dict[str, str] = {}
        for topic in resolved.topics:
            cid = uuid.uuid4().hex
            payload = sign_command(self.key, kind=kind, topic=topic, body=body,
                                   expires_at=now + COMMAND_LIFETIME, command_id=cid)
            members = ([topic.split("/")[3]] if topic.startswith(f"{topics.ROOT}/cluster/")
                       else self._area_members(db, topic, resolved.cluster_ids))
            outgoing.append((topic, payload, members))
            for c in members:
                covered[c] = cid
        action.results = [ActionResult(cluster_id=c, command_id=covered[c], state=ActionState.SENT,
                                       updated_at=now) for c in sorted(covered)]
        db.add(action)
        # commit before publishing: a fast cluster's ack must find its row
        db.commit()
        unreachable: set[str] = set()
        for topic, payload, members in outgoing:
            if not self.publish(topic, payload, 1):
                unreachable.update(members)
        if unreachable:
            for r in action.results:
                if r.cluster_id in unreachable:
                    move(r, ActionState.FAILED)
                    r.reason = "the MQTT broker is not reachable; not sent"
            db.commit()
        return action

    @staticmethod
    def _area_members(db: Session, topic: str, cluster_ids: list[str]) -> list[str]:
        area = topic.split("/")[3]
        areas = descendant_area_ids(db, [area])
        inside = set(db.scalars(select(Cluster.id).where(Cluster.area_id.in_(areas))))
        return [c for c in cluster_ids if c in inside]

    def on_ack(self, db: Session, ev: AckEvent) -> bool:
        r = db.scalar(select(ActionResult).where(ActionResult.command_id == ev.command_id,
                                                 ActionResult.cluster_id == ev.cluster_id))
        if r is None:
            return False
        if r.state in ACTION_FINAL or r.state == ev.status:
            return True
        move(r, ActionState(ev.status))
        r.updated_at = utcnow()
        r.result, r.reason = ev.result, ev.reason
        return True

    def on_refused(self, db: Session, command_id: str | None, cluster_id: str,
                   reason: str) -> bool:
        if not command_id:
            return False
        r = db.scalar(select(ActionResult).where(ActionResult.command_id == command_id,
                                                 ActionResult.cluster_id == cluster_id))
        if r is None or r.state in ACTION_FINAL:
            return r is not None
        move(r, ActionState.REFUSED)
        r.reason, r.updated_at = reason, utcnow()
        return True

    def sweep(self, db: Session, now: datetime, heard: datetime | None = None) -> None:
        """An action with no outcome past its time limit, counted up to ``heard`` (what the
        clusters said is applied up to then: an outcome waiting in the inbox is not
        missing), is timed out."""
        as_of = heard or now
        q = (select(ActionResult).join(Action)
             .where(ActionResult.state.in_((ActionState.SENT, ActionState.ACCEPTED)),
                    Action.requested_at < as_of - timedelta(seconds=DEFAULT_TIMEOUT_S)))
        for r in db.scalars(q):
            limit = TIMEOUT_S.get(r.action.kind, DEFAULT_TIMEOUT_S)
            if as_of - r.action.requested_at > timedelta(seconds=limit):
                move(r, ActionState.TIMED_OUT)
                r.updated_at = now
                r.reason = f"no outcome within {limit} s"

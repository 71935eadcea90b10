"""Broadcasts from request to programme: validation (role, targets, times, recurrence,
policy), storing and planning, cancel, content updates, reordering, approval.

Every function takes the database session, the runtime and the acting user; each refuses
with a coded error (:mod:`controller.errors`) before it changes anything. The API's routes
(:mod:`controller.api.routes.broadcasts`) call one of these each."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from controller.access.jurisdiction import (
    APPROVERS,
    SCHEDULERS,
    can_see,
    describe,
    require_cancel,
    require_role,
    require_targets,
    scope,
    visible_content,
)
from controller.access.policy import violations
from controller.api.schemas import BroadcastCreate, ContentUpdate, Decline, LineSource, PositionSet
from controller.broadcasting.programme import area_policies, area_policy, commune_map, preview
from controller.broadcasting.recurrence import Recurrence
from controller.broadcasting.referral import from_above, make_children, split_by_commune
from controller.broadcasting.states import (
    BROADCAST_FINAL,
    BROADCAST_LIVE,
    BROADCAST_WAITING,
    OCCURRENCE_OPEN,
    BroadcastStatus,
    move,
)
from controller.broadcasting.targeting import Resolved, resolve
from controller.db.models import Area, Broadcast, Content, User, utcnow
from controller.errors import Conflict, Forbidden, Invalid, LoaError, NotFound, Problem
from controller.live.streams import descriptor_content, relay_descriptor

if TYPE_CHECKING:
    from controller.runtime import Runtime

#: broadcast states nothing comes after
FINAL = BROADCAST_FINAL


@dataclass
class Plan:
    """A validated request, before anything is stored."""

    req: BroadcastCreate
    content: Content
    resolved: Resolved
    immediate: bool
    first: datetime | None
    recurrence: dict[str, Any] | None
    #: for a bulletin handed down: commune -> (its targets, its start or None)
    communes: dict[str, tuple[dict[str, list[str]], datetime | None]] = field(
        default_factory=dict)

    @property
    def handed_down(self) -> bool:
        return bool(self.communes)

    @property
    def cluster_ids(self) -> list[str]:
        return self.resolved.cluster_ids


def validate(req: BroadcastCreate, db: Session, rt: Runtime, user: User,
              check_policy: bool = True) -> Plan:
    """Everything that can refuse a request: role, targets, times, policy. Raises 403/422."""
    now = utcnow()
    require_role(user, SCHEDULERS, "schedule broadcasts")
    if req.priority == "emergency":
        require_emergency_right(db, user)
    if req.source is not None and req.duration_s is not None:
        # a relay or the boards' own input: its content is a descriptor (controller.live)
        if isinstance(req.source, LineSource):
            khz = round(req.source.frequency_mhz * 1000) if req.source.frequency_mhz else None
            name = f"FM {req.source.frequency_mhz} MHz" if khz else "line in"
            made = descriptor_content(db, {"kind": "line", "input": req.source.input,
                                           "frequency_khz": khz}, req.duration_s,
                                      user.username, name, container="line")
        else:
            desc = relay_descriptor(rt.settings, req.source.url)
            made = descriptor_content(db, desc, req.duration_s, user.username, req.source.url)
        req = req.model_copy(update={"content_id": made.id})
    content = db.get(Content, req.content_id) if req.content_id else None
    if content is not None:
        try:  # (another area's recording is as unknown as one that does not exist)
            visible_content(db, user, content.id)
        except NotFound:
            content = None
    if content is None:
        raise Invalid("content_unknown", f"unknown content_id {req.content_id!r}",
                      content=req.content_id)
    require_targets(db, user, req.targets.areas, req.targets.clusters)  # 403 before anything
    resolved = resolve(db, req.targets.areas, req.targets.clusters)
    handed_down = req.priority != "emergency" and from_above(db, user)
    immediate = req.priority == "emergency" and req.start_at is None and req.recurrence is None
    if req.start_at is None and req.recurrence is None and not immediate and not handed_down:
        raise Invalid("start_missing", "give start_at or recurrence (only an emergency may "
                      "omit both: it plays at once)")
    if immediate:
        req = req.model_copy(update={"start_at": now + timedelta(
            seconds=rt.settings.emergency_lead_s)})
    first = req.start_at
    if req.start_at is not None and req.start_at < now - timedelta(seconds=1):
        raise Invalid("start_in_past", f"start_at {req.start_at.isoformat()} is in the past "
                      f"(server time {now.isoformat(timespec='seconds')})",
                      start_at=req.start_at.isoformat(), now=now.isoformat(timespec="seconds"))
    recurrence = None
    if req.recurrence is not None:
        recurrence, first = pin_recurrence(req.recurrence, now)
    if req.expires_at is not None and first is not None and req.expires_at <= first:
        raise Invalid("expires_before_start", "expires_at must be after the first start")
    plan = Plan(req, content, resolved, immediate, first, recurrence)
    if handed_down:
        zone = ZoneInfo(rt.settings.timezone)
        earliest = now + timedelta(seconds=rt.settings.min_start_lead_s + 60)
        for commune, targets in split_by_commune(db, req.targets.areas, req.targets.clusters,
                                                 resolved.cluster_ids).items():
            start = req.start_at
            if start is None and recurrence is None and req.priority == "priority":
                start = area_policy(db, commune).next_programme(earliest, zone)
                if start is None:
                    raise Invalid("no_programme_slot", f"{describe(db, commune)} has no "
                                  "programme slot in the next two weeks; give start_at",
                                  commune=commune)
            plan.communes[commune] = (targets, start)
    if check_policy and req.priority != "emergency":
        refuse_by_policy(db, rt, plan, now)
    return plan


def require_emergency_right(db: Session, user: User) -> None:
    """An emergency airs at once, unapproved, at full volume, through quiet hours: leaders
    and admins send them; officers only where their area's policy grants it."""
    if user.role in APPROVERS:
        return
    if user.role == "officer" and user.area_id is not None and \
            area_policy(db, user.area_id).officers_send_emergencies:
        return
    raise Forbidden("emergency_not_allowed", f"{user.username} ({user.role}) may not send "
                    "emergencies: a leader may, or an officer where the area's policy grants "
                    "it (officers_send_emergencies)", user=user.username, role=user.role)


def pin_recurrence(rec: Recurrence, now: datetime) -> tuple[dict[str, Any], datetime]:
    """The rule as stored (its anchor pinned so INTERVAL/COUNT stay stable) and its first
    slot; 422 when it is invalid or has no future slot."""
    if rec.dtstart is None:
        rec = rec.model_copy(update={"dtstart": now.astimezone(rec.zone).replace(
            second=0, microsecond=0, tzinfo=None)})
    first = rec.validate_future(now)
    return rec.model_dump(mode="json"), first


def _slots(plan: Plan, start: datetime | None, now: datetime) -> list[datetime]:
    if plan.recurrence is not None:
        return Recurrence.model_validate(plan.recurrence).upcoming(now, 20)
    return [start] if start is not None else []


def refuse_by_policy(db: Session, rt: Runtime, plan: Plan, now: datetime) -> None:
    duration = plan.content.duration_ms / 1000
    volume = plan.req.volume_pct
    if plan.handed_down:  # each commune's copy under that commune's policy
        problems: list[Problem] = []
        for targets, start in plan.communes.values():
            slots = _slots(plan, start, now)
            if not slots:
                continue  # a normal bulletin without a time: checked when accepted
            areas = resolve(db, targets["areas"], targets["clusters"]).cluster_areas
            problems += [p for p in policy_violations(db, rt, areas, slots, duration, volume)
                         if p not in problems]
    else:
        problems = policy_violations(db, rt, plan.resolved.cluster_areas,
                                     _slots(plan, plan.first, now), duration, volume)
    refuse_if(problems)


def schedule(req: BroadcastCreate, db: Session, rt: Runtime, user: User,
             cap_ref: str | None = None) -> Broadcast:
    """Validate everything, then store and plan (or, for an emergency now, dispatch) it.
    Raises a coded error (Forbidden, Invalid) before anything is stored."""
    plan = validate(req, db, rt, user)
    req = plan.req
    bc = Broadcast(id=uuid.uuid4().hex, title=req.title, content_id=plan.content.id,
                   priority=req.priority, targets=req.targets.model_dump(), start_at=req.start_at,
                   recurrence=plan.recurrence, expires_at=req.expires_at, status="scheduled",
                   created_by=user.username, origin_area_id=user.area_id, cap_ref=cap_ref,
                   volume_pct=req.volume_pct, position=req.position,
                   after_preempt=req.after_preempt)
    if plan.immediate:
        # nothing between the checks and the wire: the broadcast, its occurrence and its
        # deliveries are written straight after the command is published
        bc.content = plan.content  # (a pending object does not load its relationships)
        bc.commune_id = single_commune(db, plan)  # (before it is added: nothing flushed yet)
        db.add(bc)
        rt.dispatcher.dispatch_immediate(db, bc, plan.resolved)
        db.commit()
        db.refresh(bc)
        return bc
    bc.commune_id = single_commune(db, plan)
    if needs_approval(db, user, plan):
        bc.status = BroadcastStatus.PENDING_APPROVAL  # (new) airs once a leader approves it
    elif req.priority != "emergency":
        bc.approved_by, bc.approved_at = user.username, utcnow()
    children: list[Broadcast] = []
    if plan.handed_down:
        bc.status, bc.commune_id = BroadcastStatus.DISTRIBUTED, None  # (new)
        children = make_children(bc, {c: t for c, (t, _) in plan.communes.items()},
                                 {c: s for c, (_, s) in plan.communes.items()})
    db.add(bc)
    db.add_all(children)
    db.commit()
    if bc.status == BroadcastStatus.PENDING_APPROVAL:
        pass
    elif plan.handed_down:
        for child in children:
            if child.status == BroadcastStatus.SCHEDULED:
                rt.scheduler.plan(child)
    else:
        rt.scheduler.plan(bc)
    db.refresh(bc)
    return bc


def single_commune(db: Session, plan: Plan) -> str | None:
    """The commune a broadcast plays in, when it plays in exactly one."""
    communes = {c for c in commune_map(db, plan.resolved.cluster_areas).values() if c}
    return communes.pop() if len(communes) == 1 else None


def refuse_if(problems: list[Problem]) -> None:
    """422 naming every rule the item breaks (the first eight), when it breaks any."""
    if problems:
        raise Invalid("policy_refused", "refused by the broadcast policy: "
                      + "; ".join(p.message for p in problems[:8]), problems=problems,
                      count=len(problems))


def refuse_breaches(db: Session, rt: Runtime, bc: Broadcast, slots: list[datetime],
                    content: Content | None = None) -> None:
    """422 when ``bc`` (playing ``content`` instead of its own, for an update) would break
    the policy of an area it plays in at any of ``slots``."""
    areas = resolve(db, bc.target.areas, bc.target.clusters).cluster_areas
    refuse_if(policy_violations(db, rt, areas, slots, (content or bc.content).duration_ms / 1000,
                                bc.volume_pct))


def commit_and_plan(db: Session, rt: Runtime, bc: Broadcast) -> Broadcast:
    """Store a broadcast that is now ``scheduled`` and plan its slots."""
    db.commit()
    rt.scheduler.plan(bc)
    db.refresh(bc)
    return bc


def needs_approval(db: Session, user: User, plan: Plan) -> bool:
    """An officer's own bulletin waits for a leader where the area's policy says so.
    Emergencies do not wait, and a bulletin handed down was authorised by its issuer."""
    if user.role != "officer" or plan.req.priority == "emergency" or plan.handed_down:
        return False
    return any(p.approval_required
               for p in area_policies(db, plan.resolved.cluster_areas).values())


def policy_violations(db: Session, rt: Runtime, areas: Iterable[str | None],
                      slots: list[datetime], duration_s: float,
                      volume_pct: int | None = None) -> list[Problem]:
    """Quiet hours, programme length and volume caps of every area the item would play in
    (``areas``: the areas its clusters are in, ``Resolved.cluster_areas``)."""
    zone = ZoneInfo(rt.settings.timezone)
    problems: list[Problem] = []
    policies = area_policies(db, areas)
    for area_id in sorted(policies):
        pol = policies[area_id]
        area = db.get(Area, area_id) if area_id else None
        name = area.name if area else describe(db, area_id)  # (a parameter: the name alone)
        for slot in slots:
            for v in violations(pol, name, slot, duration_s, zone, volume_pct, area_id):
                if v not in problems:
                    problems.append(v)
        if len(problems) >= 5:
            break
    return problems


def preview_broadcast(req: BroadcastCreate, db: Session, rt: Runtime,
                      user: User) -> dict[str, Any]:
    """Conflict preview, before scheduling: what the item would collide with in each
    target commune and how it will be resolved (who plays first, who moves, what an
    emergency preempts), and whether the policy would refuse it. Nothing is stored."""
    now = utcnow()
    refused: str | None = None
    refusal: dict[str, Any] | None = None
    plan = validate(req, db, rt, user, check_policy=False)
    if req.priority != "emergency":
        try:
            refuse_by_policy(db, rt, plan, now)
        except LoaError as exc:
            refused, refusal = exc.message, exc.body()
    zone = ZoneInfo(rt.settings.timezone)
    gap = timedelta(seconds=rt.settings.programme_gap_s)
    duration = timedelta(milliseconds=plan.content.duration_ms)
    names = {a.id: a.name for a in db.scalars(select(Area).where(Area.kind == "commune"))}
    groups: list[tuple[set[str], datetime | None]]
    if plan.handed_down:
        groups = [(set(resolve(db, t["areas"], t["clusters"]).cluster_ids), s)
                  for t, s in plan.communes.values()]
    else:
        groups = [(set(plan.cluster_ids), plan.first)]
    out: dict[str, Any] = {"priority": req.priority, "refused": refused, "refusal": refusal,
                           "handed_down": plan.handed_down, "communes": []}
    for clusters, slot in groups:
        if slot is None:  # a normal bulletin from above without a time: the commune picks
            continue
        p = preview(db, clusters, slot, duration, req.priority, req.title, req.position, now,
                    gap, zone, names)
        for row in p["communes"]:
            row.update(slot=p["slot"], start=p["start"], end=p["end"], delay_s=p["delay_s"],
                       summary=p["summary"])
            out["communes"].append(row)
    if plan.handed_down and req.priority == "normal":
        out["note"] = ("normal bulletins from above land in each commune's inbox; the "
                       "commune decides whether and when to air them")
    return out



def visible_broadcasts(db: Session, user: User, limit: int = 50) -> list[Broadcast]:
    """Broadcasts the caller may see: its own area's, and those from above that reach it."""
    shown: list[Broadcast] = []
    q = select(Broadcast).order_by(Broadcast.created_at.desc())
    for bc in db.scalars(q.limit(2000)):
        if can_see(db, user, bc):
            shown.append(bc)
            if len(shown) >= min(limit, 500):
                break
    return shown


def find_visible(db: Session, user: User, broadcast_id: str) -> Broadcast:
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise NotFound("broadcast_not_found", f"no broadcast {broadcast_id!r} in your area",
                       broadcast=broadcast_id)
    return bc


def cancel(db: Session, rt: Runtime, user: User, broadcast_id: str) -> Broadcast:
    """Stop it everywhere within seconds (clusters drop it, or stop it if playing). A
    bulletin handed down is cancelled in every commune's inbox and programme."""
    bc = find_visible(db, user, broadcast_id)
    require_role(user, SCHEDULERS, "cancel broadcasts")
    require_cancel(db, user, bc)
    if bc.status in FINAL:
        raise Conflict("broadcast_state", f"broadcast is already {bc.status}",
                       status=bc.status, action="cancel")
    for target_id in [c.id for c in bc.children] + [bc.id]:
        target = db.get(Broadcast, target_id)
        if target is None or target.status in FINAL:
            continue
        for attempt in range(3):  # PostgreSQL may pick this transaction as a deadlock victim
            try:
                assert target is not None
                rt.dispatcher.cancel(db, target)
                break
            except OperationalError:
                db.rollback()
                if attempt == 2:
                    raise  # (storage_unavailable: nothing changed, its slots still planned)
                target = db.get(Broadcast, target_id)  # type: ignore[assignment]
        # once recorded (a job that fires in between finds it cancelled and sends nothing)
        rt.scheduler.unplan(target_id)
    for target_id in [c.id for c in bc.children] + [bc.id]:
        target = db.get(Broadcast, target_id)
        if target is not None and target.priority != "emergency":
            rt.dispatcher.reflow(db, target)  # items behind it move up
    bc = db.get(Broadcast, broadcast_id)  # type: ignore[assignment]
    db.refresh(bc)
    return bc


def update_content(db: Session, rt: Runtime, user: User, broadcast_id: str,
                   req: ContentUpdate) -> Broadcast:
    """Replace its content wherever it has not played yet: later slots, every commune's
    copy, and every cluster that has not started the current airing (a cluster already
    playing it finishes the old version)."""
    bc = find_visible(db, user, broadcast_id)
    require_role(user, SCHEDULERS, "update broadcasts")
    require_cancel(db, user, bc)  # who may cancel it may update it
    allowed = scope(db, user)
    if bc.parent_id is not None and allowed is not None and bc.origin_area_id not in allowed:
        # a commune may decline a bulletin from above, never make it say something else
        # (the issuer's report would say its bulletin played)
        raise Forbidden("content_from_above", f"this bulletin came from "
                        f"{describe(db, bc.origin_area_id)}; its content is the issuer's to "
                        "change", origin=bc.origin_area_id)
    if bc.status not in BROADCAST_LIVE | BROADCAST_WAITING:
        raise Conflict("broadcast_state", f"broadcast is {bc.status}; nothing left to update",
                       status=bc.status, action="update")
    if user.role == "officer" and bc.approved_by and bc.approved_by != user.username:
        raise Forbidden("approved_content_locked", f"{bc.approved_by} approved this bulletin "
                        "as it is; a new content needs a leader (or cancel it and submit "
                        "again)", approved_by=bc.approved_by)
    try:
        content: Content | None = visible_content(db, user, req.content_id)
    except NotFound:
        content = None
    if content is None:
        raise Invalid("content_unknown", f"unknown content_id {req.content_id!r}",
                      content=req.content_id)
    if content.id == bc.content_id and req.title in (None, bc.title):
        raise Conflict("content_unchanged", "it already plays that content")
    if not any(unplayed(rt, b) for b in [bc, *bc.children]):
        raise Conflict("already_played", "it has already played everywhere; nothing left "
                       "to update")
    if bc.priority != "emergency":
        for b in [bc, *bc.children]:
            if b.status not in BROADCAST_LIVE:
                continue
            slot = rt.dispatcher.next_slot(b, utcnow() - timedelta(seconds=1))
            refuse_breaches(db, rt, b, [slot] if slot else [], content)
    for b in [*bc.children, bc]:
        if req.title is not None:
            b.title = req.title
        if content.id == b.content_id:
            continue  # a new title only: nothing to re-send
        if b.status in BROADCAST_WAITING:
            b.content_id, b.revision = content.id, (b.revision or 0) + 1
        elif b.status in BROADCAST_LIVE:
            rt.dispatcher.update_content(db, b, content)
    db.commit()
    db.refresh(bc)
    return bc


def unplayed(rt: Runtime, bc: Broadcast) -> bool:
    """Is there still a slot or a cluster where ``bc`` has not played?"""
    if bc.status in (BroadcastStatus.INBOX, BroadcastStatus.PENDING_APPROVAL):
        return True
    if bc.status not in BROADCAST_LIVE:
        return False
    if rt.dispatcher.next_slot(bc, utcnow()) is not None:
        return True
    return any(d.state in ("pending", "sent", "received", "ready")
               for o in bc.occurrences if o.status in OCCURRENCE_OPEN for d in o.deliveries)


def set_position(db: Session, rt: Runtime, user: User, broadcast_id: str,
                 req: PositionSet) -> Broadcast:
    """Reorder within a programme slot: among items of the same priority, lower positions
    play first. A commune may reorder a priority bulletin from above among its priority
    items, but cannot move it behind normal items or drop it."""
    bc = find_visible(db, user, broadcast_id)
    require_role(user, SCHEDULERS, "reorder the programme")
    if bc.priority == "emergency":
        raise Invalid("emergency_has_no_position", "an emergency plays at once; it has no "
                      "place in a programme")
    if bc.commune_id is None or bc.commune_id not in (scope(db, user) or {bc.commune_id}):
        raise Forbidden("area_outside_jurisdiction", f"{user.username} cannot reorder a "
                        f"programme outside {describe(db, user.area_id)}",
                        user=user.username, home=user.area_id, area=bc.commune_id)
    if bc.status not in (BroadcastStatus.SCHEDULED, BroadcastStatus.ACTIVE, BroadcastStatus.INBOX):
        raise Conflict("broadcast_state", f"broadcast is {bc.status}", status=bc.status,
                       action="position")
    bc.position = req.position
    db.commit()
    rt.dispatcher.reflow(db, bc)  # occurrences already sent take their new places
    db.refresh(bc)
    return bc


def _awaiting_decision(db: Session, user: User, broadcast_id: str, what: str) -> Broadcast:
    """An officer's bulletin waiting for a leader, that ``user`` may decide on."""
    bc = find_visible(db, user, broadcast_id)
    require_role(user, APPROVERS, what)
    require_targets(db, user, bc.target.areas, bc.target.clusters)
    if bc.status != BroadcastStatus.PENDING_APPROVAL:
        raise Conflict("broadcast_state", f"broadcast is {bc.status}, not waiting for approval",
                       status=bc.status, action="decide")
    return bc


def approve(db: Session, rt: Runtime, user: User, broadcast_id: str,
            heard: str | None = None) -> Broadcast:
    """A leader approves an officer's bulletin; it is then planned like any other. Its
    start must still be ahead (policy is checked again: it may have changed meanwhile).
    ``heard``: the content id the leader listened to; approval is refused if the bulletin
    now plays something else (the officer changed it meanwhile)."""
    bc = _awaiting_decision(db, user, broadcast_id, "approve bulletins")
    if heard is not None and heard != bc.content_id:
        raise Conflict("approval_stale", "the bulletin's content changed since it was "
                       "listened to: listen to it again before approving",
                       heard=heard, content_id=bc.content_id)
    now = utcnow()
    slot = rt.dispatcher.next_slot(bc, now)
    if slot is None:
        raise Conflict("approval_too_late", "its start time has passed; the officer must "
                       "schedule it again")
    refuse_breaches(db, rt, bc, [slot])
    move(bc, BroadcastStatus.SCHEDULED)
    bc.approved_by, bc.approved_at = user.username, now
    return commit_and_plan(db, rt, bc)


def reject(db: Session, rt: Runtime, user: User, broadcast_id: str,
           req: Decline) -> Broadcast:
    """A leader sends an officer's bulletin back, with the reason; it never airs."""
    bc = _awaiting_decision(db, user, broadcast_id, "reject bulletins")
    move(bc, BroadcastStatus.REJECTED)
    bc.decided_by, bc.decided_at = user.username, utcnow()
    bc.decision_note = req.reason.strip()
    db.commit()
    db.refresh(bc)
    return bc

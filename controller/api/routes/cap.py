"""CAP 1.2 ingest and reports upward (per bulletin, per commune, CSV)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from audio import AudioError, prepare_file, prepare_segment
from controller.access.jurisdiction import can_see, require_cancel, require_targets, scope
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.routes.broadcasts import schedule
from controller.api.routes.contents import _store
from controller.api.schemas import BroadcastCreate, Targets
from controller.broadcasting.targeting import ancestor_ids, resolve
from controller.cap.alert import (
    MAX_CAP_BYTES,
    CapAlert,
    CapError,
    ack_xml,
    map_priority,
    match_area,
    parse_cap,
    verify_signature,
)
from controller.db.models import Area, Broadcast, Cluster, utcnow
from controller.errors import Invalid, NotFound, TooLarge, Unavailable
from devices.messages import iso

router = APIRouter(tags=["cap", "reports"])


@router.post("/cap", status_code=201, responses={
    201: {"description": "aired: broadcast, roll-up and a CAP Ack"},
    202: {"description": "valid but not aired (status Test/Exercise/System/Draft)"}})
async def cap_ingest(request: Request, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> Response:
    """POST an OASIS CAP 1.2 alert (``application/xml``). Alert airs it, Update replaces
    the referenced alert where it has not played yet, Cancel stops it everywhere."""
    body = await request.body()
    if len(body) > MAX_CAP_BYTES:
        raise TooLarge("cap_too_large", f"CAP documents are limited to {MAX_CAP_BYTES} bytes",
                       limit_bytes=MAX_CAP_BYTES)
    status, payload = await run_in_threadpool(_ingest, body, db, rt, user)
    return Response(json.dumps(payload, ensure_ascii=False, default=str), status_code=status,
                    media_type="application/json")


def _ingest(body: bytes, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> tuple[int, dict[str, Any]]:
    try:
        alert = parse_cap(body)
    except CapError as exc:
        raise Invalid("cap_invalid", f"invalid CAP 1.2: {exc}", detail=str(exc)) from None
    alert, signature = _check_signature(body, alert, rt)
    now = utcnow()
    sender = f"loa@{rt.settings.timezone}"
    if alert.msg_type in ("Ack", "Error"):
        raise Invalid("cap_reply", f"a CAP {alert.msg_type} is a reply; nothing to broadcast",
                      msg_type=alert.msg_type)
    referenced = _referenced(db, alert) if alert.references else []
    if alert.msg_type == "Cancel":
        if not referenced:
            raise Invalid("cap_cancel_unknown", "the Cancel references no alert this "
                          "controller holds: " + " ".join(alert.references),
                          references=list(alert.references))
        for bc in referenced:
            require_cancel(db, user, bc)
        for bc in referenced:
            if bc.status in ("scheduled", "active"):
                rt.scheduler.unplan(bc.id)
                rt.dispatcher.cancel(db, bc)
        note = f"cancelled {len(referenced)} broadcast(s)"
        return 200, {"identifier": alert.identifier, "msgType": "Cancel", "signature": signature,
                     "cancelled": [b.id for b in referenced],
                     "ack": ack_xml(alert, sender, now, note)}
    info = next((i for i in alert.infos if i.language.lower().startswith("vi")), alert.infos[0])
    for i in alert.infos:
        if i.expires is not None and i.expires <= now:
            raise Invalid("cap_expired", f"the alert expired at {i.expires.isoformat()}; "
                          "nothing was broadcast", expires=i.expires.isoformat())
    if not info.areas:
        raise Invalid("cap_no_area", "the alert names no <area>")
    known = {a.id: (a.name, a.kind) for a in db.scalars(select(Area))}
    targets, unmatched = [], []
    for area in info.areas:
        aid = match_area(area, known)
        (targets.append(aid) if aid else unmatched.append(area.desc))
    if unmatched:
        raise Invalid("cap_area_unmatched", "these CAP areas match no area of ours (use a "
                      "geocode with valueName LOA and our area id, or the exact area name): "
                      + "; ".join(unmatched[:10]), areas=unmatched[:10])
    require_targets(db, user, targets, [])
    priority = map_priority(info, rt.settings.cap_priority_rules)
    if alert.status != "Actual":
        return 202, {"identifier": alert.identifier, "status": alert.status, "aired": False,
                     "signature": signature,
                     "reason": f"status {alert.status}: validated, not aired",
                     "priority": priority, "targets": targets,
                     "ack": ack_xml(alert, sender, now, f"{alert.status}: not aired")}
    try:
        if info.audio:
            prepared = prepare_file(info.audio[0][1], rt.audio_settings(True))
        else:
            text = info.text() or info.event
            prepared = prepare_segment(rt.tts.synthesize(text[:10_000]), rt.audio_settings(True),
                                       source_format="tts")
    except AudioError as exc:
        raise Invalid(f"audio_{exc.code}", f"CAP content: {exc.message}") from None
    content = _store(db, prepared, kind="cap", user=user.username,
                     source_name=f"CAP {alert.identifier}"[:255], text=info.text()[:10_000])
    for bc in referenced:  # Update: the new one replaces it where it has not played
        require_cancel(db, user, bc)
        if bc.status in ("scheduled", "active"):
            rt.scheduler.unplan(bc.id)
            rt.dispatcher.cancel(db, bc)
    start = None
    if priority != "emergency":
        onset = info.onset if info.onset and info.onset > now else None
        start = onset or now + timedelta(seconds=max(5.0, rt.settings.min_start_lead_s))
    req = BroadcastCreate(content_id=content.id, targets=Targets(areas=targets),
                          title=(info.headline or info.event)[:200], start_at=start,
                          priority=priority, expires_at=info.expires)  # type: ignore[arg-type]
    bc = schedule(req, db, rt, user, cap_ref=alert.ref)
    rollup = _rollup(db, bc)
    note = "; ".join(f"{r['name']}: {r['targeted']} clusters targeted, {r['online']} online"
                     for r in rollup)
    return 201, {"identifier": alert.identifier, "msgType": alert.msg_type,
                 "priority": priority, "broadcast_id": bc.id,
                 "replaced": [b.id for b in referenced], "signature": signature,
                 "rollup": rollup, "ack": ack_xml(alert, sender, now, note)}


def _check_signature(body: bytes, alert: CapAlert, rt: RuntimeDep) -> tuple[CapAlert, str | None]:
    """A signature that is present must verify against a trusted issuer (422 if not); the
    alert is then read from what the signature covers. Unsigned alerts pass unless
    ``cap_require_signature``; the API token authenticates their sender."""
    certs = rt.settings.cap_trusted_certs
    if not alert.signed:
        if rt.settings.cap_require_signature:
            raise Invalid("cap_unsigned", "this controller accepts only CAP alerts signed by "
                          "a trusted issuer (XML-DSig); this one is not signed")
        return alert, None
    if not certs:
        if rt.settings.cap_require_signature:
            raise Invalid("cap_no_trusted_issuers", "signed alert, but no trusted issuer "
                          "certificates are configured (LOA_CAP_TRUSTED_CERTS)")
        return alert, "present, not verified: no trusted issuer certificates configured"
    try:
        pems = [Path(p).read_bytes() for p in certs]
        verified, signer = verify_signature(body, pems)
        return parse_cap(verified), f"verified: signed by {signer}"
    except OSError as exc:
        raise Unavailable("cap_certificate_unreadable",
                          f"cannot read a trusted certificate: {exc}") from None
    except CapError as exc:
        raise Invalid("cap_signature_refused", f"CAP signature refused: {exc}",
                      detail=str(exc)) from None


def _referenced(db: SessionDep, alert: CapAlert) -> list[Broadcast]:
    refs = []
    for ref in alert.references:
        parts = ref.split(",")
        if len(parts) < 2:
            continue
        sender, ident = parts[0], parts[1]
        q = select(Broadcast).where(Broadcast.cap_ref.like(f"{sender},{ident},%"))
        refs.extend(db.scalars(q))
    return refs


def _commune_of(db: SessionDep, area_id: str | None, cache: dict[str, str]) -> str:
    if area_id is None:
        return "?"
    if area_id not in cache:
        chain = ancestor_ids(db, area_id)
        kinds = {a: db.get(Area, a).kind for a in chain}  # type: ignore[union-attr]
        cache[area_id] = next((a for a in chain if kinds[a] == "commune"), chain[-1])
    return cache[area_id]


def _rollup(db: SessionDep, bc: Broadcast, by: str = "commune",
            within: set[str] | None = None) -> list[dict[str, Any]]:
    """Per commune (or per village, ``by="village"``: each cluster's own area): clusters
    targeted and how they fared over all occurrences, with the first start and last end
    heard (proof of play). ``ratio`` is played deliveries over deliveries, so a recurring
    broadcast's ten slots count ten times. A bulletin handed down counts its communes'
    copies, and says what each commune decided. ``within``: only clusters in these areas."""
    ids = resolve(db, bc.targets.get("areas", []), bc.targets.get("clusters", [])).cluster_ids
    clusters = {c.id: c for c in db.scalars(select(Cluster).where(Cluster.id.in_(ids)))
                if within is None or c.area_id in within}
    cache: dict[str, str] = {}

    def key(c: Cluster) -> str:
        return (c.area_id or "?") if by == "village" else _commune_of(db, c.area_id, cache)

    rows: dict[str, dict[str, Any]] = {}
    duration = bc.content.duration_ms / 1000
    for cid in ids:
        c = clusters.get(cid)
        if c is None:
            continue
        k = key(c)
        area = db.get(Area, k)
        r = rows.setdefault(k, {
            "area_id": k, "name": area.name if area else k,
            "targeted": 0, "online": 0, "deliveries": 0, "played": 0, "playing": 0,
            "failed": 0, "unreachable": 0, "play_time_s": 0.0, "requested_s": 0.0,
            "first_started_at": None, "last_finished_at": None})
        r["targeted"] += 1
        r["online"] += c.state in ("online", "degraded")
    if by == "commune":
        for child in bc.children:
            r = rows.get(child.commune_id or "")
            if r is not None:
                r["decision"] = child.status
                r["decided_by"] = child.decided_by
                r["note"] = child.decision_note
    occurrences = [o for b in [bc, *bc.children] for o in b.occurrences]
    for occ in occurrences:
        for d in occ.deliveries:
            c = clusters.get(d.cluster_id)
            if c is None:
                continue
            r = rows[key(c)]
            r["deliveries"] += 1
            r["requested_s"] += duration
            if d.started_at:  # heard starting, also while it still plays (or was preempted)
                first = r["first_started_at"]
                r["first_started_at"] = min(first, d.started_at) if first else d.started_at
            if d.state == "played":
                r["played"] += 1
                if d.started_at and d.finished_at:
                    r["play_time_s"] += (d.finished_at - d.started_at).total_seconds()
                    last = r["last_finished_at"]
                    r["last_finished_at"] = max(last, d.finished_at) if last else d.finished_at
            elif d.state in ("playing", "preempted"):
                r["playing"] += 1
            elif d.state == "failed":
                r["failed"] += 1
            elif d.state == "missed":
                r["unreachable"] += 1
    for r in rows.values():
        r["play_time_s"] = round(r["play_time_s"], 1)
        r["requested_s"] = round(r["requested_s"], 1)
        r["ratio"] = round(r["played"] / r["deliveries"], 4) if r["deliveries"] else None
        for f in ("first_started_at", "last_finished_at"):
            if r[f] is not None:
                r[f] = iso(r[f])
    return sorted(rows.values(), key=lambda r: r["area_id"])


@router.get("/broadcasts/{broadcast_id}/report")
def broadcast_report(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                     format: Literal["json", "csv"] = "json",
                     by: Literal["commune", "village"] = "commune") -> Response:
    """Report upward per commune (``?by=village``: per village, the proof that it played
    in each): targeted, played, playing now, failed, unreachable, play time vs requested
    duration, ratio, first start and last end heard. ``?format=csv`` for a spreadsheet, its times in
    the controller's time zone. An account with an area sees the rows of its own area only."""
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise NotFound("broadcast_not_found", f"no broadcast {broadcast_id!r} in your area",
                       broadcast=broadcast_id)
    rows = _rollup(db, bc, by, scope(db, user))
    if format == "csv":
        buf = io.StringIO()
        fields = ["area_id", "name", "targeted", "online", "deliveries", "played", "playing",
                  "failed",
                  "unreachable", "play_time_s", "requested_s", "ratio", "first_started_at",
                  "last_finished_at", "decision", "decided_by", "note"]
        w = csv.DictWriter(buf, fieldnames=fields, restval="")
        w.writeheader()
        zone = ZoneInfo(rt.settings.timezone)
        for r in rows:
            for f in ("first_started_at", "last_finished_at"):
                if r[f]:  # local wall time, to the second, as an officer files it
                    r[f] = datetime.fromisoformat(r[f]).astimezone(zone).isoformat(
                        sep=" ", timespec="seconds")
            w.writerow(r)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="broadcast-{bc.id}-{by}.csv"'})
    return Response(json.dumps({"broadcast_id": bc.id, "title": bc.title, "priority": bc.priority,
                                "by": by, f"{by}s": rows}, ensure_ascii=False),
                    media_type="application/json")

"""What a CAP 1.2 alert becomes: an Alert is scheduled (or aired at once) in the areas
it names, an Update replaces what it references where that has not played yet, a Cancel
stops it everywhere; the answer carries a CAP Ack and the roll-up per commune."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audio import AudioError, prepare_file, prepare_segment
from controller.access.jurisdiction import require_cancel, require_targets
from controller.api.schemas import BroadcastCreate, Targets
from controller.broadcasting import service
from controller.broadcasting.contents import store_content
from controller.broadcasting.proof import rollup
from controller.broadcasting.states import BROADCAST_FINAL
from controller.cap.alert import (
    CapAlert,
    CapError,
    ack_xml,
    map_priority,
    match_area,
    parse_cap,
    verify_signature,
)
from controller.db.models import Area, Broadcast, Delivery, Occurrence, User, utcnow
from controller.errors import Invalid, Unavailable

if TYPE_CHECKING:
    from controller.runtime import Runtime

def ingest(body: bytes, db: Session, rt: Runtime, user: User) -> tuple[int, dict[str, Any]]:
    try:
        alert = parse_cap(body)
    except CapError as exc:
        raise Invalid("cap_invalid", f"invalid CAP 1.2: {exc}", detail=str(exc)) from None
    alert, signature = _check_signature(body, alert, rt)
    now = utcnow()
    sender = rt.settings.cap_sender or f"loa-controller@{socket.getfqdn()}"
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
        stopped = _stop(db, rt, user, referenced)
        return 200, {"identifier": alert.identifier, "msgType": "Cancel", "signature": signature,
                     "cancelled": [b.id for b in referenced], "stopped": stopped,
                     "ack": ack_xml(alert, sender, now, _stopped_note(db, stopped))}
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
    # read in the info's own language, by a voice for it; where there is none, by the
    # Vietnamese voice, and the Ack says so
    voice = rt.tts.voice_for(info.language or "vi-VN")
    voice_note = f"read in {info.language} (voice {voice})"
    if voice is None:
        voice = "vi"
        voice_note = f"no voice for {info.language}: read by the Vietnamese voice"
    try:
        if info.audio:
            prepared = prepare_file(info.audio[0][1], rt.audio_settings(True))
            voice_note = "its attached recording"
        else:
            text = info.text() or info.event
            prepared = prepare_segment(rt.tts.synthesize(text[:10_000], voice=voice),
                                       rt.audio_settings(True), source_format="tts")
    except AudioError as exc:
        raise Invalid(f"audio_{exc.code}", f"CAP content: {exc.message}") from None
    content = store_content(db, prepared, kind="cap", user=user.username,
                     source_name=f"CAP {alert.identifier}"[:255], text=info.text()[:10_000])
    for bc in referenced:  # Update: the new one replaces it where it has not played
        require_cancel(db, user, bc)
    replaced = _stop(db, rt, user, referenced)
    start = None
    if priority != "emergency":
        # from now, not from the request's arrival: synthesising a long text takes time
        # (tens of seconds), and a start computed before it would be in the past by now
        soonest = utcnow() + timedelta(seconds=max(5.0, rt.settings.min_start_lead_s))
        start = soonest
        if info.onset is not None:  # ahead of what it warns of, not as it begins
            start = max(soonest, info.onset - timedelta(seconds=rt.settings.cap_onset_lead_s))
    req = BroadcastCreate(content_id=content.id, targets=Targets(areas=targets),
                          title=(info.headline or info.event)[:200], start_at=start,
                          priority=priority, expires_at=info.expires)  # type: ignore[arg-type]
    bc = service.schedule(req, db, rt, user, cap_ref=alert.ref)
    rows = rollup(db, bc)
    note = "; ".join(f"{r['name']}: {r['targeted']} clusters targeted, {r['online']} online"
                     for r in rows)
    note += f"; {voice_note}"
    if replaced:
        note += "; replaces: " + _stopped_note(db, replaced)
    return 201, {"identifier": alert.identifier, "msgType": alert.msg_type,
                 "priority": priority, "broadcast_id": bc.id, "language": info.language,
                 "read_as": voice_note, "replaced": [b.id for b in referenced],
                 "stopped": replaced,
                 "signature": signature, "rollup": rows, "ack": ack_xml(alert, sender, now, note)}


def _stop(db: Session, rt: Runtime, user: User,
          referenced: list[Broadcast]) -> list[dict[str, Any]]:
    """Cancel what a CAP Cancel or Update references, wherever it went: the issuer's own
    broadcast and every commune's copy (scheduled, in the inbox, on the air), as the REST
    cancel does. Returns, per copy, what it was and whether it was stopped."""
    out: list[dict[str, Any]] = []
    for bc in referenced:
        copies = [bc, *bc.children]
        before = {c.id: (c.commune_id, c.status, _on_air(db, c)) for c in copies}
        if bc.status not in BROADCAST_FINAL:
            service.cancel(db, rt, user, bc.id)
        for c in copies:
            db.refresh(c)
            commune, was, on_air = before[c.id]
            if c is bc and c.children:
                continue  # the issuer's original: its copies carry the airings
            out.append({"broadcast_id": c.id, "commune_id": commune, "was": was,
                        "on_air_clusters": on_air,
                        "stopped": was not in BROADCAST_FINAL and c.status == "cancelled"})
    return out


def _on_air(db: Session, bc: Broadcast) -> int:
    """Clusters playing (or preempted in) ``bc`` now."""
    return int(db.scalar(select(func.count()).select_from(Delivery).join(Occurrence).where(
        Occurrence.broadcast_id == bc.id, Occurrence.status == "sent",
        Delivery.state.in_(("playing", "preempted")))) or 0)


def _stopped_note(db: Session, stopped: list[dict[str, Any]]) -> str:
    names = {a.id: a.name for a in db.scalars(select(Area).where(
        Area.id.in_([s["commune_id"] for s in stopped if s["commune_id"]])))}
    parts = []
    for s in stopped:
        where = names.get(s["commune_id"], s["commune_id"] or s["broadcast_id"])
        if s["stopped"]:
            what = f"stopped on the air on {s['on_air_clusters']} cluster(s)" if \
                s["on_air_clusters"] else f"cancelled (was {s['was']})"
        else:
            what = f"nothing to stop (already {s['was']})"
        parts.append(f"{where}: {what}")
    return "; ".join(parts) or "nothing to stop"


def _check_signature(body: bytes, alert: CapAlert, rt: Runtime) -> tuple[CapAlert, str | None]:
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


def _referenced(db: Session, alert: CapAlert) -> list[Broadcast]:
    refs: list[Broadcast] = []
    for ref in alert.references:
        parts = ref.split(",")
        if len(parts) < 2:
            continue
        sender, ident = parts[0], parts[1]
        q = select(Broadcast).where(Broadcast.cap_ref.like(f"{sender},{ident},%"))
        refs.extend(db.scalars(q))
    return refs



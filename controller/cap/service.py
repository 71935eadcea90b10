"""What a CAP 1.2 alert becomes.

An Alert (or Update) is planned first, nothing stored: each ``<info>`` block's areas become
clusters (:mod:`controller.cap.areas`), blocks in a language the station airs
(``LOA_CAP_LANGUAGES``) take precedence over translations, and the clusters that hear the
same blocks form one *audience*, aired as one broadcast that reads those blocks in order,
each in its own language (or plays its recording), at the highest priority among them.

An emergency audience goes on the air at once with a chime and its headline, which take a
fraction of a second to make; the rest (description, instruction, recordings, further
blocks) is made off the request and follows the headline as the broadcast's second part.
Other audiences air ahead of their ``<onset>``. An Update replaces what it references once
its own broadcasts are scheduled; a Cancel stops every copy of what it references. Every
answer carries a CAP Ack; a refusal leaves nothing stored (the route answers it with a CAP
Error as well as the coded HTTP error).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydub import AudioSegment
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audio import AudioError, AudioSettings, PreparedAudio, decode, prepare_segment
from controller.access.jurisdiction import require_cancel, scope
from controller.api.schemas import BroadcastCreate, Targets
from controller.broadcasting import service
from controller.broadcasting.contents import store_content
from controller.broadcasting.proof import rollup
from controller.broadcasting.states import BROADCAST_FINAL
from controller.cap.alert import (
    CapAlert,
    CapError,
    CapInfo,
    ack_xml,
    map_priority,
    parse_cap,
    verify_signature,
)
from controller.cap.areas import AreaIndex
from controller.cap.resource import ResourceError, ResourceLimits, load_recording
from controller.db.models import Area, Broadcast, Delivery, Occurrence, User, utcnow
from controller.errors import Forbidden, Invalid, LoaError, Unavailable

if TYPE_CHECKING:
    from controller.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["Audience", "ingest", "sender_of"]

RANK = {"normal": 0, "priority": 1, "emergency": 2}
#: silence between two blocks read one after the other
BLOCK_GAP_MS = 500


@dataclass
class Audience:
    """Clusters that hear the same blocks, and what they hear."""

    blocks: list[int]
    clusters: set[str]
    priority: str = "normal"
    areas: list[str] = field(default_factory=list)
    cluster_targets: list[str] = field(default_factory=list)


@dataclass
class Plan:
    audiences: list[Audience]
    notes: list[str]


def sender_of(rt: Runtime) -> str:
    return rt.settings.cap_sender or f"loa-controller@{socket.getfqdn()}"


def ingest(body: bytes, db: Session, rt: Runtime, user: User) -> tuple[int, dict[str, Any]]:
    try:
        alert = parse_cap(body)
    except CapError as exc:
        raise Invalid("cap_invalid", f"invalid CAP 1.2: {exc}", detail=str(exc)) from None
    alert, signature = _check_signature(body, alert, rt)
    now = utcnow()
    sender = sender_of(rt)
    if alert.msg_type in ("Ack", "Error"):
        raise Invalid("cap_reply", f"a CAP {alert.msg_type} is a reply; nothing to broadcast",
                      msg_type=alert.msg_type)
    if alert.msg_type in ("Alert", "Update") and alert.status == "Actual":
        again = _holding(db, alert.sender, alert.identifier)
        if again:  # a retried POST, a feed read twice: it airs once
            return 200, {"identifier": alert.identifier, "msgType": alert.msg_type,
                         "duplicate": True, "broadcast_ids": [b.id for b in again],
                         "signature": signature,
                         "ack": ack_xml(alert, sender, now, "duplicate: this alert was "
                                        "received before; nothing was aired again")}
    referenced = _referenced(db, alert) if alert.references else []
    if alert.msg_type == "Cancel":
        if not referenced:
            raise Invalid("cap_cancel_unknown", "the Cancel references no alert of this "
                          "sender that this controller holds: " + " ".join(alert.references),
                          references=list(alert.references))
        for bc in referenced:
            require_cancel(db, user, bc)
        stopped = _stop(db, rt, user, referenced)
        return 200, {"identifier": alert.identifier, "msgType": "Cancel", "signature": signature,
                     "cancelled": [b.id for b in referenced], "stopped": stopped,
                     "ack": ack_xml(alert, sender, now, _stopped_note(db, stopped))}
    plan = _plan(db, rt, user, alert)
    if alert.status != "Actual":
        return 202, {"identifier": alert.identifier, "status": alert.status, "aired": False,
                     "signature": signature,
                     "reason": f"status {alert.status}: validated, not aired",
                     "priority": max((a.priority for a in plan.audiences), key=RANK.__getitem__),
                     "targets": sorted({x for a in plan.audiences for x in a.areas}),
                     "clusters": sorted({c for a in plan.audiences for c in a.clusters}),
                     "ack": ack_xml(alert, sender, now, f"{alert.status}: not aired")}
    for bc in referenced:  # an Update: may this account replace what it references?
        require_cancel(db, user, bc)
    made: list[tuple[Broadcast, str, int]] = []
    aired: list[Audience] = []
    for aud in plan.audiences:
        try:
            made.append(_air(db, rt, user, alert, plan, aud))
            aired.append(aud)
        except LoaError as exc:
            if not made:
                raise  # nothing aired yet: the alert is refused whole, nothing stored
            # (an emergency audience went first and is on the air: the rest is reported)
            db.rollback()
            plan.notes.append(f"info {', '.join(str(i + 1) for i in aud.blocks)} not aired "
                              f"on {len(aud.clusters)} cluster(s): {exc.code}: {exc.message}")
    plan.audiences = aired
    replaced = _stop(db, rt, user, referenced)  # only once the new one is in place
    bcs = [bc for bc, _, _ in made]
    rows = [r for bc in bcs for r in rollup(db, bc)]
    names = {a.id: a.name for a in db.scalars(select(Area).where(
        Area.id.in_([x for a in plan.audiences for x in a.areas])))}
    notes = [", ".join([names.get(x, x) for x in aud.areas]
                       + ([f"{len(aud.cluster_targets)} cluster(s)"] if aud.cluster_targets
                          else [])) + f": {said}"
             for aud, (_bc, said, _n) in zip(plan.audiences, made, strict=True)] + plan.notes
    note = "; ".join(f"{r['name']}: {r['targeted']} clusters targeted, {r['online']} online"
                     for r in rows)
    note += "; " + "; ".join(notes)
    if replaced:
        note += "; replaces: " + _stopped_note(db, replaced)
    first = plan.audiences[0]
    first_info = alert.infos[first.blocks[0]]
    return 201, {
        "identifier": alert.identifier, "msgType": alert.msg_type,
        "priority": bcs[0].priority, "broadcast_id": bcs[0].id,
        "language": first_info.language, "read_as": made[0][1],
        "broadcasts": [{"broadcast_id": bc.id, "priority": bc.priority,
                        "blocks": aud.blocks,
                        "languages": [alert.infos[i].language for i in aud.blocks],
                        "targets": bc.targets, "clusters": len(aud.clusters),
                        "read_as": said, "parts": parts}
                       for (bc, said, parts), aud in zip(made, plan.audiences, strict=True)],
        "notes": plan.notes, "replaced": [b.id for b in referenced], "stopped": replaced,
        "signature": signature, "rollup": rows, "ack": ack_xml(alert, sender, now, note)}


# --- planning: blocks -> audiences ------------------------------------------------------------

def _aired_rank(language: str, aired: list[str]) -> int | None:
    lang = language.lower()
    for i, want in enumerate(aired):
        w = want.lower()
        if lang == w or lang.startswith(w + "-"):
            return i
    return None


def _plan(db: Session, rt: Runtime, user: User, alert: CapAlert) -> Plan:
    """Audiences and notes, or a coded refusal; nothing is stored."""
    now = utcnow()
    notes: list[str] = []
    live = [i for i, info in enumerate(alert.infos)
            if info.expires is None or info.expires > now]
    if not live:
        last = max(i.expires for i in alert.infos if i.expires is not None)
        raise Invalid("cap_expired", f"the alert expired at {last.isoformat()}; nothing was "
                      "broadcast", expires=last.isoformat())
    for i in range(len(alert.infos)):
        if i not in live:
            notes.append(f"info {i + 1} ({alert.infos[i].language}) expired: not aired")
    if not any(alert.infos[i].areas for i in live):
        raise Invalid("cap_no_area", "the alert names no <area>")
    index = AreaIndex(db, rt.settings.cap_geocodes, scope(db, user))
    aired = rt.settings.cap_languages
    covers: dict[int, set[str]] = {}
    named: set[str] = set()
    unmatched: list[str] = []
    outside: set[str] = set()
    shapes = False
    for i in live:
        info = alert.infos[i]
        found = index.match(info.areas)
        covers[i] = found.clusters
        named |= found.areas
        unmatched += [d for d in found.unmatched if d not in unmatched]
        outside |= found.outside
        shapes |= any(a.has_shape for a in info.areas)
    if unmatched:
        notes.append("areas matching nothing of ours: " + "; ".join(unmatched[:10]))
    if outside:
        notes.append(f"{len(outside)} cluster(s) in the alert's area are outside "
                     f"{user.username}'s area: not warned")
    if shapes and (missing := index.without_coordinates()):
        notes.append(f"{missing} cluster(s) have no coordinates: a polygon or circle cannot "
                     "place them")
    if not any(covers.values()):
        if outside:
            raise Forbidden("cap_outside_area", f"every cluster the alert covers is outside "
                            f"{user.username}'s area; nothing was broadcast",
                            user=user.username, clusters=len(outside))
        raise Invalid("cap_area_unmatched", "the alert's areas match no area or cluster of "
                      "ours (use a geocode with valueName LOA and our area id, a polygon or "
                      "circle around our clusters, or the exact area name): "
                      + "; ".join(unmatched[:10]), areas=unmatched[:10])
    # blocks in an aired language first; a translation only where none of those reaches
    primary = [i for i in live if _aired_rank(alert.infos[i].language, aired) is not None]
    reached = set().union(*(covers[i] for i in primary)) if primary else set()
    for i in live:
        if i in primary:
            continue
        before = len(covers[i])
        covers[i] = covers[i] - reached
        if len(covers[i]) < before:
            notes.append(f"info {i + 1} ({alert.infos[i].language}) is not aired where a "
                         f"block in {'/'.join(aired)} covers the same clusters")
    # the same warning in several other languages (translations reach the same clusters):
    # read once, in the first of them a voice speaks
    kept: dict[frozenset[str], int] = {}
    for i in sorted((i for i in live if i not in primary and covers[i]),
                    key=lambda i: (rt.tts.voice_for(alert.infos[i].language) is None, i)):
        same = frozenset(covers[i])
        if same in kept and alert.infos[kept[same]].language != alert.infos[i].language:
            notes.append(f"info {i + 1} ({alert.infos[i].language}) is a translation of info "
                         f"{kept[same] + 1} ({alert.infos[kept[same]].language}): not aired")
            covers[i] = set()
        else:
            kept.setdefault(same, i)
    order = sorted(live, key=lambda i: (_aired_rank(alert.infos[i].language, aired)
                                        if i in primary else len(aired), i))
    heard: dict[str, list[int]] = {}
    for i in order:
        for cid in covers[i]:
            heard.setdefault(cid, []).append(i)
    groups: dict[tuple[int, ...], set[str]] = {}
    for cid, its in heard.items():
        groups.setdefault(tuple(its), set()).add(cid)
    rules = rt.settings.cap_priority_rules
    audiences = []
    for heard_blocks, clusters in sorted(groups.items()):
        aud = Audience(list(heard_blocks), clusters, max(
            (map_priority(alert.infos[i], rules) for i in heard_blocks), key=RANK.__getitem__))
        aud.areas, aud.cluster_targets = index.targets(clusters, named)
        audiences.append(aud)
    # the most urgent first: an emergency's headline is what must be on the air soonest
    audiences.sort(key=lambda a: -RANK[a.priority])
    return Plan(audiences, notes)


# --- airing ------------------------------------------------------------------------------------

@dataclass
class _Piece:
    """One block's contribution to an audience's audio."""

    info: CapInfo
    voice: str
    said: str
    text: str | None  # read by TTS
    recording: bytes | None = None


def _voice(rt: Runtime, info: CapInfo) -> tuple[str, str]:
    voice = rt.tts.voice_for(info.language or "vi-VN")
    if voice is None:
        return "vi", f"no voice for {info.language}: read by the Vietnamese voice"
    return voice, f"read in {info.language} (voice {voice})"


def _limits(rt: Runtime) -> ResourceLimits:
    s = rt.settings
    return ResourceLimits(int(s.cap_resource_max_mb * 1024 * 1024), s.cap_resource_timeout_s,
                          tuple(h.lower() for h in s.cap_resource_hosts))


def _pieces(rt: Runtime, alert: CapAlert, blocks: list[int], skip_first_lead: bool
            ) -> list[_Piece]:
    """What each block says, in order: its recording when it has one that can be had
    (fetched now), else its text by TTS, with the reason. ``skip_first_lead``: the first
    block's headline already aired (an emergency's first part)."""
    out = []
    for n, i in enumerate(blocks):
        info = alert.infos[i]
        voice, said = _voice(rt, info)
        text = info.rest() if n == 0 and skip_first_lead else info.text()
        res = info.recording
        if res is not None:
            try:
                data = load_recording(res, _limits(rt))
                decode(data, rt.audio_settings(False))  # refuses what is not audio
                out.append(_Piece(info, voice, f"its recording ({res.uri or 'inline'})", None,
                                  data))
                continue
            except (ResourceError, AudioError) as exc:
                reason = exc.message if isinstance(exc, AudioError) else str(exc)
                said = f"recording {res.uri or '(inline)'} not played ({reason}): {said} instead"
                log.warning("CAP %s info %d: %s", alert.identifier, i + 1, said)
        if text:
            out.append(_Piece(info, voice, said, text))
    return out


def _render(rt: Runtime, pieces: list[_Piece], settings: AudioSettings) -> PreparedAudio:
    seg: AudioSegment | None = None
    for p in pieces:
        if p.recording is not None:
            part, _ = decode(p.recording, settings)
        else:
            part = rt.tts.synthesize((p.text or "")[:10_000], voice=p.voice)
        seg = part if seg is None else seg + AudioSegment.silent(BLOCK_GAP_MS) + part
    assert seg is not None
    return prepare_segment(seg, settings, source_format="cap")


def _start(rt: Runtime, alert: CapAlert, aud: Audience) -> datetime:
    """A non-emergency: ahead of the earliest onset by the configured lead, never before
    it can be sent (counted from now: its audio may have taken long to make)."""
    soonest = utcnow() + timedelta(seconds=max(5.0, rt.settings.min_start_lead_s))
    onsets = [o for i in aud.blocks if (o := alert.infos[i].onset) is not None]
    if not onsets:
        return soonest
    return max(soonest, min(onsets) - timedelta(seconds=rt.settings.cap_onset_lead_s))


def _expires(alert: CapAlert, aud: Audience) -> datetime | None:
    ends = [e for i in aud.blocks if (e := alert.infos[i].expires) is not None]
    return max(ends) if len(ends) == len(aud.blocks) else None


def _air(db: Session, rt: Runtime, user: User, alert: CapAlert, plan: Plan,
         aud: Audience) -> tuple[Broadcast, str, int]:
    """Schedule (or put on the air) one audience's broadcast; returns it, what it says it
    reads, and in how many parts. A refusal raises before anything is committed."""
    first = alert.infos[aud.blocks[0]]
    title = (first.headline or first.event)[:200]
    emergency = aud.priority == "emergency"
    base = rt.audio_settings(True)
    # an emergency's first part: chime and headline, made in a fraction of a second; what
    # else it says follows as its second part
    rest = emergency and bool(first.rest() or first.recording or len(aud.blocks) > 1)
    try:
        if emergency:
            voice, said = _voice(rt, first)
            prepared = prepare_segment(rt.tts.synthesize(first.lead()[:10_000], voice=voice),
                                       dataclasses.replace(base, chime_after=not rest),
                                       source_format="cap")
            said = f"headline at once, {said}" + ("; the rest follows" if rest else "")
        else:
            pieces = _pieces(rt, alert, aud.blocks, skip_first_lead=False)
            prepared = _render(rt, pieces, base)
            said = "; ".join(p.said for p in pieces)
    except AudioError as exc:
        raise Invalid(f"audio_{exc.code}", f"CAP content: {exc.message}") from None
    content = store_content(db, prepared, kind="cap", user=user.username,
                            source_name=f"CAP {alert.identifier}"[:255],
                            text=(first.lead() if emergency else first.text())[:10_000],
                            commit=False)
    req = BroadcastCreate(content_id=content.id,
                          targets=Targets(areas=aud.areas, clusters=aud.cluster_targets),
                          title=title, start_at=None if emergency else _start(rt, alert, aud),
                          priority=aud.priority,  # type: ignore[arg-type]
                          expires_at=_expires(alert, aud))
    service.validate(req, db, rt, user)  # refused: the flushed audio is rolled back
    db.commit()
    bc = service.schedule(req, db, rt, user, cap_ref=alert.ref)
    if rest and bc.occurrences:
        part = rt.dispatcher.reserve_part(db, bc, bc.occurrences[0])
        rt.background.submit(_follow, rt, alert, aud.blocks, bc.id, part.id, user.username)
        return bc, said, 2
    return bc, said, 1


def _follow(rt: Runtime, alert: CapAlert, blocks: list[int], broadcast_id: str,
            occurrence_id: str, username: str) -> None:
    """Off the request: make the rest of an emergency and send it as its second part."""
    try:
        pieces = _pieces(rt, alert, blocks, skip_first_lead=True)
        if not pieces:  # its recording could not be had, and it has no text to read
            rt.dispatcher.drop_part(occurrence_id, "nothing more to say: its recording "
                                    "could not be had and it has no text")
            return
        settings = dataclasses.replace(rt.audio_settings(True), chime_before=False)
        prepared = _render(rt, pieces, settings)
        with rt.sessions() as db:
            bc = db.get(Broadcast, broadcast_id)
            if bc is None or bc.status in BROADCAST_FINAL:
                return  # cancelled (or replaced) while it was being made
            content = store_content(db, prepared, kind="cap", user=username,
                                    source_name=("CAP " + alert.identifier + ": "
                                                 + "; ".join(p.said for p in pieces))[:255],
                                    text=" ".join(p.text or "" for p in pieces)[:10_000])
            content_id = content.id
        if rt.dispatcher.send_part(occurrence_id, content_id):
            log.info("CAP %s: the rest of broadcast %s is on its way", alert.identifier,
                     broadcast_id)
    except Exception as exc:  # recorded missed, with the reason; never silent
        log.exception("CAP %s: the rest of broadcast %s could not be made", alert.identifier,
                      broadcast_id)
        try:
            rt.dispatcher.drop_part(occurrence_id, f"its audio could not be made ({exc})")
        except Exception:  # the database too: the sweep records it once overdue
            log.exception("CAP %s: part %s not recorded missed yet", alert.identifier,
                          occurrence_id)


# --- Cancel and Update ----------------------------------------------------------------------

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
    """The alerts a Cancel or Update names (``sender,identifier,sent``), matched exactly
    on sender and identifier, and only the referencing alert's own sender's: nobody
    cancels or replaces another issuer's alert."""
    refs: list[Broadcast] = []
    for ref in alert.references:
        parts = ref.split(",")
        if len(parts) < 2 or not parts[0] or not parts[1] or parts[0] != alert.sender:
            continue
        refs.extend(b for b in _holding(db, parts[0], parts[1]) if b not in refs)
    return refs


def _holding(db: Session, sender: str, identifier: str) -> list[Broadcast]:
    """The broadcasts an alert (``sender``, ``identifier``) became, matched exactly."""
    prefix = f"{sender},{identifier},"
    q = select(Broadcast).where(Broadcast.cap_ref.startswith(prefix, autoescape=True))
    return [b for b in db.scalars(q) if b.cap_ref and b.cap_ref.startswith(prefix)]

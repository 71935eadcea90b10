"""CAP 1.2 alerts in (:mod:`controller.cap.service`), and the report upward of what a
broadcast did (:mod:`controller.broadcasting.proof`)."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from controller.access.jurisdiction import can_see, scope
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.broadcasting.proof import rollup
from controller.cap import service
from controller.cap.alert import MAX_CAP_BYTES, error_xml, heading
from controller.db.models import Broadcast, CapMessage, User, utcnow
from controller.errors import LoaError, NotFound, TooLarge
from controller.runtime import Runtime

router = APIRouter(tags=["cap", "reports"])
log = logging.getLogger(__name__)


@router.post("/cap", status_code=201, responses={
    201: {"description": "aired: broadcast, roll-up and a CAP Ack"},
    202: {"description": "valid but not aired (status Test/Exercise/System/Draft)"}})
async def cap_ingest(request: Request, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> Response:
    """POST an OASIS CAP 1.2 alert (``application/xml``). Alert airs it, Update replaces
    the referenced alert where it has not played yet, Cancel stops it everywhere. Every
    document and the reply sent back are kept (``GET /cap``)."""
    body = await request.body()
    try:
        if len(body) > MAX_CAP_BYTES:
            raise TooLarge("cap_too_large", f"CAP documents are limited to {MAX_CAP_BYTES} "
                           "bytes", limit_bytes=MAX_CAP_BYTES)
        status, payload = await run_in_threadpool(service.ingest, body, db, rt, user)
    except LoaError as exc:
        # nothing of a refused alert stays (its audio was only flushed); the issuer's
        # system gets a CAP Error it can read, beside the coded refusal
        await run_in_threadpool(db.rollback)
        xml = error_xml(body, service.sender_of(rt), utcnow(), f"{exc.code}: {exc.message}")
        await run_in_threadpool(_keep, rt, user, body, exc.status, exc.code,
                                {"message": exc.message, "params": exc.params}, xml)
        if _wants_xml(request):
            return Response(xml, status_code=exc.status, media_type="application/cap+xml")
        return Response(json.dumps({**exc.body(), "cap_error": xml}, ensure_ascii=False,
                                   default=str), status_code=exc.status,
                        media_type="application/json")
    outcome = {k: payload[k] for k in _OUTCOME if k in payload}
    await run_in_threadpool(_keep, rt, user, body, status, None, outcome, payload.get("ack"))
    return Response(json.dumps(payload, ensure_ascii=False, default=str), status_code=status,
                    media_type="application/json")


#: what the log keeps of an accepted alert's answer (the roll-up is live: GET the broadcast)
_OUTCOME = ("broadcast_id", "broadcasts", "cancelled", "replaced", "duplicate",
            "broadcast_ids", "aired", "reason", "notes", "read_as", "priority")


def _keep(rt: Runtime, user: User, body: bytes, status: int, code: str | None,
          outcome: dict[str, Any], reply: str | None) -> None:
    """Log what was received and answered, in its own transaction: a refused alert's
    rollback must not take its record with it."""
    head = heading(body)
    try:
        with rt.sessions() as db:
            db.add(CapMessage(
                received_at=utcnow(), username=user.username, area_id=user.area_id,
                identifier=head.get("identifier"), sender=head.get("sender"),
                sent=head.get("sent"), msg_type=head.get("msgType"), status=head.get("status"),
                event=head.get("event"), http_status=status, code=code,
                outcome=json.loads(json.dumps(outcome, default=str)), reply=reply))
            db.commit()
    except Exception:  # the alert's own outcome stands; the gap is in the log
        log.exception("CAP log entry not written: %s", head.get("identifier"))


@router.get("/cap")
def cap_messages(db: SessionDep, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """CAP documents received from accounts in one's own area (a national account: all),
    newest first, each with its outcome; ``GET /cap/{id}`` adds the reply's XML."""
    q = select(CapMessage)
    allowed = scope(db, user)
    if allowed is not None:
        q = q.where(CapMessage.area_id.in_(allowed))
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = db.scalars(q.order_by(CapMessage.id.desc()).limit(limit).offset(offset))
    return {"total": total, "items": [_cap_out(m) for m in rows]}


@router.get("/cap/{message_id}")
def cap_message(message_id: int, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    m = db.get(CapMessage, message_id)
    allowed = scope(db, user)
    if m is None or (allowed is not None and m.area_id not in allowed):
        raise NotFound("cap_message_not_found", f"no CAP message {message_id}",
                       id=message_id)
    return {**_cap_out(m), "reply": m.reply}


def _cap_out(m: CapMessage) -> dict[str, Any]:
    return {"id": m.id, "received_at": m.received_at.isoformat(), "username": m.username,
            "area_id": m.area_id, "identifier": m.identifier, "sender": m.sender,
            "sent": m.sent, "msg_type": m.msg_type, "status": m.status, "event": m.event,
            "http_status": m.http_status, "code": m.code, "outcome": m.outcome or {}}


def _wants_xml(request: Request) -> bool:
    """An issuer that asks for XML (``Accept: application/cap+xml`` or ``application/xml``
    ahead of JSON) gets the CAP Error as the body of a refusal."""
    accept = request.headers.get("accept", "").lower()
    xml = min((accept.find(t) for t in ("application/cap+xml", "application/xml")
               if t in accept), default=-1)
    js = accept.find("application/json")
    return xml >= 0 and (js < 0 or xml < js)


#: the report's columns as a Vietnamese officer files them (in the order of ``fields``)
CSV_HEADERS_VI = ("Mã địa bàn", "Tên", "Số cụm nhận", "Cụm trực tuyến", "Lượt gửi", "Đã phát",
                  "Đang phát", "Lỗi", "Không liên lạc được", "Thời lượng đã phát (giây)",
                  "Thời lượng bản tin (giây)", "Tỉ lệ", "Bắt đầu sớm nhất",
                  "Kết thúc muộn nhất", "Quyết định của xã", "Người quyết định", "Ghi chú")
DECISIONS_VI = {"inbox": "chờ xã quyết định", "declined": "xã từ chối", "expired": "hết hạn",
                "scheduled": "đã lên lịch", "active": "đang phát", "completed": "hoàn tất",
                "cancelled": "đã hủy", "pending_approval": "chờ duyệt", "rejected": "bị trả lại",
                "preempted": "bị ngắt"}


@router.get("/broadcasts/{broadcast_id}/report")
def broadcast_report(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                     format: Literal["json", "csv"] = "json",
                     by: Literal["commune", "village"] = "commune",
                     lang: Literal["en", "vi"] = "en") -> Response:
    """Report upward per commune (``?by=village``: per village, the proof that it played
    in each): targeted, played, playing now, failed, unreachable, play time vs requested
    duration, ratio, first start and last end heard. ``?format=csv`` for a spreadsheet, its times in
    the controller's time zone; ``&lang=vi`` gives it Vietnamese column names and
    decisions, and a byte-order mark so spreadsheet programs read it as UTF-8. An account
    with an area sees the rows of its own area only."""
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise NotFound("broadcast_not_found", f"no broadcast {broadcast_id!r} in your area",
                       broadcast=broadcast_id)
    rows = rollup(db, bc, by, scope(db, user))
    if format == "csv":
        buf = io.StringIO()
        fields = ["area_id", "name", "targeted", "online", "deliveries", "played", "playing",
                  "failed",
                  "unreachable", "play_time_s", "requested_s", "ratio", "first_started_at",
                  "last_finished_at", "decision", "decided_by", "note"]
        w = csv.DictWriter(buf, fieldnames=fields, restval="")
        if lang == "vi":
            buf.write("\ufeff")
            w.writerow(dict(zip(fields, CSV_HEADERS_VI, strict=True)))
        else:
            w.writeheader()
        zone = ZoneInfo(rt.settings.timezone)
        for r in rows:
            for f in ("first_started_at", "last_finished_at"):
                if r[f]:  # local wall time, to the second, as an officer files it
                    r[f] = datetime.fromisoformat(r[f]).astimezone(zone).isoformat(
                        sep=" ", timespec="seconds")
            if lang == "vi" and r.get("decision"):
                r["decision"] = DECISIONS_VI.get(r["decision"], r["decision"])
            w.writerow(r)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="broadcast-{bc.id}-{by}.csv"'})
    return Response(json.dumps({"broadcast_id": bc.id, "title": bc.title, "priority": bc.priority,
                                "by": by, f"{by}s": rows}, ensure_ascii=False),
                    media_type="application/json")

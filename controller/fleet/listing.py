"""The fleet as a technician pages through it: filtered (state, area and everything beneath it,
a cause, a search that ignores accents), the broken first, one page at a time, and a summary
of the whole area a person can trust (an offline cluster's speakers are not working).

A page is counted, ordered and cut in SQL and only its own rows are loaded in full; the
summary is a few grouped counts. A search (accents ignored) or a cause filter reads one light
row per cluster of the area (id, name, state, causes) and filters those in Python.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from controller.access.jurisdiction import scope
from controller.broadcasting.programme import commune_map
from controller.broadcasting.targeting import descendant_area_ids
from controller.db.models import Cluster, Speaker, User

__all__ = ["STATE_ORDER", "ClusterFilter", "fold", "page", "summary"]

#: the broken first: what a technician fixes before the morning slot
STATE_ORDER = {"offline": 0, "degraded": 1, "unprovisioned": 2, "online": 3}


def fold(s: str) -> str:
    """Lower case without accents (đ as d): "dong bong" finds "Đồng Bông"."""
    s = unicodedata.normalize("NFD", s.lower().replace("đ", "d"))
    return "".join(ch for ch in s if unicodedata.category(ch) != "Mn")


@dataclass(frozen=True, slots=True)
class ClusterFilter:
    state: str | None = None
    area_id: str | None = None  # the area and everything beneath it
    q: str | None = None        # in the id or the name
    problem: str | None = None  # a cause code (docs/errors.md, causes)
    provisioned: bool | None = None


def _where(db: Session, user: User, f: ClusterFilter) -> list[Any]:
    """The filters SQL applies: the account's area, the state, the area and beneath it."""
    conds: list[Any] = []
    allowed = scope(db, user)
    if allowed is not None:
        conds.append(Cluster.area_id.in_(allowed))
    if f.state:
        conds.append(Cluster.state == f.state)
    if f.area_id:
        conds.append(Cluster.area_id.in_(descendant_area_ids(db, [f.area_id])))
    if f.provisioned is not None:
        conds.append(Cluster.provisioned.is_(f.provisioned))
    return conds


def _light(db: Session, user: User, f: ClusterFilter) -> list[Any]:
    rows = list(db.execute(select(Cluster.id, Cluster.name, Cluster.state, Cluster.causes,
                                  Cluster.area_id, Cluster.provisioned)
                           .where(*_where(db, user, f))))
    if f.problem:
        rows = [r for r in rows if any(c.get("code") == f.problem for c in r.causes or [])]
    if f.q:
        needle = fold(f.q.strip())
        rows = [r for r in rows if needle in fold(f"{r.id} {r.name}")]
    return rows


def page(db: Session, user: User, f: ClusterFilter, *, order: Literal["id", "state"] = "id",
         limit: int | None = None, offset: int = 0) -> tuple[int, list[Cluster]]:
    """(how many match, the clusters of this page, in order). Counted, ordered and cut in
    SQL; a search (``q``, accents ignored) or a cause filter reads the light rows and does
    the same in Python."""
    if f.q or f.problem:
        rows = _light(db, user, f)
        if order == "state":
            rows.sort(key=lambda r: (STATE_ORDER.get(r.state, 9), r.id))
        else:
            rows.sort(key=lambda r: r.id)
        end = offset + limit if limit is not None else None
        total, chosen = len(rows), [r.id for r in rows[offset:end]]
    else:
        conds = _where(db, user, f)
        total = db.scalar(select(func.count()).select_from(Cluster).where(*conds)) or 0
        keys = ((case(STATE_ORDER, value=Cluster.state, else_=9), Cluster.id)
                if order == "state" else (Cluster.id,))
        chosen = list(db.scalars(select(Cluster.id).where(*conds).order_by(*keys)
                                 .offset(offset).limit(limit)))
    full = {c.id: c for c in db.scalars(select(Cluster).options(selectinload(Cluster.speakers))
                                         .where(Cluster.id.in_(chosen)))} if chosen else {}
    return total, [full[i] for i in chosen if i in full]


#: beyond this many areas with clusters, the summary counts per commune instead
AREAS_SHOWN = 200


def summary(db: Session, user: User, area_id: str | None = None) -> dict[str, Any]:
    """Counts over the whole area (every filter but the area left out): clusters by state,
    speakers working (on a cluster that is not offline), the areas that have clusters (per
    commune beyond ``AREAS_SHOWN``: a province's 9,000 villages were 480 KB on every
    refresh) and the causes present, each with how many clusters, for the filters'
    choices."""
    f = ClusterFilter(area_id=area_id)
    conds = _where(db, user, f)
    registered = Cluster.provisioned.is_(True)
    states = Counter({st: n for st, n in db.execute(
        select(Cluster.state, func.count()).where(*conds).group_by(Cluster.state))})
    total = db.scalar(select(func.count()).select_from(Cluster).where(registered, *conds)) or 0
    online = db.scalar(select(func.count()).select_from(Cluster).where(
        registered, Cluster.state == "online", *conds)) or 0
    speakers = ok = 0
    for cstate, sstate, n in db.execute(
            select(Cluster.state, Speaker.state, func.count()).join(Speaker.cluster)
            .where(registered, *conds)
            .group_by(Cluster.state, Speaker.state)):
        speakers += n
        ok += n if cstate != "offline" and sstate == "ok" else 0
    problems = Counter(code for causes in db.scalars(
        select(Cluster.causes).where(registered, Cluster.causes.is_not(None), *conds))
        for code in {c.get("code") for c in causes or []})
    places: Counter[str] = Counter({a: n for a, n in db.execute(
        select(Cluster.area_id, func.count()).where(Cluster.area_id.is_not(None), *conds)
        .group_by(Cluster.area_id)) if a is not None})
    if len(places) > AREAS_SHOWN:  # a province: its communes, not its thousands of villages
        commune = commune_map(db, places)
        rolled: Counter[str] = Counter()
        for a, n in places.items():
            rolled[commune.get(a) or a] += n
        places = rolled
    return {"total": total, "online": online,
            "states": dict(states), "speakers": speakers, "speakers_ok": ok,
            "areas": [{"area_id": a, "clusters": n} for a, n in sorted(places.items())],
            "problems": [{"code": c, "clusters": n} for c, n in sorted(problems.items()) if c]}

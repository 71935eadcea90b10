"""Where a CAP ``<info>`` applies: its ``<area>`` elements mapped onto our areas and clusters.

One ``<area>`` covers, together (CAP 1.2 §3.2.4: the area is the union of its parts):

* each ``<geocode>`` that names one of our areas: ``valueName`` ``LOA`` with our area id, a
  value equal to one of our area ids, or a ``(valueName, value)`` pair the operator maps in
  ``LOA_CAP_GEOCODES`` (e.g. Vietnam's administrative-unit codes);
* each ``<polygon>`` and ``<circle>``: the clusters whose registered coordinates lie inside;
* when neither of those matched anything, the ``<areaDesc>`` compared with our areas'
  names (accents, case and the kind word ignored: "Xã Hướng Đạo" = "huong dao").

Several ``<area>`` elements are unioned. Only clusters inside the issuer's own area count;
the rest are reported, never warned.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.cap.alert import CapArea
from controller.db.models import Area, Cluster

__all__ = ["AreaIndex", "InfoTargets", "fold_name", "in_circle", "in_polygon"]

EARTH_RADIUS_KM = 6371.0088


def fold_name(s: str) -> str:
    s = unicodedata.normalize("NFD", s.lower().replace("đ", "d"))
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Mn")
    for prefix in ("tinh ", "huyen ", "xa ", "thon ", "phuong ", "thi tran "):
        s = s.removeprefix(prefix)
    return " ".join(s.split())


def in_polygon(lat: float, lon: float, ring: list[tuple[float, float]]) -> bool:
    """Even-odd rule on (lon, lat) as plane coordinates: exact enough for a commune-sized
    shape (a few km) and for anything that does not cross the antimeridian."""
    inside = False
    for (lat1, lon1), (lat2, lon2) in itertools.pairwise(ring):
        if (lat1 > lat) != (lat2 > lat):
            cross = lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1)
            if lon < cross:
                inside = not inside
    return inside


def in_circle(lat: float, lon: float, circle: tuple[float, float, float]) -> bool:
    """Great-circle (haversine) distance from the centre at most the radius."""
    clat, clon, radius_km = circle
    p1, p2 = math.radians(lat), math.radians(clat)
    dp, dl = p2 - p1, math.radians(clon - lon)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a))) <= radius_km


@dataclass
class InfoTargets:
    """What one ``<info>``'s areas became."""

    #: our areas named by a geocode or a name (every cluster beneath them is covered)
    areas: set[str] = field(default_factory=set)
    #: every covered cluster inside the issuer's area
    clusters: set[str] = field(default_factory=set)
    #: ``<areaDesc>`` of CAP areas that matched nothing of ours
    unmatched: list[str] = field(default_factory=list)
    #: covered clusters outside the issuer's area (not warned)
    outside: set[str] = field(default_factory=set)


class AreaIndex:
    """Our areas and provisioned clusters, loaded once per alert."""

    def __init__(self, db: Session, geocodes: dict[str, dict[str, str]] | None = None,
                 allowed: set[str] | None = None):
        areas = db.execute(select(Area.id, Area.name, Area.parent_id)).all()
        self.names = {a.id: a.name for a in areas}
        self.children: dict[str, list[str]] = {}
        for a in areas:
            if a.parent_id is not None:
                self.children.setdefault(a.parent_id, []).append(a.id)
        self.clusters = db.execute(select(Cluster.id, Cluster.area_id, Cluster.lat, Cluster.lon)
                                   .where(Cluster.provisioned.is_(True))).all()
        self.by_area: dict[str, list[str]] = {}
        for c in self.clusters:
            self.by_area.setdefault(c.area_id, []).append(c.id)
        self.geocodes = {k.upper(): v for k, v in (geocodes or {}).items()}
        #: area ids the issuer may act on (None: everywhere)
        self.allowed = allowed
        self.area_of = {c.id: c.area_id for c in self.clusters}
        self._folded: dict[str, list[str]] = {}
        for aid, name in self.names.items():
            self._folded.setdefault(fold_name(name), []).append(aid)

    def clusters_under(self, area_id: str) -> set[str]:
        out: set[str] = set()
        stack = [area_id]
        while stack:
            a = stack.pop()
            out.update(self.by_area.get(a, ()))
            stack.extend(self.children.get(a, ()))
        return out

    def _geocode(self, name: str, value: str) -> str | None:
        mapped = self.geocodes.get(name.upper(), {}).get(value)
        if mapped in self.names:
            return mapped
        if value in self.names:  # our own id, whatever the valueName says
            return value
        return None

    def without_coordinates(self) -> int:
        """Clusters inside the issuer's area that a polygon or circle cannot place."""
        return sum(1 for c in self.clusters if (c.lat is None or c.lon is None)
                   and (self.allowed is None or c.area_id in self.allowed))

    def match(self, areas: list[CapArea]) -> InfoTargets:
        out = InfoTargets()
        covered: set[str] = set()
        for area in areas:
            found_areas = {a for n, v in area.geocodes if (a := self._geocode(n, v))}
            found = set().union(*(self.clusters_under(a) for a in found_areas))
            if area.has_shape:
                for c in self.clusters:
                    if c.lat is None or c.lon is None:
                        continue
                    if any(in_polygon(c.lat, c.lon, p) for p in area.polygons) or \
                            any(in_circle(c.lat, c.lon, k) for k in area.circles):
                        found.add(c.id)
            if not found_areas and not found:
                hits = self._folded.get(fold_name(area.desc), [])
                if len(hits) == 1:
                    found_areas = {hits[0]}
                    found = self.clusters_under(hits[0])
            if not found_areas and not found:
                out.unmatched.append(area.desc)
                continue
            out.areas |= found_areas
            covered |= found
        for cid in covered:
            if self.allowed is None or self.area_of[cid] in self.allowed:
                out.clusters.add(cid)
            else:
                out.outside.add(cid)
        if self.allowed is not None:
            out.areas = {a for a in out.areas if a in self.allowed}
        return out

    def targets(self, clusters: set[str], named: set[str]) -> tuple[list[str], list[str]]:
        """``clusters`` as broadcast targets: the named areas whose clusters all lie in it
        (one publish each), plus the clusters no such area covers."""
        areas: list[str] = []
        rest = set(clusters)
        for a in sorted(named):
            under = self.clusters_under(a)
            if under and under <= clusters:
                areas.append(a)
                rest -= under
        return areas, sorted(rest)

"""The area tree (province → [district →] commune → village), clusters and speakers.

An area tree may have any depth; clusters hang under villages (or any leaf area) and carry
their speakers. ``Network`` is the plain, validated description both the controller (to
register areas) and the simulator (to know each cluster's ancestors) load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from devices.topics import check_id

__all__ = ["Area", "AreaKind", "Cluster", "Network", "Speaker", "generate", "load_fixture"]

AreaKind = Literal["province", "district", "commune", "village"]
KINDS: tuple[str, ...] = ("province", "district", "commune", "village")


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    name: str
    kind: AreaKind
    parent_id: str | None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class Speaker:
    index: int
    name: str = ""
    watts: int = 30


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    area_id: str
    name: str
    lat: float | None = None
    lon: float | None = None
    speakers: tuple[Speaker, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class Network:
    name: str
    areas: dict[str, Area]
    clusters: dict[str, Cluster]

    def __post_init__(self) -> None:
        for a in self.areas.values():
            check_id(a.id)
            if a.kind not in KINDS:
                raise ValueError(f"area {a.id}: unknown kind {a.kind!r}")
            if a.parent_id is not None and a.parent_id not in self.areas:
                raise ValueError(f"area {a.id}: unknown parent {a.parent_id}")
        for c in self.clusters.values():
            check_id(c.id)
            if c.area_id not in self.areas:
                raise ValueError(f"cluster {c.id}: unknown area {c.area_id}")
        for a in self.areas.values():  # no cycles
            list(self.ancestors(a.id))

    def ancestors(self, area_id: str) -> Iterator[Area]:
        """The area itself, then its parent, up to the root."""
        seen: set[str] = set()
        cur: str | None = area_id
        while cur is not None:
            if cur in seen:
                raise ValueError(f"cycle in area tree at {cur}")
            seen.add(cur)
            area = self.areas[cur]
            yield area
            cur = area.parent_id

    def cluster_area_path(self, cluster_id: str) -> list[str]:
        return [a.id for a in self.ancestors(self.clusters[cluster_id].area_id)]

    @property
    def speaker_count(self) -> int:
        return sum(len(c.speakers) for c in self.clusters.values())

    @classmethod
    def from_dict(cls, data: dict) -> Network:  # type: ignore[type-arg]
        areas = {a["id"]: Area(**a) for a in data["areas"]}
        clusters = {}
        for c in data["clusters"]:
            spk = tuple(Speaker(**s) for s in c.get("speakers", []))
            clusters[c["id"]] = Cluster(**{**c, "speakers": spk})
        return cls(data.get("name", "network"), areas, clusters)

    def to_dict(self) -> dict:  # type: ignore[type-arg]
        return {
            "name": self.name,
            "areas": [
                {"id": a.id, "name": a.name, "kind": a.kind, "parent_id": a.parent_id,
                 "lat": a.lat, "lon": a.lon}
                for a in self.areas.values()
            ],
            "clusters": [
                {"id": c.id, "area_id": c.area_id, "name": c.name, "lat": c.lat, "lon": c.lon,
                 "speakers": [{"index": s.index, "name": s.name, "watts": s.watts}
                              for s in c.speakers]}
                for c in self.clusters.values()
            ],
        }


def load_fixture(name: str) -> Network:
    """Load a packaged fixture, e.g. ``huong-dao`` (xã Hướng Đạo, 14 villages, 15 clusters)."""
    fname = name.replace("-", "_") + ".json"
    try:
        text = resources.files("devices.fixtures").joinpath(fname).read_text("utf-8")
    except FileNotFoundError:
        raise ValueError(f"unknown fixture {name!r}") from None
    return Network.from_dict(json.loads(text))


def generate(communes: int = 1, clusters_per_commune: int = 15, speakers: int = 2,
             prefix: str = "gen") -> Network:
    """A synthetic province: one province, ``communes`` communes, one village per cluster."""
    areas: dict[str, Area] = {}
    clusters: dict[str, Cluster] = {}
    root = f"{prefix}-p"
    areas[root] = Area(root, "Tỉnh mô phỏng", "province", None, 21.0, 105.8)
    for ci in range(communes):
        commune = f"{prefix}-p-c{ci:04d}"
        areas[commune] = Area(commune, f"Xã mô phỏng {ci + 1}", "commune", root)
        for k in range(clusters_per_commune):
            village = f"{commune}-v{k:03d}"
            areas[village] = Area(village, f"Thôn {k + 1}", "village", commune)
            cid = f"{prefix}-{ci:04d}-{k:03d}"
            clusters[cid] = Cluster(
                cid, village, f"Cụm {ci + 1}.{k + 1}",
                speakers=tuple(Speaker(i + 1, f"Loa {i + 1}") for i in range(speakers)),
            )
    return Network(f"{prefix}-{communes}x{clusters_per_commune}", areas, clusters)

"""Register a network (areas, clusters, speakers) in the controller's database."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller.db.models import Area, Cluster, Speaker
from devices.areas import Network

__all__ = ["register_network"]


def register_network(db: Session, network: Network) -> tuple[int, int]:
    """Insert or update every area and cluster; returns (areas, clusters). Idempotent."""
    # parents before children
    ordered = sorted(network.areas.values(),
                     key=lambda a: len(list(network.ancestors(a.id))))
    for a in ordered:
        db.merge(Area(id=a.id, name=a.name, kind=a.kind, parent_id=a.parent_id, lat=a.lat,
                      lon=a.lon))
    db.flush()
    for c in network.clusters.values():
        row = db.get(Cluster, c.id)
        if row is None:
            row = Cluster(id=c.id, state="offline")
            db.add(row)
        row.area_id, row.name, row.lat, row.lon = c.area_id, c.name, c.lat, c.lon
        row.provisioned = True
        if row.state == "unprovisioned":
            row.state = "offline"
        have = {s.index: s for s in row.speakers}
        for s in c.speakers:
            spk = have.get(s.index)
            if spk is None:
                row.speakers.append(Speaker(index=s.index, name=s.name, watts=s.watts))
            else:
                spk.name, spk.watts = s.name, s.watts
    db.commit()
    return len(network.areas), len(network.clusters)

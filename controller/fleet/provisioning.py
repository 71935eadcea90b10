"""Boards' identities: a provisioning bundle per board, its broker credential revoked on
retire or replace, and the broker's password and ACL files kept in step with the registry
(:mod:`controller.access.broker_auth`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from sqlalchemy.orm import Session

from controller.access.broker_auth import (
    CONTROLLER_USER,
    issue_credential,
    mosquitto_hash,
    reload_broker,
    render,
    revoke_credential,
    write_files,
)
from controller.access.jurisdiction import require_role, visible_cluster
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Cluster, User, utcnow
from controller.errors import Conflict
from controller.settings import Settings
from devices.provisioning import ProvisioningBundle
from devices.signing import key_id

if TYPE_CHECKING:
    from nacl.signing import VerifyKey
    from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)

__all__ = ["PROVISIONERS", "BrokerSync", "bundle_for", "provision", "revoke"]

PROVISIONERS = ("admin", "technician")


def _public_url(settings: Settings) -> str:
    """Where boards reach the broker: every node of a broker cluster, ``host:port``
    comma-separated after one scheme (protocol §1.1), without the controller's credentials."""
    if settings.broker_public_url:
        return settings.broker_public_url
    scheme = urlparse(settings.mqtt_url or "mqtt://").scheme or "mqtt"
    return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in settings.mqtt_nodes)


def bundle_for(db: Session, settings: Settings, verify_key: VerifyKey, cluster: Cluster,
               secret: str) -> ProvisioningBundle:
    ca = settings.mqtt_ca_file.read_text() if settings.mqtt_ca_file else None
    return ProvisioningBundle(
        cluster_id=cluster.id, username=cluster.id, password=secret, ca_pem=ca,
        broker_url=_public_url(settings), controller_public_key=bytes(verify_key).hex(),
        key_id=key_id(verify_key), area_path=ancestor_ids(db, cluster.area_id),
        issued_at=cluster.credential_issued_at or utcnow())


class BrokerSync:
    """Writes the broker's files from the registry and has the broker re-read them."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings, self.sessions = settings, sessions

    @property
    def enabled(self) -> bool:
        return self.settings.broker_files_dir is not None

    def controller_hash(self) -> str | None:
        user, password = self.settings.mqtt[2], self.settings.mqtt[3]
        if user != CONTROLLER_USER or not password:
            if self.enabled:
                log.error("LOA_MQTT_URL must carry the controller's broker credentials "
                          "(mqtt://%s:<password>@host:port) for the broker files to let it in",
                          CONTROLLER_USER)
            return None
        return mosquitto_hash(password)

    def sync(self, db: Session | None = None) -> Path | None:
        out = self.settings.broker_files_dir
        if out is None:
            return None
        watcher = self.settings.broker_observer_password
        observer = mosquitto_hash(watcher) if watcher else None
        if db is None:
            with self.sessions() as own:
                files = render(own, self.controller_hash(), observer)
        else:
            files = render(db, self.controller_hash(), observer)
        write_files(files, out)
        reload_broker(self.settings.broker_pid_file)
        log.info("broker credentials written for %d board(s) in %s", files.clusters, out)
        return out


def provision(db: Session, settings: Settings, verify_key: VerifyKey, sync: BrokerSync,
              user: User, cluster_id: str) -> ProvisioningBundle:
    """A new credential for the board and its bundle; the old credential stops working."""
    require_role(user, PROVISIONERS, "provision boards")
    cluster = visible_cluster(db, user, cluster_id)
    if not cluster.provisioned:
        raise Conflict("cluster_unregistered", f"{cluster_id} is not registered in a "
                       "village yet: adopt it first", cluster=cluster_id)
    secret = issue_credential(cluster)
    db.commit()
    sync.sync(db)
    return bundle_for(db, settings, verify_key, cluster, secret)


def revoke(db: Session, sync: BrokerSync, user: User, cluster_id: str) -> None:
    """The board's credential no longer lets it connect (once the broker re-read it)."""
    require_role(user, PROVISIONERS, "revoke boards' credentials")
    cluster = visible_cluster(db, user, cluster_id)
    revoke_credential(cluster)
    db.commit()
    sync.sync(db)

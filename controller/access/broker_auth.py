"""Who may connect to the broker, and what each may publish and read, from the registry.

Each board has its own broker password, issued when it is provisioned
(:func:`issue_credential`, returned once in its bundle) and kept here only as the hash
Mosquitto's ``password_file`` holds (PBKDF2-SHA512, ``$7$``). From the registry the
controller writes Mosquitto's ``password_file`` and ``acl_file`` (:func:`render`), in
``LOA_BROKER_FILES_DIR``, after every change, and signals the broker to re-read them
(``LOA_BROKER_PID_FILE``: SIGHUP). A board may then:

* publish only on its own status, telemetry, event and time-request topics (never on its
  own command topic, nor on any other board's);
* read its own command and time-reply topics, its areas' command and pushed-content
  topics, content chunks and the controller's status.

The controller (``loa-controller``) reads and writes ``loa/#``. Nothing else connects:
``allow_anonymous false``, and ``use_username_as_clientid`` so that no board can take over
another client's session by its client id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import Area, Cluster, utcnow
from devices import topics

log = logging.getLogger(__name__)

__all__ = ["CONTROLLER_USER", "OBSERVER_USER", "BrokerFiles", "issue_credential", "mosquitto_hash",
           "reload_broker", "render", "render_controller_only", "revoke_credential",
           "write_files"]

CONTROLLER_USER = "loa-controller"
#: reads everything, publishes nothing
OBSERVER_USER = "loa-observer"
#: Mosquitto 2's own iteration count for ``$7$`` hashes (mosquitto_passwd)
PBKDF2_ITERATIONS = 101


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    """``password`` as a Mosquitto 2 ``password_file`` entry's hash: ``$7$`` PBKDF2-SHA512."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def issue_credential(cluster: Cluster) -> str:
    """A new broker secret for the board (any earlier one stops working at the next
    reload); returns it: it is shown once, in the board's bundle, and never stored."""
    secret = secrets.token_urlsafe(24)
    cluster.credential_hash = mosquitto_hash(secret)
    cluster.credential_issued_at = utcnow()
    return secret


def revoke_credential(cluster: Cluster) -> None:
    cluster.credential_hash = None
    cluster.credential_issued_at = None


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    password_file: str
    acl_file: str
    clusters: int


def render(db: Session, controller_hash: str | None,
           observer_hash: str | None = None) -> BrokerFiles:
    """The password and ACL files for every board holding a credential, the controller
    and, if configured, the read-only observer (``loa-observer``: a technician's
    ``mosquitto_sub``, a monitoring system)."""
    parent = {a: p for a, p in db.execute(select(Area.id, Area.parent_id))}

    def path(area: str | None) -> list[str]:
        out: list[str] = []
        while area is not None and area not in out:
            out.append(area)
            area = parent.get(area)
        return out

    rows = db.execute(select(Cluster.id, Cluster.area_id, Cluster.credential_hash).where(
        Cluster.credential_hash.is_not(None), Cluster.provisioned.is_(True))
        .order_by(Cluster.id)).all()
    passwd = [f"{CONTROLLER_USER}:{controller_hash}"] if controller_hash else []
    acl = [f"user {CONTROLLER_USER}", f"topic readwrite {topics.ROOT}/#", ""]
    if observer_hash:
        passwd.append(f"{OBSERVER_USER}:{observer_hash}")
        acl += [f"user {OBSERVER_USER}", f"topic read {topics.ROOT}/#", ""]
    for cid, area, hashed in rows:
        passwd.append(f"{cid}:{hashed}")
        acl.append(f"user {cid}")
        acl += [f"topic write {t}" for t in (topics.cluster_status(cid),
                                             topics.cluster_telemetry(cid),
                                             topics.cluster_event(cid),
                                             topics.cluster_time(cid))]
        acl.append(f"topic read {topics.cluster_cmd(cid)}")
        acl.append(f"topic read {topics.cluster_time_reply(cid)}")
        acl.append(f"topic read {topics.ROOT}/cluster/{cid}/stream/#")
        for a in path(area):
            acl.append(f"topic read {topics.area_cmd(a)}")
            acl.append(f"topic read {topics.ROOT}/area/{a}/stream/#")
            acl.append(f"topic read {topics.area_content_filter(a).removesuffix('/+/+')}/#")
        acl += [f"topic read {topics.ROOT}/content/#", f"topic read {topics.CONTROLLER_STATUS}",
                ""]
    return BrokerFiles("\n".join(passwd) + "\n", "\n".join(acl) + "\n", len(rows))


def render_controller_only(controller_hash: str) -> BrokerFiles:
    """The files before any registry exists: the controller alone may connect."""
    return BrokerFiles(f"{CONTROLLER_USER}:{controller_hash}\n",
                       f"user {CONTROLLER_USER}\ntopic readwrite {topics.ROOT}/#\n", 0)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_files(files: BrokerFiles, out: Path) -> tuple[Path, Path]:
    """``passwd`` and ``acl`` in ``out`` (0600, replaced atomically), and, the first time,
    ``mosquitto.conf`` naming them for an operator to include in the broker's config."""
    out.mkdir(parents=True, exist_ok=True)
    passwd, acl = out / "passwd", out / "acl"
    _write(passwd, files.password_file)
    _write(acl, files.acl_file)
    conf = out / "mosquitto.conf"
    if not conf.exists():
        conf.write_text("# written by the Loa controller: include it in the broker's config\n"
                        "allow_anonymous false\nuse_username_as_clientid true\n"
                        f"password_file {passwd.resolve()}\nacl_file {acl.resolve()}\n")
    return passwd, acl


def reload_broker(pid_file: Path | None) -> bool:
    """Ask the broker to re-read its password and ACL files (Mosquitto: SIGHUP)."""
    if pid_file is None:
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
        return True
    except (OSError, ValueError) as exc:
        log.error("cannot signal the broker to reload its credentials (%s): %s", pid_file, exc)
        return False

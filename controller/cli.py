"""``loa``: the Loa command line.

    loa demo [--port P]     broker (embedded when LOA_MQTT_URL is unset), controller and the
                            simulated xã Hướng Đạo, all on this machine
    loa serve [--port P] [--standby]
                            the controller alone; --standby waits while another holds the
                            database and takes over when it stops
    loa sim ...             the firmware simulator alone (see ``loa sim --help``)
    loa db upgrade          apply database migrations
    loa seed --fixture huong-dao | --communes N [--clusters-per-commune M]
                            register a network's areas and clusters in the database
    loa provision (CLUSTER ... | --all) --out DIR
                            issue boards' broker credentials: one bundle per board in DIR
    loa broker files [--out DIR]
                            write the broker's password and ACL files from the registry
    loa broker tls --out DIR --host NAME [--host NAME ...] [--port 8883]
                            a CA and the broker's TLS certificate signed by it
    loa network export FILE | import FILE
                            the whole network (areas, boards, speakers) as a JSON file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from controller.access.broker_auth import (
    CONTROLLER_USER,
    mosquitto_hash,
    render_controller_only,
    write_files,
)
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.runtime import Runtime

log = logging.getLogger("loa")

__all__ = ["main"]


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _network(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from devices.areas import generate, load_fixture

    if getattr(args, "communes", None):
        return generate(args.communes, args.clusters_per_commune)
    if getattr(args, "clusters", None):
        return generate(1, args.clusters)
    return load_fixture(args.fixture or "huong-dao")


def cmd_db(args: argparse.Namespace) -> int:
    from controller.db.session import upgrade

    settings = Settings()
    upgrade(settings.db_url)
    print(f"database at {settings.db_url.split('@')[-1]} is up to date")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from controller.db.seed import register_network
    from controller.db.session import make_engine, make_sessionmaker, upgrade

    settings = Settings()
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    with make_sessionmaker(engine)() as db:
        n_areas, n_clusters = register_network(db, _network(args))
    engine.dispose()
    print(f"registered {n_areas} areas and {n_clusters} clusters")
    return 0


def _registry() -> tuple[Settings, sessionmaker[Session]]:
    from controller.db.session import make_engine, make_sessionmaker, upgrade

    settings = Settings()
    upgrade(settings.db_url)
    return settings, make_sessionmaker(make_engine(settings.db_url))


def cmd_provision(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from controller.access.broker_auth import issue_credential
    from controller.access.keys import load_or_create_signing_key
    from controller.db.models import Cluster
    from controller.fleet.provisioning import BrokerSync, bundle_for

    settings, sessions = _registry()
    key = load_or_create_signing_key(settings.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sessions() as db:
        q = select(Cluster).where(Cluster.provisioned.is_(True))
        if not args.all:
            q = q.where(Cluster.id.in_(args.clusters))
        clusters = list(db.scalars(q.order_by(Cluster.id)))
        missing = sorted(set(args.clusters) - {c.id for c in clusters})
        if missing:
            print(f"loa provision: not registered: {', '.join(missing)}", file=sys.stderr)
            return 2
        secrets = {c.id: issue_credential(c) for c in clusters}
        db.commit()
        for c in clusters:
            bundle = bundle_for(db, settings, key.verify_key, c, secrets[c.id])
            path = out / f"{c.id}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(bundle.model_dump_json(indent=1))
        BrokerSync(settings, sessions).sync(db)
    print(f"{len(clusters)} bundle(s) in {out}; earlier credentials of these boards no "
          "longer work")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from controller.fleet.provisioning import BrokerSync

    if args.action == "tls":
        from controller.access.tls import make_broker_tls

        if not args.out or not args.host:
            print("loa broker tls: give --out DIR and at least one --host", file=sys.stderr)
            return 2
        snippet = make_broker_tls(Path(args.out), args.host, args.port)
        print(f"CA and broker certificate in {args.out}; Mosquitto listener: {snippet}; "
              f"boards and LOA_MQTT_CA_FILE trust {Path(args.out) / 'ca.pem'}")
        return 0
    settings, sessions = _registry()
    if args.out:
        settings = settings.model_copy(update={"broker_files_dir": Path(args.out)})
    if settings.broker_files_dir is None:
        print("loa broker files: give --out DIR or set LOA_BROKER_FILES_DIR", file=sys.stderr)
        return 2
    out = BrokerSync(settings, sessions).sync()
    print(f"password_file, acl_file and mosquitto.conf in {out}")
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    import json

    from pydantic import ValidationError

    from controller.db.models import User
    from controller.db.seed import register_network
    from controller.errors import LoaError
    from controller.fleet.network import NetworkFile, export_network, import_network

    _settings, sessions = _registry()
    path = Path(args.file)
    with sessions() as db:
        if args.action == "export":
            national = User(username="loa-cli", role="admin", area_id=None)
            data = export_network(db, national, name=path.stem)
            path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
            print(f"{len(data['areas'])} areas and {len(data['clusters'])} clusters in {path}")
            return 0
        try:
            net = import_network(NetworkFile.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError, LoaError) as exc:
            print(f"loa network import: {path}: {exc}", file=sys.stderr)
            return 2
        n_areas, n_clusters = register_network(db, net)
    print(f"registered {n_areas} areas and {n_clusters} clusters from {path}; issue their "
          "credentials with loa provision")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from controller.app import create_app
    from controller.db.lock import AnotherController, DatabaseLock

    settings = Settings()
    if args.standby:
        # waits, not listening, until the active controller is gone; then holds the lock
        # for its whole life and starts as any controller does (recovering what was in
        # flight: the spool, the broker session, the database)
        lock = DatabaseLock(settings.db_url)
        waited = lock.wait_acquire(waiting=lambda: print(
            "loa serve: standby: another controller holds the database; this one takes "
            "over as soon as it stops", file=sys.stderr, flush=True))
        print(f"loa serve: the active controller now (waited {waited:.1f} s)", file=sys.stderr,
              flush=True)
        uvicorn.run(create_app(settings, lock=lock), host=args.host, port=args.port,
                    log_level="info")
        return 0
    # a second controller on this database says so and stops, before it starts anything
    # (the runtime takes the lock itself, for its whole life; this is the plain answer)
    probe = DatabaseLock(settings.db_url)
    try:
        probe.acquire()
    except AnotherController as exc:
        print(f"loa serve: {exc} (or start it with --standby)", file=sys.stderr)
        return 3
    except (OSError, SQLAlchemyError) as exc:  # the controller starts degraded, says why
        logging.getLogger(__name__).debug("lock probe: %s", exc)
    finally:
        probe.release()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_sim(argv: list[str]) -> int:
    # imported lazily: the controller does not depend on the simulator
    sim_cli = importlib.import_module("firmware_sim.cli")
    return int(sim_cli.main(argv))


@dataclasses.dataclass
class _DemoBroker:
    url: str
    #: who the broker is: "external" (LOA_MQTT_URL), "mosquitto" (private, enforcing the
    #: registry's credentials and ACL) or "amqtt" (embedded, behind the door that applies
    #: the same files: controller.transport.broker_gate; MQTT 3.1.1)
    kind: str
    pid_file: Path | None = None


@contextlib.asynccontextmanager
async def _broker_if_needed(files: Path) -> AsyncIterator[_DemoBroker]:
    """The demo's broker. Where Mosquitto is installed, a private one that lets in only the
    controller and the boards the registry holds, each on its own topics; elsewhere the
    embedded amqtt behind the door that applies the same files
    (controller.transport.broker_gate)."""
    url = os.environ.get("LOA_MQTT_URL")
    if url:
        yield _DemoBroker(url, "external")
        return
    import shutil

    from controller.transport.broker import EmbeddedBroker, free_port, port_free

    port = 1883 if port_free(1883) else free_port()
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)
    if binary is None:
        broker = EmbeddedBroker(port=port, files_dir=files)
        await broker.start()
        try:
            yield _DemoBroker(broker.url, "amqtt")
        finally:
            await broker.stop()
        return
    import getpass

    conf = files / "demo-mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
                    "use_username_as_clientid true\npersistence false\n"
                    f"max_queued_messages 100000\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the broker runs beside the server
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = files / "demo-mosquitto.pid"
    pid_file.write_text(str(proc.pid))
    for _ in range(100):  # listening within a few seconds
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        await asyncio.sleep(0.05)
    try:
        yield _DemoBroker(f"mqtt://127.0.0.1:{port}", "mosquitto", pid_file)
    finally:
        proc.terminate()
        proc.wait(10)


def _controller_secret(folder: Path) -> str:
    """The demo controller's broker password, made once and kept (0600)."""
    import secrets

    path = folder / "controller.secret"
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _write_bundles(db: Session, settings: Settings, runtime: Runtime, out: Path) -> None:
    """A credential and bundle for every registered board (the demo's simulator loads
    them); the broker's files follow when the runtime starts."""
    from sqlalchemy import select

    from controller.access.broker_auth import issue_credential
    from controller.db.models import Cluster
    from controller.fleet.provisioning import bundle_for

    out.mkdir(parents=True, exist_ok=True)
    clusters = list(db.scalars(select(Cluster).where(Cluster.provisioned.is_(True))))
    secrets = {c.id: issue_credential(c) for c in clusters}
    db.commit()
    for c in clusters:
        path = out / f"{c.id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(bundle_for(db, settings, runtime.key.verify_key, c,
                                secrets[c.id]).model_dump_json(indent=1))


async def _demo(args: argparse.Namespace) -> None:
    from controller.access.keys import public_key_path
    from controller.app import create_app
    from controller.db.seed import register_network
    from controller.runtime import Runtime
    from devices.areas import load_fixture

    data_dir = Settings().data_dir
    files = data_dir / "broker"
    secret = _controller_secret(files)
    # the controller's own entry before the broker starts (Mosquitto needs the files)
    write_files(render_controller_only(mosquitto_hash(secret)), files)
    async with _broker_if_needed(files) as broker:
        mqtt_url, embedded = broker.url, broker.kind == "amqtt"
        bundles: Path | None = None
        if broker.kind != "external":  # the controller and every board with credentials
            host_port = mqtt_url.split("://", 1)[1]
            settings = Settings(mqtt_url=f"mqtt://{CONTROLLER_USER}:{secret}@{host_port}",
                                broker_public_url=mqtt_url, broker_files_dir=files,
                                broker_pid_file=broker.pid_file,
                                # amqtt speaks only MQTT 3.1.1
                                mqtt_protocol="3.1.1" if embedded else "auto")
        else:
            settings = Settings(mqtt_url=mqtt_url)
        os.environ["LOA_MQTT_URL"] = settings.mqtt_url or mqtt_url
        runtime = Runtime.build(settings)
        with runtime.sessions() as db:
            register_network(db, load_fixture("huong-dao"))
            if broker.kind != "external":
                bundles = data_dir / "bundles"
                _write_bundles(db, settings, runtime, bundles)
        app = create_app(settings, runtime)
        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
        server = uvicorn.Server(config)
        sim = subprocess.Popen(  # noqa: ASYNC220 - the simulator runs beside the server
            [sys.executable, "-m", "firmware_sim", "--fixture", "huong-dao", "--mqtt", mqtt_url,
             "--pubkey", str(public_key_path(settings.data_dir)),
             "--heartbeat", str(args.heartbeat), "--control", "127.0.0.1:8700",
             # amqtt refuses MQTT 5 connects: say so rather than have every cluster probe
             "--mqtt-protocol", "3.1.1" if embedded else "auto",
             *(["--bundles", str(bundles)] if bundles else [])],
        )
        url = f"http://127.0.0.1:{args.port}"
        password = runtime.generated_admin_password or settings.admin_password
        banner = (
            "\n"
            "  Loa demo: xã Hướng Đạo (14 villages, 15 clusters, 30 speakers)\n"
            f"  Console:  {url}/\n"
            f"  API:      {url}/api/v1   (OpenAPI: {url}/docs)\n"
            + (f"  MQTT:     {mqtt_url}   ({broker.kind}; credentials required; watch: "
               f"mosquitto_sub -v -u {CONTROLLER_USER} -P $(cat {files / 'controller.secret'})"
               " -t 'loa/#')\n"
               if broker.kind != "external"
               else f"  MQTT:     {mqtt_url}   (watch: mosquitto_sub -v -t 'loa/#')\n")
            +
            "  Faults:   loa sim fault hd-c04 blown_speaker index=2   (loa sim fault --help)\n"
            f"  Login:    admin / {password}\n"
            "  Stop:     Ctrl-C\n"
        )
        loop = asyncio.get_running_loop()
        serve = asyncio.create_task(server.serve())
        while not server.started and not serve.done():
            await asyncio.sleep(0.05)
        print(banner, flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        try:
            await serve
        finally:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.transport.broker import port_free

    if not port_free(args.port):  # said plainly, before anything starts
        print(f"loa demo: port {args.port} is in use (another loa demo?); "
              "choose another with --port", file=sys.stderr)
        return 2
    asyncio.run(_demo(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        _logging()
        return cmd_sim(argv[1:])
    p = argparse.ArgumentParser(prog="loa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="everything on this machine, with simulated clusters")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--heartbeat", type=float, default=10.0, help="simulated heartbeat (s)")
    serve = sub.add_parser("serve", help="run the controller")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--standby", action="store_true",
                       help="wait while another controller holds the database and take over "
                            "when it stops (it listens only once it is the active one)")
    sub.add_parser("sim", help="run the firmware simulator (loa sim --help)")
    db = sub.add_parser("db", help="database commands")
    db.add_argument("action", choices=["upgrade"])
    seed = sub.add_parser("seed", help="register areas and clusters")
    g = seed.add_mutually_exclusive_group()
    g.add_argument("--fixture", default=None)
    g.add_argument("--communes", type=int)
    g.add_argument("--clusters", type=int)
    seed.add_argument("--clusters-per-commune", type=int, default=15)
    prov = sub.add_parser("provision", help="issue boards' broker credentials (bundles)")
    prov.add_argument("clusters", nargs="*", metavar="CLUSTER")
    prov.add_argument("--all", action="store_true", help="every registered board")
    prov.add_argument("--out", required=True, help="folder for the bundles (one per board)")
    broker = sub.add_parser("broker", help="the broker's password and ACL files")
    broker.add_argument("action", choices=["files", "tls"])
    broker.add_argument("--out", default=None, help="folder (files: default "
                        "LOA_BROKER_FILES_DIR)")
    broker.add_argument("--host", action="append", default=[],
                        help="tls: a name or address boards connect to (repeat)")
    broker.add_argument("--port", type=int, default=8883, help="tls: the listener's port")
    net = sub.add_parser("network", help="the network (areas, boards, speakers) as a file")
    net.add_argument("action", choices=["export", "import"])
    net.add_argument("file")
    args = p.parse_args(argv)
    if args.command == "provision" and not (args.all or args.clusters):
        p.error("provision: name the boards, or --all")
    _logging(args.verbose)
    handlers = {"demo": cmd_demo, "serve": cmd_serve, "db": cmd_db, "seed": cmd_seed,
                "provision": cmd_provision, "broker": cmd_broker, "network": cmd_network}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

"""``loa sim`` / ``python -m firmware_sim``: run simulated clusters against a broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from nacl.signing import VerifyKey

from devices.areas import Network, generate, load_fixture
from devices.provisioning import ProvisioningBundle
from firmware_sim.cluster import SimConfig
from firmware_sim.control import ControlServer
from firmware_sim.faults import FAULTS
from firmware_sim.runner import build_clusters, load_verify_key, run_clusters

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loa sim", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fixture", default=None, help="packaged network, e.g. huong-dao")
    g.add_argument("--clusters", type=int, default=None, help="N generated clusters, one commune")
    g.add_argument("--communes", type=int, default=None, help="generated communes")
    p.add_argument("--clusters-per-commune", type=int, default=15)
    p.add_argument("--mqtt", default=os.environ.get("LOA_MQTT_URL", "mqtt://127.0.0.1:1883"),
                   help="broker URL (default: $LOA_MQTT_URL); several, comma-separated, for "
                        "the nodes of a clustered broker: a board that cannot reach one "
                        "tries the next")
    p.add_argument("--mqtt-protocol", choices=("auto", "5", "3.1.1"), default="auto",
                   help="MQTT version; auto tries 5 (a clean simulated power cut needs it) and "
                        "falls back to 3.1.1 on a broker that refuses it")
    p.add_argument("--pubkey", type=Path, default=None,
                   help="controller public key file (default: $LOA_DATA_DIR/controller_ed25519.pub)")
    p.add_argument("--heartbeat", type=float, default=float(os.environ.get("LOA_SIM_HEARTBEAT", "30")))
    p.add_argument("--record-dir", type=Path, default=None,
                   help="write the audio each cluster played to DIR/<cluster>/<occurrence>.*")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="keep each board's outbox (events not yet acknowledged) in "
                        "DIR/<cluster>/, so it survives a restart of the simulator (a reboot)")
    p.add_argument("--bundles", type=Path, default=None, metavar="DIR",
                   help="provisioning bundles, DIR/<cluster id>.json: each board connects "
                        "with its own broker credential (loa provision writes them)")
    p.add_argument("--ca", type=Path, default=None, metavar="PEM",
                   help="with mqtts://: the CA that signed the broker's certificate "
                        "(default: the bundles' ca_pem)")
    p.add_argument("--clock-sync", type=float, default=30.0, metavar="S",
                   help="exchange clock stamps with the controller every S seconds (protocol "
                        "§4.5; 0: off, the boards then play by their own oscillators)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connect-spread", type=float, default=None,
                   help="spread connects over this many seconds (default: 1 s per 500 clusters, at least 1 s)")
    p.add_argument("--control", default=None, metavar="HOST:PORT",
                   help="serve the fault-injection control channel (HTTP) here, e.g. 127.0.0.1:8700")
    p.add_argument("--processes", type=int, default=1,
                   help="split the clusters over N processes (one Python process handles a few "
                        "hundred clusters' commands per second; use the cores)")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N", set by --processes
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def fault_main(argv: list[str]) -> int:
    """``loa sim fault [--control URL] CLUSTER|'*' FAULT [key=value ...] [--clear]``"""
    fp = argparse.ArgumentParser(prog="loa sim fault", description=FAULT_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    fp.add_argument("--control", default="http://127.0.0.1:8700")
    fp.add_argument("cluster", help="cluster id, or * for every simulated cluster")
    fp.add_argument("fault", choices=sorted(FAULTS))
    fp.add_argument("params", nargs="*", help="key=value (numbers and true/false understood)")
    fp.add_argument("--clear", action="store_true", help="clear the fault instead")
    a = fp.parse_args(argv)
    params: dict[str, object] = {}
    for kv in a.params:
        key, _, raw = kv.partition("=")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    url = f"{a.control.rstrip('/')}/clusters/{a.cluster}/faults/{a.fault}"
    req = urllib.request.Request(url, data=json.dumps(params).encode(),
                                 method="DELETE" if a.clear else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(r.read().decode())
            return 0
    except urllib.error.HTTPError as e:
        print(e.read().decode(), file=sys.stderr)
        return 1


FAULT_HELP = "Inject or clear a fault in a running simulator.\n\nFaults and defaults:\n" + "\n".join(
    f"  {name:14} {params}" for name, params in FAULTS.items())


def _run_shards(argv: list[str], n: int) -> int:
    """Run ``n`` copies of this command, each simulating every n-th cluster; stop them all
    on SIGINT/SIGTERM and return the worst exit code."""
    rest: list[str] = []
    args = iter(argv)
    for a in args:  # drop --processes N / --processes=N
        if a == "--processes":
            next(args, None)
        elif not a.startswith("--processes="):
            rest.append(a)
    children = [subprocess.Popen([sys.executable, "-m", "firmware_sim", *rest,
                                  "--shard", f"{k}/{n}"]) for k in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return max(c.wait() for c in children)


def load_bundles(folder: Path, network: Network) -> dict[str, ProvisioningBundle]:
    """Each simulated board's bundle, ``folder/<cluster id>.json``; a board without one
    connects with no credential of its own (and a broker that enforces them refuses it)."""
    out: dict[str, ProvisioningBundle] = {}
    for cid in network.clusters:
        path = folder / f"{cid}.json"
        if not path.exists():
            continue
        try:
            bundle = ProvisioningBundle.model_validate_json(path.read_bytes())
        except ValueError as exc:
            raise SystemExit(f"{path}: not a provisioning bundle ({exc})") from None
        if bundle.cluster_id != cid:
            raise SystemExit(f"{path} is the bundle of {bundle.cluster_id}, not of {cid}")
        out[cid] = bundle
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fault"]:
        return fault_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.processes > 1 and args.shard is None:
        if args.control:
            raise SystemExit("--control works with one process; drop --processes")
        return _run_shards(argv, args.processes)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.clusters is not None:
        network = generate(1, args.clusters)
    elif args.communes is not None:
        network = generate(args.communes, args.clusters_per_commune)
    else:
        network = load_fixture(args.fixture or "huong-dao")
    url = urlparse(args.mqtt.split(",")[0].strip())
    bundles = load_bundles(args.bundles, network) if args.bundles else {}
    if bundles and args.pubkey is None:  # the key each board was provisioned with
        keys = list({b.controller_public_key: VerifyKey(bytes.fromhex(b.controller_public_key))
                     for b in bundles.values()}.values())
    else:
        pubkey = args.pubkey or Path(os.environ.get("LOA_DATA_DIR", ".loa")) / \
            "controller_ed25519.pub"
        if not pubkey.exists():
            raise SystemExit(f"controller public key not found at {pubkey}: pass --pubkey "
                             "(the controller writes it on first start)")
        keys = [load_verify_key(pubkey)]
    tls = None
    if url.scheme == "mqtts":  # the broker's certificate checked against the bundle's CA
        ca = args.ca.read_text() if args.ca else next(
            (b.ca_pem for b in bundles.values() if b.ca_pem), None)
        tls = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
    default_port = 8883 if url.scheme == "mqtts" else 1883
    more = [urlparse(u.strip()) for u in args.mqtt.split(",")[1:]]
    cfg = SimConfig(host=url.hostname or "127.0.0.1", port=url.port or default_port,
                    more_brokers=[(m.hostname or "127.0.0.1", m.port or default_port)
                                  for m in more], tls=tls,
                    keys=keys, heartbeat_s=args.heartbeat, password=url.password,
                    passwords={cid: b.password for cid, b in bundles.items()},
                    record_dir=args.record_dir, state_dir=args.state_dir, seed=args.seed,
                    protocol=args.mqtt_protocol, clock_sync_s=args.clock_sync)
    # jittered connects: a province-wide power return must not be a thundering herd
    spread = (args.connect_spread if args.connect_spread is not None
              else max(1.0, len(network.clusters) / 500))
    logging.getLogger(__name__).info("simulating %d clusters (%s) on %s", len(network.clusters),
                                     network.name, args.mqtt)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        clusters = build_clusters(network, cfg)
        if args.shard:
            i, n = (int(x) for x in args.shard.split("/"))
            clusters = clusters[i::n]
        control = None
        if args.control:
            host, _, port = args.control.rpartition(":")
            control = ControlServer(clusters, host or "127.0.0.1", int(port))
            await control.start()
        try:
            await run_clusters(clusters, stop, spread, cfg.seed)
        finally:
            if control is not None:
                await control.stop()

    asyncio.run(run())
    return 0

"""An independent watcher of one bulletin on the broker (a process of its own, so that its
clock is the machine's and its work is not the controller's): when the command, the audio's
chunks and each cluster's reports crossed the broker. ``python -m bench.bulletin_watch PORT``
prints ``ready`` once subscribed; on a line on stdin (the occurrence id) it prints one JSON
summary of that occurrence and exits.

Two clocks are kept apart: ``wire`` times are when a message reached this subscriber (the
machine's clock), ``board`` figures come from the reports themselves (each board's own
clock: ``started_at`` minus the command's ``start_at`` is how late that board began by its
own reckoning, which on a simulator is the event loop's lag)."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port = int(sys.argv[1])
    lock = threading.Lock()
    cmds: list[tuple[float, str]] = []  # (wire time, payload) of play commands on area topics
    chunks: list[float] = []
    first: dict[tuple[str, str, str], float] = {}  # (occurrence, cluster, state) -> wire
    late: dict[tuple[str, str], float] = {}  # (occurrence, cluster) -> started_at - start_at
    starts: dict[str, datetime] = {}
    requests = [0]

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        t = m.topic
        with lock:
            if t.endswith("/cmd"):
                payload = m.payload.decode(errors="replace")
                cmds.append((now, payload))
                on_command(payload)
            elif "/content/" in t:
                chunks.append(now)
            elif t.endswith("/event"):
                try:
                    ev = json.loads(m.payload)
                except ValueError:
                    return
                if ev.get("kind") == "content_request":
                    requests[0] += 1
                    return
                if ev.get("kind") != "delivery":
                    return
                key = (ev.get("occurrence_id"), ev.get("cluster_id"), ev.get("state"))
                first.setdefault(key, now)
                if ev.get("state") == "playing" and key[0] in starts and ev.get("at"):
                    at = datetime.fromisoformat(ev["at"])
                    late.setdefault(key[:2], (at - starts[key[0]]).total_seconds())

    def on_command(payload: str) -> None:
        try:
            body = json.loads(payload).get("body") or {}
        except ValueError:
            return
        occ = body.get("occurrence_id")
        if occ and body.get("start_at"):
            starts.setdefault(occ, datetime.fromisoformat(body["start_at"]))

    subscribed: list[int] = []

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        subscribed.append(mid)
        if len(subscribed) == 3:
            print("ready", flush=True)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bulletin-watch")
    c.on_message, c.on_subscribe = on_message, on_subscribe
    c.connect("127.0.0.1", port)
    c.subscribe("loa/v1/+/+/cmd", qos=0)  # (an instrument: no acks to send)
    c.subscribe("loa/v1/content/#", qos=0)
    c.subscribe("loa/v1/cluster/+/event", qos=0)
    c.loop_start()
    occ = sys.stdin.readline().strip()
    with lock:
        start = starts.get(occ)
        wire = {s: sorted(t for (o, _, st), t in first.items() if o == occ and st == s)
                for s in ("received", "ready", "playing", "played", "failed")}
        lateness = sorted(v for (o, _), v in late.items() if o == occ)
        cmd_at = [t for t, p in cmds if occ in p]
        out = {"start_at": start.timestamp() if start else None,
               "command": min(cmd_at) if cmd_at else None,
               "chunks": [min(chunks), max(chunks)] if chunks else None,
               "content_requests": requests[0],
               "wire": {s: [v[0], v[len(v) // 2], v[-1], len(v)] if v else None
                        for s, v in wire.items()},
               "board_late_s": [lateness[0], lateness[len(lateness) // 2],
                                lateness[int(len(lateness) * 0.99)], lateness[-1]]
               if lateness else None}
    print(json.dumps(out), flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()

"""Prometheus metrics: clusters by state, open alerts, deliveries by state, storage, MQTT
traffic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from controller.db.models import Cluster, Delivery

if TYPE_CHECKING:
    from controller.runtime import Runtime

__all__ = ["render"]


class _LoaCollector(Collector):
    def __init__(self, rt: Runtime):
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rt = self.rt
        with rt.sessions() as db:
            states = dict(db.execute(select(Cluster.state, func.count()).group_by(Cluster.state)).all())
            deliveries = dict(db.execute(
                select(Delivery.state, func.count()).group_by(Delivery.state)).all())
        g = GaugeMetricFamily("loa_clusters", "Clusters by state", labels=["state"])
        for s in ("online", "degraded", "offline", "unprovisioned"):
            g.add_metric([s], states.get(s, 0))
        yield g
        a = GaugeMetricFamily("loa_alerts_open", "Open alerts by code", labels=["code"])
        for code, n in sorted(rt.alerts.open_counts().items()):
            a.add_metric([code], n)
        yield a
        d = GaugeMetricFamily("loa_deliveries", "Deliveries by state", labels=["state"])
        for s, n in sorted(deliveries.items()):
            d.add_metric([s], n)
        yield d
        problem = rt.storage.problem
        st = GaugeMetricFamily("loa_storage_ok", "1 while the database takes writes, 0 while "
                               "it refuses them (the reason as a label)", labels=["reason"])
        st.add_metric([problem.reason if problem else ""], 0 if problem else 1)
        yield st
        yield CounterMetricFamily("loa_storage_failures", "Database operations refused "
                                  "(down, full, read-only), retried", value=rt.storage.failures)
        yield GaugeMetricFamily("loa_airings_unrecorded", "Airings on the air whose rows are "
                                "not yet written", value=len(rt.dispatcher.unrecorded))
        c = rt.link.counters
        yield CounterMetricFamily("loa_mqtt_messages_in", "MQTT messages received",
                                  value=c["in"])
        yield CounterMetricFamily("loa_mqtt_messages_out", "MQTT messages published",
                                  value=c["out"])
        rej = CounterMetricFamily("loa_mqtt_messages_rejected",
                                  "MQTT messages dropped, by reason", labels=["reason"])
        rejected = dict(rt.ingest.rejected)
        if c["dropped_overload"]:
            rejected["overload"] = c["dropped_overload"]
        if c["dropped_bad_topic"]:
            rejected["bad_topic"] = rejected.get("bad_topic", 0) + c["dropped_bad_topic"]
        for reason, n in sorted(rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        ref = CounterMetricFamily("loa_commands_refused", "Commands clusters refused, by reason",
                                  labels=["reason"])
        for key, n in sorted(rt.dispatcher.counters.items()):
            if key.startswith("refused_"):
                ref.add_metric([key[len("refused_"):]], n)
        yield ref
        clock = rt.clock.counters if rt.clock else {}
        yield CounterMetricFamily("loa_time_replies", "Clock requests answered (protocol "
                                  "§4.5)", value=clock.get("time_replies", 0))
        tr = CounterMetricFamily("loa_time_requests_refused", "Clock requests not answered, by "
                                 "reason", labels=["reason"])
        for reason in ("limited", "invalid"):
            tr.add_metric([reason], clock.get(f"time_{reason}", 0))
        yield tr
        yield GaugeMetricFamily("loa_ingest_queue", "MQTT messages waiting to be processed",
                                value=rt.link.inbox.qsize())
        yield CounterMetricFamily("loa_content_chunks_sent", "Content chunks published",
                                  value=rt.content.chunks_sent)
        yield CounterMetricFamily("loa_live_frames_too_fast", "Frames of a live voice refused: "
                                  "its sender sent faster than real time",
                                  value=rt.streams.frames_too_fast() if rt.streams else 0)


def render(rt: Runtime) -> bytes:
    registry = CollectorRegistry()
    registry.register(_LoaCollector(rt))
    return generate_latest(registry)

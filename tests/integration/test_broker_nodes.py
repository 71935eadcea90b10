"""The controller's link, MQTT 5 or 3.1.1, given the nodes of a broker cluster: it uses the
first that answers and moves to another when its node goes away (real Mosquitto processes
standing in for two nodes; what a NATS cluster does on a node loss is in test_faults, a
RabbitMQ cluster in test_rabbitmq_cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import Settings
from controller.transport.mqtt import make_link
from tests.utils.broker import Broker, Watcher, needs_mosquitto, wait_for


def test_settings_name_every_node_with_the_first_ones_credentials() -> None:
    s = Settings(mqtt_url="mqtt://loa:secret@10.0.0.1:1883,10.0.0.2:1884,mqtt://10.0.0.3")
    assert s.mqtt == ("10.0.0.1", 1883, "loa", "secret")
    assert s.mqtt_nodes == [("10.0.0.1", 1883), ("10.0.0.2", 1884), ("10.0.0.3", 1883)]
    assert Settings(mqtt_url="mqtts://a.example,b.example").mqtt_nodes == [
        ("a.example", 8883), ("b.example", 8883)]


def test_a_boards_bundle_names_every_node_without_the_controllers_secret() -> None:
    from controller.fleet.provisioning import _public_url
    from devices.provisioning import ProvisioningBundle

    url = _public_url(Settings(mqtt_url="mqtt://loa:secret@10.0.0.1:1883,10.0.0.2:1884"))
    assert url == "mqtt://10.0.0.1:1883,10.0.0.2:1884"
    ProvisioningBundle(cluster_id="hd-c01", username="hd-c01", password="x" * 32,
                       broker_url=url, controller_public_key="ab" * 32, key_id="cd" * 8,
                       area_path=["hd-v01"], issued_at="2026-12-08T00:00:00Z")


@needs_mosquitto
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.timeout(120)
def test_the_link_moves_to_a_node_that_answers(tmp_path: Path, protocol: str) -> None:
    first, second = Broker(tmp_path), Broker(tmp_path).start()  # the first node is down
    link = make_link("127.0.0.1", first.port, protocol=protocol,
                     more=[("127.0.0.1", second.port)])
    link.subscribe([("loa/v1/test/#", 1)])
    watchers: list[Watcher] = []
    try:
        link.start(wait_s=0)
        wait_for(link.connected.is_set, 30, "the link up on the second node")
        watchers.append(Watcher(second.port, "loa/v1/test/#"))
        assert link.publish("loa/v1/test/a", b"on the second node")
        wait_for(lambda: watchers[0].got == [b"on the second node"], 10, "the publish there")
        # the second node dies and the first comes back: the link goes to it
        first.start()
        second.kill()
        wait_for(lambda: link.connected.is_set() and link.port == first.port, 60,
                 "the link up on the first node")
        watchers.append(Watcher(first.port, "loa/v1/test/#"))
        assert link.publish("loa/v1/test/b", b"on the first node")
        wait_for(lambda: watchers[1].got == [b"on the first node"], 10, "the publish there")
    finally:
        for w in watchers:
            w.close()
        link.stop()
        first.kill()
        second.kill()

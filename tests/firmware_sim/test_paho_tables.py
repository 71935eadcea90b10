"""The simulator shares paho's MQTT 5 property tables between Properties objects: packing
and unpacking must stay byte for byte what paho does, and instances must not leak
properties into each other."""

from __future__ import annotations

from firmware_sim import paho_tables
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def build() -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    p.MessageExpiryInterval = 30
    p.ContentType = "application/json"
    p.UserProperty = ("cluster", "hd-c01")
    p.UserProperty = ("seq", "7")
    return p


def test_properties_pack_and_unpack_as_paho_does() -> None:
    paho_tables.install()
    packed = build().pack()  # MQTT 5 §2.2.2: length 51, then id + value each
    assert packed == (b"\x33\x02\x00\x00\x00\x1e\x03\x00\x10application/json"
                      b"\x26\x00\x07cluster\x00\x06hd-c01\x26\x00\x03seq\x00\x017")
    got = Properties(PacketTypes.PUBLISH)
    _, used = got.unpack(packed)
    assert used == len(packed)
    assert got.json() == {"MessageExpiryInterval": 30, "ContentType": "application/json",
                          "UserProperty": [("cluster", "hd-c01"), ("seq", "7")]}


def test_instances_stay_apart_and_clear_empties_one() -> None:
    paho_tables.install()
    a, b = build(), Properties(PacketTypes.PUBLISH)
    assert b.isEmpty() and not a.isEmpty()
    a.clear()
    assert a.isEmpty() and a.pack() == b"\x00"
    a.ContentType = "x"  # still usable, and still checked by paho
    assert a.json() == {"ContentType": "x"}

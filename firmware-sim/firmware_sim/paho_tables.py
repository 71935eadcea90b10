"""paho-mqtt builds two constant tables (the ~40 MQTT 5 property names and types) inside
every ``Properties`` object, and it makes one for every MQTT 5 packet it receives. With
hundreds of clusters simulated in one process, that was a fifth of the simulator's time
during an emergency fan-out (one command and its chunks to every cluster at once). The
tables are the same for every instance and paho only reads them, so they are built once
and shared; ``clear`` visits only the attributes an instance has. Behaviour is paho's own.

``firmware_sim.cluster`` calls :func:`install` when it is imported. Only the simulator
does this (the controller speaks MQTT 3.1.1, which has no properties). Relies on paho 2.x
(pinned <3).
"""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["install"]

_PRIVATE = frozenset({"packetType", "types", "names", "properties"})


def install() -> None:
    if getattr(Properties, "_loa_shared_tables", False):
        return
    tables = Properties(PacketTypes.PUBLISH)  # built once, by paho's own constructor
    types, names, properties = tables.types, tables.names, tables.properties

    def __init__(self: Properties, packetType: int) -> None:
        d = self.__dict__
        d["packetType"] = packetType
        d["types"], d["names"], d["properties"] = types, names, properties

    def clear(self: Properties) -> None:
        for name in [k for k in self.__dict__ if k not in _PRIVATE]:
            delattr(self, name)

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._loa_shared_tables = True  # type: ignore[attr-defined]

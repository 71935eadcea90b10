"""The wire contract between the Loa controller and smart-radio clusters (protocol ``loa/v1``).

Pure: topics, message models, command signing and the area/cluster fixtures. No I/O, no
network, no database. Both ``controller`` and ``firmware_sim`` import this package; real
firmware implements the same contract from ``docs/protocol.md``.
"""

PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION"]

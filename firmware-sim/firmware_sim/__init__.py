"""Simulated smart-radio cluster firmware. Speaks only the ``devices`` contract (loa/v1)."""

from firmware_sim.cluster import SimCluster, SimConfig

__all__ = ["SimCluster", "SimConfig"]

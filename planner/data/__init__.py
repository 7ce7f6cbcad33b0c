"""Embedded default data of the planner: reference latency profiles and the MIG geometry, each figure sourced (the
instance catalog is shared: gpufleet/data)."""

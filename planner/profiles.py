"""Latency profiles available to the planner: the embedded references plus any the user measured.

A user's profile replaces the embedded one for the same (model, GPU type). The embedded ones: ResNet-50 (MLPerf), and
the YOLO-class detectors and segmenter the users serve (``planner/data/yolo_profiles.py`` derives them).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from planner.errors import PlannerInputError
from gpufleet.contracts.profile import LatencyProfile, ProfileError, parse_profile, read_profile


# What `planner recommend` plans for when no --model is given: a small YOLO detector on 1280x720 camera frames.
DEFAULT_MODEL = "yolov8s-1280x720"


def embedded_profiles() -> list[LatencyProfile]:
    folder = resources.files("planner.data").joinpath("profiles")
    return [parse_profile(json.loads(entry.read_text()), f"embedded profiles/{entry.name}")
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".json")]


def load_profiles(paths: list[Path] | None = None) -> dict[tuple[str, str], LatencyProfile]:
    """All profiles keyed by (model, gpu); user files last so they win."""
    table = {p.key: p for p in embedded_profiles()}
    for path in paths or []:
        try:
            prof = read_profile(path)
        except ProfileError as exc:
            raise PlannerInputError(str(exc)) from None
        table[prof.key] = prof
    return table

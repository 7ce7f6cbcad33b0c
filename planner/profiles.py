"""Latency profiles available to the planner: the embedded references plus any the user measured.

A user's profile replaces the embedded one for the same (model, GPU type). The embedded ones: ResNet-50 (MLPerf), and
the YOLO-class detectors and segmenter the users serve (``planner/data/yolo_profiles.py`` derives them).
"""
from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Pairing:
    """What the profiles a user gives must be about: a file of another model or GPU would be dropped in silence (the
    embedded profile, or none, planned in its place), so it is refused, saying what the command plans instead."""

    models: Collection[str]
    gpus: Collection[str]
    models_are: str  # e.g. "this plan is for 'yolov8s-1280x720' (--model picks the model)"
    gpus_are: str

    def check(self, path: Path, profile: LatencyProfile) -> None:
        if profile.model not in self.models:
            raise PlannerInputError(f"{path}: a profile of model '{profile.model}', but {self.models_are}")
        if profile.gpu not in self.gpus:
            raise PlannerInputError(f"{path}: a profile on GPU '{profile.gpu}', but {self.gpus_are}")


def load_profiles(paths: list[Path] | None = None, pairing: Pairing | None = None) -> dict[tuple[str, str], LatencyProfile]:
    """All profiles keyed by (model, gpu); user files last so they win, each checked against ``pairing``."""
    table = {p.key: p for p in embedded_profiles()}
    for path in paths or []:
        try:
            prof = read_profile(path)
        except ProfileError as exc:
            raise PlannerInputError(str(exc)) from None
        if pairing is not None:
            pairing.check(path, prof)
        table[prof.key] = prof
    return table

"""Which gpufleet contract a file is, so that a reader handed another one says what it was given.

Without this, a stress result passed where a plan is read met the plan's old-version check (both say
``schema_version: 1``) and was called "a plan written by an older gpufleet". Each contract is recognised by the
top-level fields that are its own: those of its model that no other contract's model has, derived from the models
so that a new field moves the signature with it. A file holding at least half of one contract's own fields is that
contract; an older version of a contract keeps most of them, so it is still recognised as its own kind and gets its
reader's "older gpufleet" message.
"""
from __future__ import annotations

from functools import cache

from pydantic import BaseModel

from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.catalog import Catalog
from gpufleet.contracts.engine_sidecar import EngineSidecar
from gpufleet.contracts.plan import Plan
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import StressResult

# Each contract, by the name messages use, with the command that writes one.
KINDS: dict[type[BaseModel], tuple[str, str]] = {
    LatencyProfile: ("latency profile", "serving profile"),
    StressResult: ("stress result", "loadtests run"),
    Calibration: ("calibration", "planner fit"),
    Catalog: ("catalog", "planner catalog refresh"),
    Plan: ("plan", "planner recommend --output"),
    EngineSidecar: ("engine sidecar", "serving build-engine"),
}
# A file is a contract when it holds at least this share of that contract's own fields.
RECOGNISED_SHARE = 0.5


@cache
def _own_fields() -> dict[type[BaseModel], frozenset[str]]:
    names = {m: {f.alias or n for n, f in m.model_fields.items()} for m in KINDS}
    return {m: frozenset(own - set().union(*(o for k, o in names.items() if k is not m))) for m, own in names.items()}


def identify(data: object) -> type[BaseModel] | None:
    """The contract ``data`` (a parsed JSON document) is, or None when it is none of them."""
    if not isinstance(data, dict):
        return None
    share = {m: len(own & data.keys()) / len(own) for m, own in _own_fields().items()}
    best = max(share, key=share.__getitem__)
    return best if share[best] >= RECOGNISED_SHARE else None


def wrong_kind(data: object, expected: type[BaseModel]) -> str | None:
    """"is a stress result, not a plan (...)" when ``data`` is another contract than ``expected``; else None."""
    found = identify(data)
    if found is None or found is expected:
        return None
    name, writer = KINDS[expected]
    return f"is a {KINDS[found][0]}, not a {name} ({writer} writes one)"

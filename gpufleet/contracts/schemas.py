"""Writes the JSON Schemas of the contract files into ``docs/schemas``: ``python -m gpufleet.contracts.schemas``.

The pydantic models are the source of truth; the committed schemas are their published form, and a test keeps
the two equal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from gpufleet.contracts.calibration import SCHEMA_VERSION as CALIBRATION_VERSION
from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.catalog import Catalog
from gpufleet.contracts.demand import DemandRow
from gpufleet.contracts.engine_sidecar import EngineSidecar
from gpufleet.contracts.plan import SCHEMA_VERSION as PLAN_VERSION
from gpufleet.contracts.plan import Plan
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import StressResult

SCHEMAS = {
    "latency-profile.v1.schema.json": LatencyProfile,
    f"plan.v{PLAN_VERSION}.schema.json": Plan,
    "stress-result.v1.schema.json": StressResult,
    "catalog.v1.schema.json": Catalog,
    "engine-sidecar.v1.schema.json": EngineSidecar,
    f"calibration.v{CALIBRATION_VERSION}.schema.json": Calibration,
    "demand-row.v1.schema.json": DemandRow,  # a row of the demand curve CSV (gpufleet.contracts.demand)
}


def rendered() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
            for name, model in SCHEMAS.items()}


def main(folder: str = "docs/schemas") -> int:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

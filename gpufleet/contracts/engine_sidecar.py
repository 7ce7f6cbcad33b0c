"""The TensorRT engine's sidecar ``<engine>.json``: how the engine was built (``serving build-engine`` writes it,
``serving profile`` and ``serving repo`` read it). Published as ``docs/schemas/engine-sidecar.v1.schema.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpufleet.contracts.io import read_model
from gpufleet.contracts.model import Strict


class TensorInfo(Strict):
    name: str
    dtype: str
    shape: list[int] = Field(description="with the batch dimension as -1 when dynamic")


class EngineSidecar(Strict):
    """``<engine>.json``: how an engine was built, for the profile and the model repository made from it."""

    schema_version: Literal[1] = 1
    engine: str
    onnx: str
    onnx_sha256: str
    precision: Literal["fp16", "int8"]
    batch_profile: dict[str, int] = Field(description="min, opt, max batch of the optimization profile")
    workspace_bytes: int
    calibration: dict[str, str | int] | None = None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensorrt_version: str
    device: str
    built: str


def sidecar_path(engine_path: Path | str) -> Path:
    return Path(str(engine_path) + ".json")


def read_sidecar(engine_path: Path | str) -> EngineSidecar | None:
    """The sidecar beside ``engine_path``, or None when there is none; ContractError with one line if unusable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    return read_model(EngineSidecar, path, "engine sidecar")

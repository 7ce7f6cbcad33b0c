"""A stand-in model for the local Triton: a latency profile served by sleeping (see the template's docstring).

Validation needs a server whose device time is known and which leaves the CPU to the load generator; a real model on
the load generator's own cores is neither. The stand-in's repository entry is the production layout (config.pbtxt
from the plan's batching, numbered version folders), so hot reload and queue bounds behave as they would on a GPU.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from gpufleet.contracts.profile import LatencyProfile, service_quantiles_s
from gpufleet.contracts.triton import BatchingConfig
from serving.repository import ModelEntry, RepositoryError, publish_version
from serving.triton_config import ModelSpec, TensorSpec, parse_config, render_config

# Quantile levels per batch size in the stand-in's table: 1/512 of probability, fine enough for a P99 and small
# enough (4 kB per batch size) to copy into every version folder.
STANDIN_GRID = 512
# The stand-in's tensors: a small input so that sending costs the load generator little, and one output per image.
STANDIN_INPUT = TensorSpec("images", "uint8", (64,))
STANDIN_OUTPUT = TensorSpec("output0", "float32", (4,))


@dataclass(frozen=True)
class StandIn:
    """A profile to serve by sleeping, under ``name``."""

    name: str
    profile: LatencyProfile

    def spec(self, batching: BatchingConfig) -> ModelSpec:
        if batching.effective_max_batch > max(self.profile.batch_sizes):
            raise RepositoryError(f"stand-in {self.name}: max batch size {batching.effective_max_batch} is above the "
                                  f"profile's largest measured batch ({max(self.profile.batch_sizes)})")
        # Its "device" is a sleep: the instances run on the CPU whatever the plan's kind.
        return ModelSpec(self.name, "python", (STANDIN_INPUT,), (STANDIN_OUTPUT,), batching.with_kind("KIND_CPU"),
                         warmup_batch_sizes=(1,), warmup_count=1)

    def write(self, root: Path | str, batching: BatchingConfig, version: int = 1,
              device_lock: Path | None = None) -> ModelEntry:
        """Write (or add) ``version`` of the stand-in to the repository at ``root``, with its config. Stand-ins
        given one ``device_lock`` file share one "GPU": their batches take turns on it."""
        spec = self.spec(batching)
        text = render_config(spec)
        parse_config(text, f"{spec.name}/config.pbtxt")
        staging = Path(tempfile.mkdtemp(prefix=".standin."))
        try:
            (staging / "model.py").write_text(
                resources.files("serving.templates").joinpath("standin_python_model.py").read_text())
            np.save(staging / "service_s.npy", service_quantiles_s(self.profile, STANDIN_GRID))
            if device_lock is not None:
                (staging / "device_lock.txt").write_text(str(Path(device_lock).resolve()))
            return publish_version(root, spec.name, text, staging, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

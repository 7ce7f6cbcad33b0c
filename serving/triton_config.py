"""Triton ``config.pbtxt``: built from a plan's Triton settings and a model's tensors, rendered and parsed with
Triton's own protobuf definition (``model_config.proto``, shipped in ``tritonclient``).

Rendering through the protobuf message rather than a text template means a field name or enum that Triton does
not know cannot be written; :func:`parse_config` is the check for configs written by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from gpufleet.contracts.triton import BatchingConfig
from serving.errors import ServingInputError

Platform = Literal["tensorrt_plan", "onnxruntime_onnx", "python"]

DEFAULT_MODEL_FILENAME = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "python": "model.py"}

_NUMPY_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int8": "TYPE_INT8",
                    "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}


class ConfigError(ServingInputError):
    """A config that Triton's model_config schema rejects, or settings that contradict each other."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output, with its per-sample dims (the batch dimension is implied by ``max_batch_size``)."""

    name: str
    dtype: str  # numpy name: float32, float16, uint8, ...
    dims: tuple[int, ...]

    @property
    def triton_type(self) -> str:
        try:
            return _NUMPY_TO_TRITON[self.dtype]
        except KeyError:
            raise ConfigError(f"tensor {self.name}: dtype {self.dtype} has no Triton type here") from None


@dataclass(frozen=True)
class ModelSpec:
    """Everything ``config.pbtxt`` says about one model."""

    name: str
    platform: Platform
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: BatchingConfig
    warmup_batch_sizes: tuple[int, ...] = field(default=(1,))
    warmup_count: int = 3
    # Triton's default too, written out because hot reload depends on it: with one version served, a new version
    # directory is loaded while the old version keeps serving, and the old one is unloaded only once the new is ready.
    latest_versions: int = 1


def build_config(spec: ModelSpec) -> mc.ModelConfig:
    """The ModelConfig message for ``spec``.

    Warm-up runs each listed batch size on random data before the model is marked ready, so the first real requests
    do not pay for lazy initialisation (cuDNN/TensorRT tactic loading, ORT arena growth) and a readiness probe only
    passes once the model is fast.
    """
    b = spec.batching
    cfg = mc.ModelConfig(name=spec.name, max_batch_size=b.max_batch_size)
    if spec.platform == "python":
        cfg.backend = "python"
    else:
        cfg.platform = spec.platform
    for t in spec.inputs:
        cfg.input.add(name=t.name, data_type=mc.DataType.Value(t.triton_type), dims=list(t.dims))
    for t in spec.outputs:
        cfg.output.add(name=t.name, data_type=mc.DataType.Value(t.triton_type), dims=list(t.dims))
    if b.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = b.max_queue_delay_microseconds
        cfg.dynamic_batching.preferred_batch_size.extend(sorted(set(b.preferred_batch_sizes)))
        if b.max_queue_size or b.queue_timeout_microseconds:
            # Circuit breaking: a request that could no longer meet the latency target is refused, at once beyond
            # the depth, or once it has waited out the timeout; a client may not ask for a longer wait.
            policy = cfg.dynamic_batching.default_queue_policy
            policy.max_queue_size = b.max_queue_size
            policy.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value("REJECT")
            policy.default_timeout_microseconds = b.queue_timeout_microseconds
            policy.allow_timeout_override = False
    elif b.max_queue_size or b.queue_timeout_microseconds:
        raise ConfigError("a queue bound needs the dynamic batcher, which holds the queue")
    cfg.version_policy.latest.num_versions = spec.latest_versions
    cfg.instance_group.add(count=b.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(b.instance_kind))
    for bs in spec.warmup_batch_sizes:
        if not 1 <= bs <= b.max_batch_size:
            raise ConfigError(f"warm-up batch size {bs} is outside 1..max_batch_size={b.max_batch_size}")
        w = cfg.model_warmup.add(name=f"random_batch_{bs}", batch_size=bs, count=spec.warmup_count)
        for t in spec.inputs:
            w.inputs[t.name].CopyFrom(mc.ModelWarmup.Input(
                data_type=mc.DataType.Value(t.triton_type), dims=list(t.dims), random_data=True))
    return cfg


def render_config(spec: ModelSpec) -> str:
    """``config.pbtxt`` text."""
    return text_format.MessageToString(build_config(spec))


def parse_config(text: str, origin: str = "config.pbtxt") -> mc.ModelConfig:
    """Parse ``config.pbtxt`` with Triton's schema; :class:`ConfigError` with one line on any defect."""
    try:
        cfg = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    if not cfg.name:
        raise ConfigError(f"{origin}: no model name")
    if not (cfg.platform or cfg.backend):
        raise ConfigError(f"{origin}: neither platform nor backend is set")
    if cfg.HasField("dynamic_batching"):
        bad = [p for p in cfg.dynamic_batching.preferred_batch_size if p > cfg.max_batch_size]
        if bad:
            raise ConfigError(f"{origin}: preferred_batch_size {bad} exceeds max_batch_size {cfg.max_batch_size}")
    return cfg


def onnx_tensors(model_path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX model, without the batch dimension; initializers are not inputs."""
    import onnx
    from onnx import helper

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return TensorSpec(v.name, dtype, tuple(dims[1:]))

    return (tuple(spec(v) for v in m.graph.input if v.name not in inits),
            tuple(spec(v) for v in m.graph.output))

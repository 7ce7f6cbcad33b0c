"""The target of a stress run: a model on a KServe v2 server (Triton), and the requests sent to it.

The model's input name, shape and datatype come from the server's model metadata (``GET /v2/models/<m>``), so the
payload is a camera frame at the size the model takes. Request bodies use the binary tensor data extension and are
built once by tritonclient (``generate_request_body``), so sending costs no per-request encoding.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import numpy as np

from gpufleet.errors import InputError
from gpufleet.net import check_url
from gpufleet.triton import DEFAULT_TIMEOUT_S, model_metadata
from loadtests.errors import LoadTestInputError

_NP = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT8": np.int8, "INT32": np.int32}


@dataclass(frozen=True)
class Target:
    """What one request asks for."""

    base_url: str  # http://host:port
    model: str
    version: str  # "" for the server's choice
    input_name: str
    sample_shape: tuple[int, ...]  # without the batch dimension
    datatype: str
    outputs: tuple[str, ...]
    batched: bool  # the model has a batch dimension (max_batch_size > 0)

    @property
    def infer_path(self) -> str:
        version = f"/versions/{self.version}" if self.version else ""
        return f"/v2/models/{urllib.parse.quote(self.model)}{version}/infer"


def resolve(base_url: str, model: str, version: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> Target:
    """Read the model's metadata; :class:`LoadTestInputError` with one line when the host or model is not there."""
    base_url = base_url.rstrip("/")
    try:
        check_url(base_url, "--host")
        meta = model_metadata(base_url, model, version, timeout_s)
    except InputError as exc:
        raise LoadTestInputError(str(exc)) from None
    try:
        inp = meta["inputs"][0]
        shape = [int(d) for d in inp["shape"]]
        outputs = tuple(o["name"] for o in meta.get("outputs", []))
        datatype = inp["datatype"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise LoadTestInputError(f"{base_url}: model {model!r} metadata has no usable inputs") from None
    if datatype not in _NP:
        raise LoadTestInputError(f"model {model!r}: input datatype {datatype} is not supported by the load generator")
    batched = bool(shape) and shape[0] == -1
    sample = tuple(shape[1:] if batched else shape)
    if any(d < 1 for d in sample):
        raise LoadTestInputError(f"model {model!r}: input {inp['name']} has variable dims {shape}; not supported")
    return Target(base_url, model, version, inp["name"], sample, datatype, outputs, batched)


def camera_frames(target: Target, count: int = 8, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct frames at the model's input size: a lit gradient scene with sensor noise, scaled as the
    model's datatype expects (0..1 floats, or 0..255 integers). Content does not change a dense model's cost; the
    size and datatype set the bytes on the wire, which is what the payload must get right."""
    rng = np.random.default_rng(seed)
    shape = ((batch,) if target.batched else ()) + target.sample_shape
    frames = []
    for _ in range(count):
        base = np.linspace(0.1, 0.9, shape[-1], dtype=np.float32)[None, :] * np.linspace(
            0.5, 1.0, shape[-2] if len(shape) >= 2 else 1, dtype=np.float32)[:, None]
        frame = np.clip(base + rng.normal(0, 0.05, shape).astype(np.float32), 0, 1)
        dtype = _NP[target.datatype]
        frames.append((frame * 255).astype(dtype) if np.issubdtype(dtype, np.integer) else frame.astype(dtype))
    return frames


def http_bodies(target: Target, frames: list[np.ndarray]) -> list[tuple[bytes, int]]:
    """KServe v2 request bodies with binary tensor data, and the JSON header length each carries."""
    import tritonclient.http as httpclient

    bodies = []
    for frame in frames:
        inp = httpclient.InferInput(target.input_name, list(frame.shape), target.datatype)
        inp.set_data_from_numpy(frame, binary_data=True)
        outs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in target.outputs]
        body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outputs=outs or None)
        bodies.append((body, json_size))
    return bodies

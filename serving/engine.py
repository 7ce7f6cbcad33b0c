"""ONNX → TensorRT engine, FP16 or INT8, with a dynamic-batch optimization profile (the ``[gpu]`` extra).

The builder settings are written beside the engine as ``<engine>.json`` (:class:`EngineSidecar`), so a profile or a
model repository made from the engine can say how it was built. INT8 uses TensorRT's entropy calibrator
(``IInt8EntropyCalibrator2``) over a folder of images, preprocessed as YOLO-family detectors expect (letterbox to
the input size with grey 114 padding, RGB, CHW, scaled to 0..1); the calibration cache is read when present, so a
rebuild does not recalibrate.

The TensorRT parts import ``tensorrt`` and ``pycuda`` only when a build starts; settings, the sidecar and the
calibration image stream work without them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from gpufleet.contracts.engine_sidecar import EngineSidecar, TensorInfo, sidecar_path
from serving.errors import ServingInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LETTERBOX_FILL = 114  # the grey Ultralytics pads with; calibrating on the serving preprocessing matters for INT8


@dataclass(frozen=True)
class BuildSettings:
    """What ``serving build-engine`` was asked for."""

    onnx_path: Path
    engine_path: Path
    precision: Literal["fp16", "int8"] = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    calibration_images: Path | None = None
    calibration_cache: Path | None = None
    calibration_batch: int = 8
    calibration_max_images: int = 512

    def check(self) -> None:
        if not self.onnx_path.is_file():
            raise ServingInputError(f"{self.onnx_path}: ONNX model not found")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ServingInputError(f"batch profile min={self.min_batch} opt={self.opt_batch} max={self.max_batch}: "
                                    "need 1 <= min <= opt <= max")
        if not self.workspace_gib > 0:
            raise ServingInputError("workspace must be > 0 GiB")
        if self.precision == "int8":
            has_cache = self.calibration_cache is not None and self.calibration_cache.is_file()
            if self.calibration_images is None and not has_cache:
                raise ServingInputError("INT8 needs --calibration-images (or an existing --calibration-cache)")
            if self.calibration_images is not None and not self.calibration_images.is_dir():
                raise ServingInputError(f"{self.calibration_images}: calibration image folder not found")
            if self.calibration_batch < 1 or self.calibration_max_images < self.calibration_batch:
                raise ServingInputError("need calibration batch >= 1 and max images >= calibration batch")


# --- calibration images ------------------------------------------------------------------------------------------

def letterbox(image, size: tuple[int, int]) -> np.ndarray:
    """A PIL image scaled to fit ``size`` (h, w) keeping its aspect, padded, as float32 CHW in 0..1."""
    from PIL import Image

    h, w = size
    rgb = image.convert("RGB")
    scale = min(h / rgb.height, w / rgb.width)
    nh, nw = max(1, round(rgb.height * scale)), max(1, round(rgb.width * scale))
    canvas = Image.new("RGB", (w, h), (LETTERBOX_FILL,) * 3)
    canvas.paste(rgb.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0


class CalibrationBatches:
    """Fixed-size batches of preprocessed images from a folder, in name order, at most ``max_images``.

    The last partial batch is dropped: the calibrator's batch size is fixed, and repeating images would weight them
    twice in the activation histograms.
    """

    def __init__(self, folder: Path | str, input_hw: tuple[int, int], batch_size: int, max_images: int = 512):
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_images]
        if len(self.files) < batch_size:
            raise ServingInputError(f"{self.folder}: {len(self.files)} images, fewer than one calibration batch "
                                    f"of {batch_size}")
        self.input_hw, self.batch_size = input_hw, batch_size

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        for i in range(len(self)):
            chunk = self.files[i * self.batch_size:(i + 1) * self.batch_size]
            arrays = []
            for path in chunk:
                try:
                    with Image.open(path) as img:
                        arrays.append(letterbox(img, self.input_hw))
                except (UnidentifiedImageError, OSError) as exc:
                    raise ServingInputError(f"{path}: not a readable image: {exc}") from None
            yield np.ascontiguousarray(np.stack(arrays))


def _entropy_calibrator(trt, cuda, batches: CalibrationBatches, cache: Path | None):
    """An ``IInt8EntropyCalibrator2`` over ``batches``; defined here because its base class comes from tensorrt."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self._iter = iter(batches)
            shape = (batches.batch_size, 3, *batches.input_hw)
            self._device = cuda.mem_alloc(int(np.prod(shape)) * 4)

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names):
            batch = next(self._iter, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self._device, batch)
            return [int(self._device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache and cache.is_file() else None

        def write_calibration_cache(self, data):
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(bytes(data))

    return EntropyCalibrator()


# --- build -------------------------------------------------------------------------------------------------------

def build_engine(settings: BuildSettings) -> EngineSidecar:
    """Build and serialize the engine, then write its sidecar; both files appear only when the build succeeded."""
    settings.check()
    try:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise ServingInputError(f"build-engine needs the [gpu] extra (tensorrt, pycuda) and a GPU: {exc}") from None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(settings.onnx_path.read_bytes()):
        raise ServingInputError(f"{settings.onnx_path}: TensorRT's ONNX parser: {parser.get_error(0)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise ServingInputError(f"input {tensor.name} {dims}: only the batch dimension may be dynamic")
        profile.set_shape(tensor.name, [settings.min_batch, *dims[1:]], [settings.opt_batch, *dims[1:]],
                          [settings.max_batch, *dims[1:]])
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers without a fast INT8 kernel fall back to FP16, not FP32
    calibration = None
    if settings.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        hw = tuple(inputs[0].shape[2:4])
        batches = (CalibrationBatches(settings.calibration_images, hw, settings.calibration_batch,
                                      settings.calibration_max_images) if settings.calibration_images else None)
        config.int8_calibrator = _entropy_calibrator(trt, cuda, batches, settings.calibration_cache)
        config.set_calibration_profile(profile)
        calibration = {"calibrator": "IInt8EntropyCalibrator2",
                       "images": str(settings.calibration_images or ""),
                       "image_count": len(batches) * batches.batch_size if batches else 0,
                       "cache": str(settings.calibration_cache or "")}

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ServingInputError(f"{settings.onnx_path}: TensorRT failed to build the engine (see its log above)")
    engine_path = settings.engine_path
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))

    def info(t) -> TensorInfo:
        return TensorInfo(name=t.name, dtype=trt.nptype(t.dtype).__name__, shape=[int(d) for d in t.shape])

    sidecar = EngineSidecar(
        engine=engine_path.name, onnx=str(settings.onnx_path),
        onnx_sha256=hashlib.sha256(settings.onnx_path.read_bytes()).hexdigest(), precision=settings.precision,
        batch_profile={"min": settings.min_batch, "opt": settings.opt_batch, "max": settings.max_batch},
        workspace_bytes=int(settings.workspace_gib * 2**30), calibration=calibration,
        inputs=[info(t) for t in inputs], outputs=[info(network.get_output(i)) for i in range(network.num_outputs)],
        tensorrt_version=trt.__version__, device=cuda.Context.get_device().name(),
        built=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    side = sidecar_path(engine_path)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(sidecar.model_dump_json(indent=2) + "\n")
    tmp.replace(engine_path)
    side_tmp.replace(side)
    return sidecar

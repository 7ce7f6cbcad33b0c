"""``serving``: the command line over :mod:`serving` (profile, build-engine, import, repo, upload, local, demo-model).

Every input error ends as one line on stderr and exit status 2; nothing is written unless the whole step succeeded.
"""
from __future__ import annotations

import datetime as _dt
import signal
import sys
import tempfile
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.cli import run_app, stdout_console
from gpufleet.contracts.catalog import check_gpu_type
from gpufleet.contracts.io import check_output_dir, check_output_file
from gpufleet.errors import RunFailure
from gpufleet.net import check_port_free, check_url
from serving.errors import ServingInputError

app = typer.Typer(help="Engines, latency profiles, Triton model repositories and a local Triton.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


class BackendName(str, Enum):
    onnxruntime = "onnxruntime"
    pytorch = "pytorch"
    tensorrt = "tensorrt"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class ImportKind(str, Enum):
    trtexec_times = "trtexec-times"
    trtexec_log = "trtexec-log"
    perf_analyzer = "perf-analyzer"


class DemoName(str, Enum):
    detector = "detector"
    tiny = "tiny"


# The GPU type a profile stands for is matched by the planner against a catalog's: one the catalog does not have is
# refused here, where it is typed, rather than found missing at `planner recommend`.
CatalogOption = Annotated[Optional[Path], typer.Option(help="Instance catalog whose GPU types --gpu may name (as "
                                                       "`planner recommend --catalog` takes it; default: the "
                                                       "embedded one).")]


def _int_list(text: str | None, what: str) -> list[int]:
    if not text:
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ServingInputError(f"{what} {text!r}: expected comma-separated integers") from None
    if any(v < 1 for v in values):
        raise ServingInputError(f"{what} {text!r}: values must be >= 1")
    return values


def _hw(height: int, width: int) -> tuple[int, int]:
    for option, value in (("--height", height), ("--width", width)):
        if value % 32:
            raise ServingInputError(f"{option} {value}: the detector's strides need a multiple of 32")
    return (height, width)


def _iso_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ServingInputError(f"--date {text!r}: expected an ISO date, YYYY-MM-DD") from None


def _model_file(path: Path, suffixes: tuple[str, ...]) -> Path:
    """An existing, non-empty model file of a kind this command takes."""
    if not path.is_file():
        raise ServingInputError(f"{path}: model file not found")
    if path.suffix not in suffixes:
        raise ServingInputError(f"{path}: expected a {' or '.join(suffixes)} file")
    if path.stat().st_size == 0:
        raise ServingInputError(f"{path}: the file is empty")
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises protobuf's DecodeError and its own types
            raise ServingInputError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
        if not model.graph.node:
            raise ServingInputError(f"{path}: not an ONNX model (no graph)")
    return path


# --- demo-model --------------------------------------------------------------------------------------------------

@app.command("demo-model")
def demo_model_cmd(
    name: Annotated[DemoName, typer.Argument(help="detector (YOLOv8n-shaped) or tiny.")],
    output: Annotated[Path, typer.Argument(help="Where to write the .onnx file.")],
    height: Annotated[int, typer.Option(min=32, max=8192, help="Detector input height (multiple of 32).")] = 640,
    width: Annotated[int, typer.Option(min=32, max=8192, help="Detector input width (multiple of 32).")] = 640,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a demo ONNX model generated in code (random weights: for latency work, not for detections)."""
    from serving.demo_models import write_onnx

    check_output_file(output, "ONNX model")
    spec = write_onnx(name.value, output, _hw(height, width), seed)
    print(f"wrote {output}: input {spec.input_name} [N, {', '.join(map(str, spec.input_shape))}], "
          f"output {spec.output_name} [N, {', '.join(map(str, spec.output_shape))}]")


# --- profile -----------------------------------------------------------------------------------------------------

def _backend(backend: BackendName, model_path: Path | None, demo: DemoName | None, device: Device, precision: str,
             hw: tuple[int, int], cuda_graphs: bool, threads: int | None, workdir: Path):
    from serving import backends

    if (model_path is None) == (demo is None):
        raise ServingInputError("give either a model file or --demo")
    if model_path is not None and not model_path.is_file():
        raise ServingInputError(f"{model_path}: model file not found")
    if backend is BackendName.onnxruntime:
        if demo is not None:
            from serving.demo_models import write_onnx
            model_path = workdir / f"{demo.value}.onnx"
            write_onnx(demo.value, model_path, hw)
        return backends.OnnxRuntimeBackend(model_path, device.value, precision, threads)
    if backend is BackendName.pytorch:
        if demo is None:
            raise ServingInputError("the pytorch backend profiles a demo model (--demo); export yours to ONNX or "
                                    "build a TensorRT engine to profile it")
        from serving.demo_models import build_torch, describe
        try:
            module = build_torch(demo.value, hw)
        except ImportError as exc:
            raise ServingInputError(f"torch is not installed: {exc}") from None
        return backends.TorchBackend(module, describe(demo.value, hw).input_shape, device.value, precision,
                                     cuda_graphs)
    if demo is not None:
        raise ServingInputError("the tensorrt backend profiles an engine file; build one with build-engine")
    from gpufleet.contracts.engine_sidecar import read_sidecar
    side = read_sidecar(model_path)
    return backends.TensorRTBackend(model_path, side.precision if side else precision)


def _corun_model(text: str) -> tuple["DemoName | None", "Path | None"]:
    """``--corun``: a demo model's name, or an .onnx file."""
    if text in {d.value for d in DemoName}:
        return DemoName(text), None
    path = Path(text)
    _model_file(path, (".onnx",))
    return None, path


@app.command("profile")
def profile_cmd(
    model_path: Annotated[Optional[Path], typer.Argument(help=".onnx (onnxruntime) or .plan (tensorrt).")] = None,
    gpu: Annotated[str, typer.Option(help="GPU type the profile stands for in the planner's catalog (e.g. L4).")] = ...,
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile JSON to write.")] = ...,
    backend: Annotated[BackendName, typer.Option(help="Inference backend.")] = BackendName.onnxruntime,
    demo: Annotated[Optional[DemoName], typer.Option(help="Profile a demo model instead of a file.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name in the profile (default: file stem or demo name).")] = None,
    device: Annotated[Device, typer.Option(help="cpu or cuda.")] = Device.cpu,
    precision: Annotated[str, typer.Option(help="fp32, fp16, bf16, int8 (engines: read from the sidecar).")] = "fp32",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,2,4,8,16,32",
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per batch size.")] = 20,
    iterations: Annotated[int, typer.Option(min=1, help="Timed calls per batch size.")] = 200,
    cuda_graphs: Annotated[bool, typer.Option(help="pytorch on cuda: replay a captured CUDA graph.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="onnxruntime intra-op threads (default: all cores).")] = None,
    height: Annotated[int, typer.Option(min=32, max=8192, help="Demo detector input height (multiple of 32).")] = 640,
    width: Annotated[int, typer.Option(min=32, max=8192, help="Demo detector input width (multiple of 32).")] = 640,
    instances: Annotated[int, typer.Option(min=1, help="Also measure the speedup of up to this many concurrent model instances (batch 1).")] = 1,
    corun: Annotated[Optional[str], typer.Option(help="Also measure this model running at once on the same device (a demo name or an .onnx file; batch 1): the co-location planner reads it.")] = None,
    catalog: CatalogOption = None,
) -> None:
    """Measure latency per batch size and write the latency profile the planner reads."""
    from serving.measure import measure_profile
    from gpufleet.contracts.profile import write_profile

    check_gpu_type(gpu, catalog)
    sizes = _int_list(batch_sizes, "--batch-sizes")
    if not sizes:
        raise ServingInputError("--batch-sizes: give at least one batch size")
    check_output_file(output, "profile")
    if model_path is not None:
        _model_file(model_path, (".plan", ".engine") if backend is BackendName.tensorrt else (".onnx",))
    other_demo, other_path = _corun_model(corun) if corun is not None else (None, None)
    with tempfile.TemporaryDirectory(prefix="gpufleet-profile-") as tmp:
        runner = _backend(backend, model_path, demo, device, precision, _hw(height, width), cuda_graphs, threads,
                          Path(tmp))
        name = model or (demo.value if demo else model_path.stem)
        table = Table("batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "images/s", title=f"{name} on "
                      f"{runner.device_info().get('name')} ({backend.value}, {runner.precision})")

        def show(row):
            table.add_row(str(row.batch_size), f"{row.mean_ms:.3f}", f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}",
                          f"{row.p99_ms:.3f}", f"{row.throughput_per_s:,.1f}")
            err.print(f"batch {row.batch_size}: p99 {row.p99_ms:.3f} ms", highlight=False)

        prof = measure_profile(runner, model=name, gpu=gpu, batch_sizes=sizes, warmup=warmup,
                               iterations=iterations, on_batch=show)
        if instances > 1:
            from serving.measure import measure_concurrency
            speedup = measure_concurrency(
                lambda: _backend(backend, model_path, demo, device, precision, _hw(height, width), cuda_graphs,
                                 threads, Path(tmp)), instances, iterations=max(iterations // 4, 10))
            err.print(f"concurrency speedup: {speedup}", highlight=False)
            prof = prof.model_copy(update={"concurrency_speedup": speedup})
        if corun is not None:
            from serving.measure import measure_corun
            other = _backend(backend, other_path, other_demo, device, precision, _hw(height, width), cuda_graphs,
                             threads, Path(tmp))
            together = measure_corun(runner, other, iterations=max(iterations // 4, 10))
            other_name = other_demo.value if other_demo else other_path.stem
            err.print(f"co-run speedup with {other_name}: {together}", highlight=False)
            prof = prof.model_copy(update={"corun_speedup": {other_name: together}})
    write_profile(prof, output)
    stdout_console().print(table)
    if prof.origin.device and prof.origin.device.get("kind") != "gpu":
        err.print(f"note: measured on a CPU and labelled {gpu}: fine for exercising the pipeline, not for buying GPUs")
    print(f"wrote {output}")


# --- build-engine ------------------------------------------------------------------------------------------------

class EnginePrecision(str, Enum):
    fp16 = "fp16"
    int8 = "int8"


@app.command("build-engine")
def build_engine_cmd(
    onnx_path: Annotated[Path, typer.Argument(help="ONNX model with a dynamic batch dimension.")],
    engine_path: Annotated[Path, typer.Argument(help="Engine (.plan) to write; settings go to <engine>.json.")],
    precision: Annotated[EnginePrecision, typer.Option(help="fp16, or int8 with calibration.")] = EnginePrecision.fp16,
    min_batch: Annotated[int, typer.Option(min=1, help="Optimization profile: smallest batch.")] = 1,
    opt_batch: Annotated[int, typer.Option(min=1, help="Optimization profile: batch the kernels are tuned for.")] = 8,
    max_batch: Annotated[int, typer.Option(min=1, help="Optimization profile: largest batch (Triton max_batch_size).")] = 32,
    workspace_gib: Annotated[float, typer.Option(help="Builder workspace limit, GiB.")] = 4.0,
    calibration_images: Annotated[Optional[Path], typer.Option(help="INT8: folder of calibration images.")] = None,
    calibration_cache: Annotated[Optional[Path], typer.Option(help="INT8: calibration cache, read if present, "
                                                                  "else written.")] = None,
    calibration_batch: Annotated[int, typer.Option(min=1, help="INT8: images per calibration batch.")] = 8,
    calibration_max_images: Annotated[int, typer.Option(min=1, help="INT8: at most this many images.")] = 512,
) -> None:
    """Build a TensorRT engine from ONNX (needs the gpu extra: tensorrt, pycuda; and an NVIDIA GPU)."""
    from serving.engine import BuildSettings, build_engine, sidecar_path

    side = build_engine(BuildSettings(onnx_path, engine_path, precision.value, min_batch, opt_batch, max_batch,
                                      workspace_gib, calibration_images, calibration_cache, calibration_batch,
                                      calibration_max_images))
    print(f"wrote {engine_path} and {sidecar_path(engine_path)} (TensorRT {side.tensorrt_version} on {side.device})")


# --- import ------------------------------------------------------------------------------------------------------

@app.command("import")
def import_cmd(
    kind: Annotated[ImportKind, typer.Argument(help="trtexec-times, trtexec-log or perf-analyzer.")],
    files: Annotated[list[Path], typer.Argument(help="One file per batch size.")],
    gpu: Annotated[str, typer.Option(help="GPU type the measurements were made on (catalog name, e.g. L4).")] = ...,
    model: Annotated[str, typer.Option(help="Model name in the profile.")] = ...,
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile JSON to write.")] = ...,
    batch_size: Annotated[Optional[list[int]], typer.Option(help="Batch size of each file, in order (trtexec logs: "
                                                                 "read from the log when omitted).")] = None,
    precision: Annotated[str, typer.Option(help="Precision of the engine measured.")] = "fp16",
    backend: Annotated[Optional[str], typer.Option(help="Backend in the profile (default: tensorrt for trtexec, "
                                                        "triton for perf_analyzer).")] = None,
    warmup_ms: Annotated[float, typer.Option(min=0, help="trtexec-times: drop records that started computing earlier.")] = 200.0,
    metric: Annotated[Optional[str], typer.Option(help="trtexec-times: computeMs or latencyMs; trtexec-log: "
                                                       "'GPU Compute Time' or 'Latency'.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="perf-analyzer: the concurrency row to read.")] = 1,
    date: Annotated[Optional[str], typer.Option(help="Measurement date (YYYY-MM-DD) when the files do not carry it.")] = None,
    catalog: CatalogOption = None,
) -> None:
    """Convert trtexec or perf_analyzer output into a latency profile."""
    from serving import importers
    from gpufleet.contracts.profile import write_profile

    check_gpu_type(gpu, catalog)
    sizes = list(batch_size or [])
    date = _iso_date(date)
    check_output_file(output, "profile")
    if any(b < 1 for b in sizes):
        raise ServingInputError(f"--batch-size {min(sizes)}: must be >= 1")
    if sizes and len(sizes) != len(files):
        raise ServingInputError(f"{len(files)} files but {len(sizes)} --batch-size values; give one per file")
    if not sizes and kind is not ImportKind.trtexec_log:
        raise ServingInputError(f"{kind.value}: give --batch-size for each file")
    items = []
    for i, path in enumerate(files):
        bs = sizes[i] if sizes else None
        if kind is ImportKind.trtexec_times:
            items.append(importers.read_trtexec_times(path, bs, warmup_ms, metric or "computeMs"))
        elif kind is ImportKind.trtexec_log:
            items.append(importers.read_trtexec_log(path, bs, metric or "GPU Compute Time"))
        else:
            items.append(importers.read_perf_analyzer_csv(path, bs, concurrency))
    prof = importers.profile_from_imports(
        items, model=model, gpu=gpu, precision=precision,
        backend=backend or ("triton" if kind is ImportKind.perf_analyzer else "tensorrt"),
        tool=f"gpufleet serving import {kind.value}", date=date)
    write_profile(prof, output)
    print(f"wrote {output}: batch sizes {', '.join(str(b) for b in prof.batch_sizes)}")


# --- repo / upload -----------------------------------------------------------------------------------------------

DEFAULT_MAX_BATCH_SIZE = 8  # without --plan: Triton configs gpufleet writes batch up to 8 unless told


def _plan_model(plan: Path, gpu: str | None, name: str | None) -> str:
    """The model a repository made from ``plan`` holds: the plan's model on that GPU, which is the name the stack's
    pods serve it by (their repository is <env>/<model>/<gpu>, their health check /v2/models/<model>/...). An
    explicit ``name`` must be one the plan serves there; a mix with several models on the GPU needs one."""
    from gpufleet.contracts.plan import read_plan

    deps = read_plan(plan).deployments
    gpus = sorted({d.gpu for d in deps})
    if gpu is None and len(gpus) == 1:
        gpu = gpus[0]
    models = sorted({d.model for d in deps if d.gpu == gpu})
    if not models:
        raise ServingInputError(f"{plan}: no deployment for GPU {gpu!r} (plan has {', '.join(gpus) or 'none'}); "
                                "pick one with --gpu")
    if name is not None and name not in models:
        raise ServingInputError(f"{plan}: serves {', '.join(models)} on {gpu}, not {name!r}: the stack's pods "
                                "ask for the plan's model by its name (drop --name, or plan that model)")
    if name is None and len(models) > 1:
        raise ServingInputError(f"{plan}: serves {', '.join(models)} on {gpu}; pick one with --name")
    return name or models[0]


def _batching(plan: Path | None, gpu: str | None, max_batch_size: int | None, max_queue_delay_us: int | None,
              preferred: str | None, instances: int | None, kind: str | None, model: str | None = None):
    from pydantic import ValidationError

    from gpufleet.contracts.io import first_error
    from gpufleet.contracts.plan import read_plan
    from gpufleet.contracts.triton import BatchingConfig

    if plan is not None:
        p = read_plan(plan)
        deps = {d.gpu: d for d in p.deployments if model is None or d.model == model}
        if gpu is None and len(deps) == 1:
            gpu = next(iter(deps))
        if gpu not in deps:
            raise ServingInputError(f"{plan}: no deployment for GPU {gpu!r} (plan has {', '.join(deps) or 'none'}); "
                                    "pick one with --gpu")
        if any(v is not None for v in (max_batch_size, max_queue_delay_us, preferred, instances)):
            raise ServingInputError("--plan sets the batching; drop --max-batch-size/--max-queue-delay-us/"
                                    "--preferred-batch-sizes/--instances")
        base = deps[gpu].triton
        return base.with_kind(kind) if kind else base
    for option, value in (("--max-batch-size", max_batch_size), ("--instances", instances)):
        if value is not None and value < 1:
            raise ServingInputError(f"{option} must be >= 1, got {value}")
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise ServingInputError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
    try:
        return BatchingConfig(
            max_batch_size=DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size,
            max_queue_delay_microseconds=0 if max_queue_delay_us is None else max_queue_delay_us,
            preferred_batch_sizes=tuple(_int_list(preferred, "--preferred-batch-sizes")),
            instance_count=1 if instances is None else instances, instance_kind=kind or "KIND_GPU")
    except ValidationError as exc:
        raise ServingInputError(first_error("batching options", exc)) from None


def _model_spec(model_file: Path, name: str, platform: str, batching, warmup: str):
    from serving.triton_config import ModelSpec, TensorSpec, onnx_tensors

    if not model_file.is_file():
        raise ServingInputError(f"{model_file}: model file not found")
    if model_file.suffix == ".onnx":
        try:
            inputs, outputs = onnx_tensors(model_file)
        except Exception as exc:  # onnx raises its own DecodeError/ValidationError types
            raise ServingInputError(f"{model_file}: not a readable ONNX model: {exc}") from None
    else:
        from gpufleet.contracts.engine_sidecar import read_sidecar
        side = read_sidecar(model_file)
        if side is None:
            raise ServingInputError(f"{model_file}: no <engine>.json sidecar to read the tensors from "
                                    "(build the engine with serving build-engine)")
        if batching.max_batch_size > side.batch_profile["max"]:
            raise ServingInputError(f"max_batch_size {batching.max_batch_size} exceeds the engine's optimization "
                                    f"profile max {side.batch_profile['max']}")
        inputs = tuple(TensorSpec(t.name, t.dtype, tuple(t.shape[1:])) for t in side.inputs)
        outputs = tuple(TensorSpec(t.name, t.dtype, tuple(t.shape[1:])) for t in side.outputs)
    return ModelSpec(name, platform, inputs, outputs, batching,
                     warmup_batch_sizes=tuple(sorted({min(b, batching.max_batch_size)
                                                      for b in _int_list(warmup, "--warmup-batch-sizes")})))


@app.command("repo")
def repo_cmd(
    model_file: Annotated[Path, typer.Argument(help=".onnx (onnxruntime_onnx) or .plan (tensorrt_plan).")],
    repository: Annotated[Path, typer.Argument(help="Model repository folder to write into.")],
    name: Annotated[Optional[str], typer.Option(help="Model name in the repository (default: with --plan, the "
                                                "plan's model, the name the stack serves it by; else the file "
                                                "stem).")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="Plan JSON whose Triton settings to use.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="The plan deployment (GPU type) to take settings from.")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(min=1, help="Without --plan: max_batch_size (default 8).")] = None,
    max_queue_delay_us: Annotated[Optional[int], typer.Option(min=0, help="Without --plan: queue delay, µs (default 0).")] = None,
    preferred_batch_sizes: Annotated[Optional[str], typer.Option(help="Without --plan: e.g. 4,8.")] = None,
    instances: Annotated[Optional[int], typer.Option(min=1, help="Without --plan: instance_group count (default 1).")] = None,
    version: Annotated[int, typer.Option(min=1, help="Model version folder.")] = 1,
    warmup_batch_sizes: Annotated[str, typer.Option(help="Warm-up batch sizes, comma-separated.")] = "1",
    upload: Annotated[Optional[str], typer.Option(help="Then upload the repository to s3://bucket/prefix.")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint (e.g. a local moto_server).")] = None,
) -> None:
    """Lay out <repository>/<name>/config.pbtxt and <name>/<version>/model.*, from a plan's Triton settings.

    Into a repository a local Triton serves (``serving local --repository``; its config says ``backend: "python"``),
    the version goes in the local form, which that Triton can load: the ONNX file beside the ONNX Runtime
    ``model.py``, with the served batching unless options or a plan give new batching."""
    from serving.repository import local_batching, write_model
    from serving.triton_config import render_config

    platforms = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan", ".engine": "tensorrt_plan"}
    _model_file(model_file, tuple(platforms))
    check_output_dir(repository, "model repository")
    if upload:
        _check_s3(upload, endpoint_url)
    model = _plan_model(plan, gpu, name) if plan is not None else name or model_file.stem
    served = local_batching(repository, model)
    if served is None:
        platform = platforms[model_file.suffix]
        batching = _batching(plan, gpu, max_batch_size, max_queue_delay_us, preferred_batch_sizes, instances, None,
                             model if plan is not None else None)
    else:
        if model_file.suffix != ".onnx":
            raise ServingInputError(f"{repository / model}: a local Triton's model (Python backend, ONNX Runtime): "
                                    "publish an .onnx file into it")
        if upload:
            raise ServingInputError(f"{repository / model}: a local Triton's model (Python backend), not one for "
                                    "the stack; write a repository for upload without serving local")
        platform = "python"
        options = (plan, max_batch_size, max_queue_delay_us, preferred_batch_sizes, instances)
        batching = (_batching(plan, gpu, max_batch_size, max_queue_delay_us, preferred_batch_sizes, instances,
                              "KIND_CPU", model if plan is not None else None)
                    if any(v is not None for v in options) else served)
    spec = _model_spec(model_file, model, platform, batching, warmup_batch_sizes)
    if plan is not None and name is None and model_file.stem != model:
        # The plan names the model (the name the stack serves); a file named for another one may be the wrong file.
        err.print(f"note: {model_file} goes in as {model!r}, the model the plan serves on its GPU; if that is "
                  f"this file, --name {model} says so", highlight=False, soft_wrap=True)
    entry = write_model(repository, spec, model_file, version)
    print(render_config(spec), end="")
    print(f"wrote {entry.config_path.parent}"
          + (" (the local Triton's form: Python backend, ONNX Runtime)" if served is not None else ""))
    if upload:
        upload_cmd(repository, upload, endpoint_url)


@app.command("upload")
def upload_cmd(
    repository: Annotated[Path, typer.Argument(help="Model repository folder.")],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix")],
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint (e.g. a local moto_server).")] = None,
) -> None:
    """Upload a model repository to S3 (configs last, so a polling Triton never sees a config without its model)."""
    import boto3

    from serving.repository import upload_repository

    _check_s3(url, endpoint_url)

    keys = upload_repository(repository, url, boto3.client("s3", endpoint_url=endpoint_url) if endpoint_url else None)
    print(f"uploaded {len(keys)} files to {url}")


def _check_s3(url: str, endpoint_url: str | None) -> None:
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ServingInputError(f"{url!r}: expected s3://bucket/prefix")
    if endpoint_url is not None:
        check_url(endpoint_url, "--endpoint-url")


# --- local -------------------------------------------------------------------------------------------------------

@app.command("local")
def local_cmd(
    model_file: Annotated[Optional[Path], typer.Argument(help="ONNX model to serve.")] = None,
    demo: Annotated[Optional[DemoName], typer.Option(help="Serve a demo model instead of a file.")] = None,
    standin: Annotated[Optional[list[Path]], typer.Option(help="Serve a GPU stand-in instead: a model that sleeps "
                                                          "each batch's device time, drawn from this latency profile "
                                                          "(Triton's batcher, queue and HTTP path stay real; the CPU "
                                                          "stays free). Repeat to serve several models on one "
                                                          "stand-in GPU: their batches take turns on it.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name (default: file stem, demo name, or the profile's model).")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="Plan JSON whose Triton settings to use.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="The plan deployment (GPU type) to take settings from.")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(min=1, help="Without --plan: max_batch_size (default 8).")] = None,
    max_queue_delay_us: Annotated[Optional[int], typer.Option(min=0, help="Without --plan: queue delay, µs (default 0).")] = None,
    preferred_batch_sizes: Annotated[Optional[str], typer.Option(help="Without --plan: e.g. 4,8.")] = None,
    instances: Annotated[Optional[int], typer.Option(min=1, help="Without --plan: model instances (default 1).")] = None,
    http_port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port on 127.0.0.1.")] = 8001,
    metrics_port: Annotated[int, typer.Option(min=1, max=65535, help="Prometheus metrics port on 127.0.0.1.")] = 8002,
    repository: Annotated[Optional[Path], typer.Option(help="Write the model repository here (default: a "
                                                          "temporary folder).")] = None,
    height: Annotated[int, typer.Option(min=32, max=8192, help="Demo detector input height (multiple of 32).")] = 640,
    width: Annotated[int, typer.Option(min=32, max=8192, help="Demo detector input width (multiple of 32).")] = 640,
    log: Annotated[Optional[Path], typer.Option(help="Keep tritonserver's log in this file (default: none kept).")] = None,
    poll_s: Annotated[Optional[int], typer.Option("--poll-s", min=1, help="Poll the repository every N seconds and "
                                                  "load new versions as they appear (hot reload; with --repository)."
                                                  )] = None,
) -> None:
    """Run a real Triton Inference Server on loopback (CPU: ONNX Runtime, or a GPU stand-in) until Ctrl-C or SIGTERM."""
    from serving.local import LocalTriton, Ports
    from serving.repository import write_model

    standin = standin or None
    if sum(x is not None for x in (model_file, demo, standin)) != 1:
        raise ServingInputError("give one of: an ONNX file, --demo, --standin PROFILE")
    if len({http_port, grpc_port, metrics_port}) < 3:
        raise ServingInputError(f"--http-port {http_port}, --grpc-port {grpc_port} and --metrics-port {metrics_port} "
                                "must differ: each endpoint needs its own port")
    # Before any work: a port another server holds would have that server answer in our place.
    for option, port in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        check_port_free(port, option)
    if model_file is not None:
        _model_file(model_file, (".onnx",))
    if repository is not None:
        check_output_dir(repository, "model repository")
    if poll_s is not None and repository is None:
        raise ServingInputError("--poll-s watches a repository you publish into: give --repository")
    if log is not None:
        check_output_file(log, "Triton log")
    stand_ins = []
    if standin is not None:
        from gpufleet.contracts.profile import read_profile
        from serving.standin import StandIn
        if name is not None and len(standin) > 1:
            raise ServingInputError("--name names one model; several stand-ins take their profiles' model names")
        profiles = [read_profile(p) for p in standin]
        stand_ins = [StandIn(name or p.model, p) for p in profiles]
        if len({s.name for s in stand_ins}) < len(stand_ins):
            raise ServingInputError("two --standin profiles are for the same model; each model is served once")
    with tempfile.TemporaryDirectory(prefix="gpufleet-local-") as tmp:
        repo = repository or Path(tmp) / "repository"
        batching = _batching(plan, gpu, max_batch_size, max_queue_delay_us, preferred_batch_sizes, instances, "KIND_CPU")
        if stand_ins:
            lock = Path(tmp) / "device.lock" if len(stand_ins) > 1 else None
            for s in stand_ins:
                s.write(repo, batching, device_lock=lock)
            spec = stand_ins[0].spec(batching)
        else:
            if demo is not None:
                from serving.demo_models import write_onnx
                model_file = Path(tmp) / f"{demo.value}.onnx"
                write_onnx(demo.value, model_file, _hw(height, width))
            spec = _model_spec(model_file, name or model_file.stem, "python", batching, "1")
            write_model(repo, spec, model_file)
        # Polling, a model error (a bad new version) must leave the served one in place, not stop the server.
        polling = [] if poll_s is None else ["--model-control-mode=poll", f"--repository-poll-secs={poll_s}",
                                             "--exit-on-error=false"]
        server = LocalTriton(repo, Ports(http_port, grpc_port, metrics_port), log_path=log,
                             extra_args=["--exit-timeout-secs=10", *polling])
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
        served = ", ".join(repr(s.name) for s in stand_ins) if len(stand_ins) > 1 else repr(spec.name)
        err.print(f"Triton ready: model {served}; HTTP {server.http_url}, gRPC {server.grpc_url}, "
                  f"metrics {server.metrics_url}{f'; log {log}' if log else ''}. Ctrl-C stops it.", highlight=False)
        while not stop.is_set() and server.running:
            stop.wait(0.5)
        code = server.stop()
        if code:
            raise RunFailure(f"Triton stopped with exit status {code}: {server.exit_reason}")
        err.print(f"Triton stopped (exit status {code})", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one stderr line and exit 2 for bad input, 1 for a failure at run time."""
    return run_app(app, argv, "serving")


if __name__ == "__main__":
    sys.exit(main())

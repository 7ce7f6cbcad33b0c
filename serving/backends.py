"""Inference backends that time one batch at a time: ONNX Runtime, PyTorch and TensorRT.

Each backend answers one question, :meth:`Backend.time_batches`: the device time of ``iterations`` back-to-back
inference calls at one batch size, in milliseconds, after ``warmup`` untimed calls. Inputs are random and allocated
once per batch size, on the device where the backend can hold them there, so the figures are the model's execution
time and not the caller's data preparation. GPU backends time with CUDA events on the stream that runs the model;
CPU backends with ``time.perf_counter_ns``.
"""
from __future__ import annotations

import platform
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from serving.errors import ServingInputError


class BackendUnavailable(ServingInputError):
    """The backend's library or device is missing here; the message says which."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_device_info() -> dict[str, str | int | float]:
    import os
    return {"kind": "cpu", "name": _cpu_name(), "logical_cpus": os.cpu_count() or 0,
            "platform": platform.platform()}


class Backend(ABC):
    """One loaded model on one device."""

    name: str  # the profile's ``backend`` field
    precision: str

    @abstractmethod
    def time_batches(self, batch_size: int, warmup: int, iterations: int) -> np.ndarray:
        """Milliseconds per call for ``iterations`` timed calls at ``batch_size``."""

    @abstractmethod
    def device_info(self) -> dict[str, str | int | float]:
        """What ran it: device kind and name, library versions; recorded in the profile's origin."""


def _random_input(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32).astype(dtype)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU, or on the CUDA execution provider where it is present and asked for.

    On CUDA the input and output are bound to device memory (I/O binding), so host copies are not timed, matching
    Triton's ONNX Runtime backend when the request data is already on the server.
    """

    name = "onnxruntime"

    def __init__(self, model_path: Path | str, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed: {exc}") from None
        self._ort = ort
        self.precision = precision
        self.device = device
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ServingInputError(f"onnxruntime device {device!r}: choose cpu or cuda")
        self.session = ort.InferenceSession(str(model_path), opts, providers=providers)
        (inp,) = self.session.get_inputs()[:1]
        self.input_name = inp.name
        self.sample_shape = tuple(int(d) for d in inp.shape[1:])
        if any(not isinstance(d, int) for d in inp.shape[1:]):
            raise ServingInputError(f"{model_path}: input {inp.name} has symbolic non-batch dims {inp.shape}")
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    def time_batches(self, batch_size, warmup, iterations):
        x = _random_input((batch_size, *self.sample_shape), self._dtype)
        if self.device == "cuda":
            return self._time_cuda(x, warmup, iterations)
        feed = {self.input_name: x}
        for _ in range(warmup):
            self.session.run(self.output_names, feed)
        out = np.empty(iterations)
        for i in range(iterations):
            t0 = time.perf_counter_ns()
            self.session.run(self.output_names, feed)
            out[i] = (time.perf_counter_ns() - t0) / 1e6
        return out

    def _time_cuda(self, x, warmup, iterations):
        ort = self._ort
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        for _ in range(warmup):
            self.session.run_with_iobinding(binding)
        out = np.empty(iterations)
        for i in range(iterations):
            # run_with_iobinding returns after the CUDA stream is synchronised, so wall time is device time plus
            # launch overhead, which Triton pays too.
            t0 = time.perf_counter_ns()
            self.session.run_with_iobinding(binding)
            out[i] = (time.perf_counter_ns() - t0) / 1e6
        return out

    def device_info(self):
        info = cpu_device_info() if self.device == "cpu" else {"kind": "gpu", "name": "cuda:0"}
        info.update({"onnxruntime": self._ort.__version__, "provider": self.session.get_providers()[0]})
        return info


class TorchBackend(Backend):
    """PyTorch eager, on the CPU or on CUDA with fp16/bf16 and optionally CUDA graphs.

    This is the path for a GPU machine without TensorRT. CUDA graphs remove the per-kernel launch cost, which is what
    a TensorRT engine also removes, so ``cuda_graphs=True`` is the closer stand-in for an engine's latency.
    """

    name = "pytorch"

    def __init__(self, module, sample_shape: tuple[int, ...], device: str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False):
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"torch is not installed: {exc}") from None
        self.torch = torch
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device here")
        if device not in ("cpu", "cuda"):
            raise ServingInputError(f"torch device {device!r}: choose cpu or cuda")
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if precision not in dtypes:
            raise ServingInputError(f"torch precision {precision!r}: choose fp32, fp16 or bf16")
        if device == "cpu" and precision == "fp16":
            raise ServingInputError("fp16 on the CPU is not a serving configuration; use fp32 or bf16")
        if cuda_graphs and device != "cuda":
            raise ServingInputError("CUDA graphs need --device cuda")
        self.device, self.precision, self.cuda_graphs = device, precision, cuda_graphs
        self.dtype = dtypes[precision]
        self.module = module.to(device=device, dtype=self.dtype).eval()
        self.sample_shape = tuple(sample_shape)

    def time_batches(self, batch_size, warmup, iterations):
        torch = self.torch
        x = torch.rand((batch_size, *self.sample_shape), device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            if self.device == "cpu":
                for _ in range(warmup):
                    self.module(x)
                out = np.empty(iterations)
                for i in range(iterations):
                    t0 = time.perf_counter_ns()
                    self.module(x)
                    out[i] = (time.perf_counter_ns() - t0) / 1e6
                return out
            call = self._graph_call(x, warmup) if self.cuda_graphs else (lambda: self.module(x))
            for _ in range(warmup):
                call()
            torch.cuda.synchronize()
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
            for s, e in zip(starts, ends):
                s.record()
                call()
                e.record()
            torch.cuda.synchronize()
            return np.array([s.elapsed_time(e) for s, e in zip(starts, ends)])

    def _graph_call(self, x, warmup):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture needs the allocator warmed up off the default stream
            for _ in range(max(3, warmup)):
                self.module(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.module(x)
        return graph.replay

    def device_info(self):
        torch = self.torch
        info: dict[str, str | int | float] = {"torch": torch.__version__, "cuda_graphs": str(self.cuda_graphs).lower()}
        if self.device == "cuda":
            props = torch.cuda.get_device_properties(0)
            info.update({"kind": "gpu", "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                         "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda or ""})
        else:
            info.update(cpu_device_info())
            info["torch_threads"] = torch.get_num_threads()
        return info


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (``.plan``) run with the TensorRT 10 tensor API and pycuda, timed with CUDA events.

    The ``[gpu]`` extra installs what it needs. The engine must have a dynamic batch dimension whose optimization
    profile admits each batch size asked for; other inputs take the profile's shapes.
    """

    name = "tensorrt"

    def __init__(self, engine_path: Path | str, precision: str = "fp16"):
        try:
            import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(f"TensorRT backend needs the [gpu] extra (tensorrt, pycuda): {exc}") from None
        self.trt, self.cuda, self.precision = trt, cuda, precision
        if not Path(engine_path).is_file():
            raise ServingInputError(f"{engine_path}: engine file not found")
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ServingInputError(f"{engine_path}: TensorRT could not deserialize the engine (built by another version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def time_batches(self, batch_size, warmup, iterations):
        trt, cuda = self.trt, self.cuda
        stream = cuda.Stream()
        buffers = []
        for name in self.inputs:
            shape = list(self.engine.get_tensor_profile_shape(name, 0)[1])
            shape[0] = batch_size
            self.context.set_input_shape(name, shape)
        for name in self.inputs + self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            host = _random_input(shape, dtype)
            dev = cuda.mem_alloc(host.nbytes)
            if name in self.inputs:
                cuda.memcpy_htod(dev, host)
            buffers.append(dev)
            self.context.set_tensor_address(name, int(dev))
        for _ in range(warmup):
            self.context.execute_async_v3(stream.handle)
        stream.synchronize()
        events = [(cuda.Event(), cuda.Event()) for _ in range(iterations)]
        for start, end in events:
            start.record(stream)
            self.context.execute_async_v3(stream.handle)
            end.record(stream)
        stream.synchronize()
        out = np.array([end.time_since(start) for start, end in events])
        for dev in buffers:
            dev.free()
        return out

    def device_info(self):
        dev = self.cuda.Context.get_device()
        major, minor = dev.compute_capability()
        return {"kind": "gpu", "name": dev.name(), "compute_capability": f"{major}.{minor}",
                "memory_gib": round(dev.total_memory() / 2**30, 1), "tensorrt": self.trt.__version__}

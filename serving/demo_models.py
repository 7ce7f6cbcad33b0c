"""Demo models generated in code, with random weights and no download.

Two architectures, each written once against :class:`Emitter` and emitted either as an ONNX graph
(:class:`OnnxEmitter`) or run eagerly in PyTorch (:class:`TorchEmitter`), so the ONNX file and the PyTorch module
compute the same function with the same weights:

- ``detector``: the YOLOv8n layer graph (Conv+SiLU, C2f, SPPF, PAN neck, decoupled head with DFL box decoding),
  input ``images`` ``[N, 3, H, W]``, output ``output0`` ``[N, 84, anchors]`` as an Ultralytics export has it.
  640×640 gives 8,400 anchors; 1280×736 (a 1280×720 camera frame letterboxed to a multiple of 32) gives 18,400.
- ``tiny``: two convolutions, global pooling and a linear layer on ``[N, 3, 32, 32]``, for fast tests.

Random weights are fine for latency work: the cost of a dense convolutional network does not depend on the values
of its weights. They are not fine for anything that reads the detections.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.errors import ServingInputError

OPSET = 17
NUM_CLASSES = 80
REG_MAX = 16  # DFL bins per box side, as in YOLOv8


@dataclass(frozen=True)
class DemoModel:
    """What a caller needs to feed and read a demo model."""

    name: str
    input_name: str
    input_shape: tuple[int, int, int]  # per sample, without the batch dimension
    output_name: str
    output_shape: tuple[int, ...]


class Weights:
    """Deterministic weights drawn in call order, so both emitters see the same numbers."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def conv(self, c_out: int, c_in: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        # He initialisation keeps activations from exploding or vanishing through 60-odd layers; the values do not
        # matter for latency but inf/NaN would slow some kernels down.
        fan_in = c_in * k * k
        w = self._rng.standard_normal((c_out, c_in, k, k)).astype(np.float32) * np.float32(np.sqrt(1.0 / fan_in))
        b = (self._rng.standard_normal(c_out) * 0.01).astype(np.float32)
        return w, b

    def linear(self, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        w = self._rng.standard_normal((n_out, n_in)).astype(np.float32) * np.float32(np.sqrt(1.0 / n_in))
        return w, np.zeros(n_out, np.float32)


class Emitter(Protocol):
    """The operations the architectures are written in. ``T`` is a tensor handle of the emitter."""

    def channels(self, x: Any) -> int: ...
    def conv(self, x: Any, c_out: int, k: int = 1, s: int = 1, act: bool = True) -> Any: ...
    def split(self, x: Any, sizes: list[int], axis: int = 1) -> list[Any]: ...
    def concat(self, xs: list[Any], axis: int = 1) -> Any: ...
    def maxpool(self, x: Any, k: int) -> Any: ...
    def upsample2(self, x: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def const(self, value: np.ndarray) -> Any: ...
    def sigmoid(self, x: Any) -> Any: ...
    def softmax(self, x: Any, axis: int) -> Any: ...
    def reshape(self, x: Any, shape: list[int]) -> Any: ...
    def transpose(self, x: Any, perm: list[int]) -> Any: ...
    def global_pool_linear(self, x: Any, n_out: int) -> Any: ...
    def conv_fixed(self, x: Any, weight: Any) -> Any: ...


# --- architectures -----------------------------------------------------------------------------------------------

def _c2f(e: Emitter, x, c_out: int, n: int, shortcut: bool):
    c = c_out // 2
    y = e.split(e.conv(x, 2 * c, 1), [c, c])
    for _ in range(n):
        h = e.conv(e.conv(y[-1], c, 3), c, 3)
        y.append(e.add(y[-1], h) if shortcut else h)
    return e.conv(e.concat(y), c_out, 1)


def _sppf(e: Emitter, x, c_out: int):
    x = e.conv(x, e.channels(x) // 2, 1)
    y1 = e.maxpool(x, 5)
    y2 = e.maxpool(y1, 5)
    y3 = e.maxpool(y2, 5)
    return e.conv(e.concat([x, y1, y2, y3]), c_out, 1)


def _anchors(hw: tuple[int, int], strides=(8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    points, stride_col = [], []
    for s in strides:
        h, w = hw[0] // s, hw[1] // s
        sy, sx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack([sx.ravel(), sy.ravel()], 0))
        stride_col.append(np.full(h * w, s))
    return (np.concatenate(points, 1)[None].astype(np.float32),
            np.concatenate(stride_col)[None, None].astype(np.float32))


def detector(e: Emitter, images, hw: tuple[int, int]):
    """YOLOv8n: widths 16..256, C2f depths 1,2,2,1; the Ultralytics ``yolov8.yaml`` graph at scale ``n``."""
    x = e.conv(images, 16, 3, 2)
    x = _c2f(e, e.conv(x, 32, 3, 2), 32, 1, True)
    p3 = _c2f(e, e.conv(x, 64, 3, 2), 64, 2, True)
    p4 = _c2f(e, e.conv(p3, 128, 3, 2), 128, 2, True)
    p5 = _sppf(e, _c2f(e, e.conv(p4, 256, 3, 2), 256, 1, True), 256)
    n4 = _c2f(e, e.concat([e.upsample2(p5), p4]), 128, 1, False)
    n3 = _c2f(e, e.concat([e.upsample2(n4), p3]), 64, 1, False)
    n4 = _c2f(e, e.concat([e.conv(n3, 64, 3, 2), n4]), 128, 1, False)
    n5 = _c2f(e, e.concat([e.conv(n4, 128, 3, 2), p5]), 256, 1, False)

    c_box, c_cls = max(16, 64 // 4, REG_MAX * 4), max(64, min(NUM_CLASSES, 100))
    boxes, scores = [], []
    for level in (n3, n4, n5):
        b = e.conv(e.conv(e.conv(level, c_box, 3), c_box, 3), 4 * REG_MAX, 1, act=False)
        c = e.conv(e.conv(e.conv(level, c_cls, 3), c_cls, 3), NUM_CLASSES, 1, act=False)
        boxes.append(e.reshape(b, [0, 4 * REG_MAX, -1]))
        scores.append(e.reshape(c, [0, NUM_CLASSES, -1]))
    box = e.concat(boxes, 2)

    # Distribution focal loss decoding: expected value of a softmax over REG_MAX bins per box side.
    dist = e.softmax(e.transpose(e.reshape(box, [0, 4, REG_MAX, -1]), [0, 2, 1, 3]), 1)
    bins = e.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1))
    dist = e.reshape(e.conv_fixed(dist, bins), [0, 4, -1])
    anchor, stride = _anchors(hw)
    lt, rb = e.split(dist, [2, 2])
    a = e.const(anchor)
    x1y1, x2y2 = e.sub(a, lt), e.add(a, rb)
    centre = e.mul(e.add(x1y1, x2y2), e.const(np.float32(0.5).reshape(1, 1, 1)))
    xywh = e.mul(e.concat([centre, e.sub(x2y2, x1y1)]), e.const(stride))
    return e.concat([xywh, e.sigmoid(e.concat(scores, 2))])


def tiny(e: Emitter, x):
    x = e.conv(e.conv(x, 8, 3, 2), 16, 3, 2)
    return e.global_pool_linear(x, 10)


# --- emitters ----------------------------------------------------------------------------------------------------

class OnnxEmitter:
    """Builds an ONNX graph; tensor handles are value names."""

    def __init__(self, weights: Weights):
        import onnx  # noqa: F401  (fail early with ImportError when onnx is missing)
        self.w = weights
        self.nodes: list = []
        self.inits: list = []
        self._ch: dict[str, int] = {}
        self._n = 0

    def _name(self, op: str) -> str:
        self._n += 1
        return f"{op.lower()}_{self._n}"

    def _node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        from onnx import helper
        base = self._name(op)
        outs = [f"{base}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=base, **attrs))
        return outs

    def _init(self, value: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def channels(self, x):
        return self._ch[x]

    def _set(self, x: str, ch: int | None) -> str:
        if ch is not None:
            self._ch[x] = ch
        return x

    def conv(self, x, c_out, k=1, s=1, act=True):
        w, b = self.w.conv(c_out, self._ch[x], k)
        (y,) = self._node("Conv", [x, self._init(w, "w"), self._init(b, "b")], kernel_shape=[k, k],
                          strides=[s, s], pads=[k // 2] * 4)
        if act:
            (y,) = self._node("Mul", [y, self._node("Sigmoid", [y])[0]])
        return self._set(y, c_out)

    def conv_fixed(self, x, weight):
        (y,) = self._node("Conv", [x, weight])
        return y

    def split(self, x, sizes, axis=1):
        outs = self._node("Split", [x, self._init(np.array(sizes, np.int64), "split")], n_out=len(sizes), axis=axis)
        return [self._set(o, s if axis == 1 else self._ch.get(x)) for o, s in zip(outs, sizes)]

    def concat(self, xs, axis=1):
        (y,) = self._node("Concat", list(xs), axis=axis)
        ch = sum(self._ch.get(x, 0) for x in xs) if axis == 1 else self._ch.get(xs[0])
        return self._set(y, ch)

    def maxpool(self, x, k):
        (y,) = self._node("MaxPool", [x], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
        return self._set(y, self._ch[x])

    def upsample2(self, x):
        scales = self._init(np.array([1, 1, 2, 2], np.float32), "scales")
        (y,) = self._node("Resize", [x, "", scales], mode="nearest")
        return self._set(y, self._ch[x])

    def _binary(self, op, a, b):
        (y,) = self._node(op, [a, b])
        return self._set(y, self._ch.get(a, self._ch.get(b)))

    def add(self, a, b):
        return self._binary("Add", a, b)

    def sub(self, a, b):
        return self._binary("Sub", a, b)

    def mul(self, a, b):
        return self._binary("Mul", a, b)

    def const(self, value):
        return self._init(np.asarray(value, np.float32), "const")

    def sigmoid(self, x):
        return self._set(self._node("Sigmoid", [x])[0], self._ch.get(x))

    def softmax(self, x, axis):
        return self._node("Softmax", [x], axis=axis)[0]

    def reshape(self, x, shape):
        (y,) = self._node("Reshape", [x, self._init(np.array(shape, np.int64), "shape")])
        return self._set(y, shape[1] if len(shape) > 1 and shape[1] > 0 else None)

    def transpose(self, x, perm):
        return self._node("Transpose", [x], perm=perm)[0]

    def global_pool_linear(self, x, n_out):
        w, b = self.w.linear(n_out, self._ch[x])
        (p,) = self._node("GlobalAveragePool", [x])
        (f,) = self._node("Flatten", [p], axis=1)
        (y,) = self._node("Gemm", [f, self._init(w, "fc_w"), self._init(b, "fc_b")], transB=1)
        return self._set(y, n_out)


class TorchEmitter:
    """Runs the architecture eagerly on torch tensors, taking weights from a list in the order they were drawn."""

    def __init__(self, params: list):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F
        self.params = params
        self._i = 0

    def _next(self):
        p = self.params[self._i]
        self._i += 1
        return p

    def channels(self, x):
        return x.shape[1]

    def conv(self, x, c_out, k=1, s=1, act=True):
        w, b = self._next(), self._next()
        y = self.F.conv2d(x, w, b, stride=s, padding=k // 2)
        return y * self.torch.sigmoid(y) if act else y

    def conv_fixed(self, x, weight):
        return self.F.conv2d(x, weight)

    def split(self, x, sizes, axis=1):
        return list(self.torch.split(x, sizes, dim=axis))

    def concat(self, xs, axis=1):
        return self.torch.cat(list(xs), dim=axis)

    def maxpool(self, x, k):
        return self.F.max_pool2d(x, k, 1, k // 2)

    def upsample2(self, x):
        return self.F.interpolate(x, scale_factor=2.0, mode="nearest")

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def const(self, value):
        return self._next()

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def softmax(self, x, axis):
        return self.torch.softmax(x, dim=axis)

    def reshape(self, x, shape):
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])

    def transpose(self, x, perm):
        return x.permute(*perm)

    def global_pool_linear(self, x, n_out):
        w, b = self._next(), self._next()
        return self.F.linear(x.mean(dim=(2, 3)), w, b)


# --- public entry points -----------------------------------------------------------------------------------------

def _spec(name: str, hw: tuple[int, int]) -> tuple[DemoModel, Any]:
    if name == "detector":
        if hw[0] % 32 or hw[1] % 32:
            raise ServingInputError(f"detector input {hw[0]}x{hw[1]}: height and width must be multiples of 32")
        anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
        return (DemoModel("detector", "images", (3, *hw), "output0", (4 + NUM_CLASSES, anchors)),
                lambda e, x: detector(e, x, hw))
    if name == "tiny":
        return DemoModel("tiny", "input", (3, 32, 32), "logits", (10,)), tiny
    raise ServingInputError(f"unknown demo model {name!r}: choose detector or tiny")


def describe(name: str, hw: tuple[int, int] = (640, 640)) -> DemoModel:
    return _spec(name, hw)[0]


def build_onnx(name: str, hw: tuple[int, int] = (640, 640), seed: int = 0):
    """The demo model as an ``onnx.ModelProto`` with a dynamic batch dimension named ``batch``."""
    from onnx import TensorProto, checker, helper

    spec, arch = _spec(name, hw)
    e = OnnxEmitter(Weights(seed))
    e._ch[spec.input_name] = spec.input_shape[0]
    out = arch(e, spec.input_name)
    e.nodes.append(helper.make_node("Identity", [out], [spec.output_name], name="output"))
    graph = helper.make_graph(
        e.nodes, f"gpufleet-demo-{name}",
        [helper.make_tensor_value_info(spec.input_name, TensorProto.FLOAT, ["batch", *spec.input_shape])],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["batch", *spec.output_shape])],
        e.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="gpufleet.serving.demo_models")
    model.ir_version = 8  # readable by ONNX Runtime and TensorRT releases of the last three years
    checker.check_model(model, full_check=True)
    return model


def write_onnx(name: str, path: Path | str, hw: tuple[int, int] = (640, 640), seed: int = 0) -> DemoModel:
    """Write the demo model to ``path`` atomically and return its description."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(build_onnx(name, hw, seed), tmp)
    tmp.replace(path)
    return describe(name, hw)


def build_torch(name: str, hw: tuple[int, int] = (640, 640), seed: int = 0):
    """The same model as a ``torch.nn.Module`` with the same weights as :func:`build_onnx` for the same seed."""
    import torch
    from onnx import numpy_helper

    spec, arch = _spec(name, hw)
    onnx_model = build_onnx(name, hw, seed)
    # Initializers are created in the order the architecture draws its weights and constants, except the
    # Split/Reshape/Resize parameters, which the torch emitter passes as Python values.
    skip = ("split_", "shape_", "scales_")
    tensors = [numpy_helper.to_array(t) for t in onnx_model.graph.initializer if not t.name.startswith(skip)]

    class DemoModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.from_numpy(t.copy()), requires_grad=False) for t in tensors])

        def forward(self, x):
            return arch(TorchEmitter(list(self.params)), x)

    module = DemoModule().eval()
    module.spec = spec
    return module

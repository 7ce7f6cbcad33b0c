"""Demo models: the ONNX graph and the PyTorch module are one function with one set of weights."""
import numpy as np
import pytest

from serving import demo_models as dm
from serving.errors import ServingInputError

import onnxruntime as ort  # noqa: E402


def run_onnx(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_detector_has_the_yolov8n_output_layout_at_640():
    spec = dm.describe("detector")
    x = np.random.default_rng(0).random((2, *spec.input_shape), dtype=np.float32)
    y = run_onnx(dm.build_onnx("detector"), x)
    # 84 = 4 box coordinates + 80 COCO classes; 8400 = 80x80 + 40x40 + 20x20 anchors at strides 8, 16, 32.
    assert y.shape == (2, 84, 8400)
    assert np.isfinite(y).all()
    scores = y[:, 4:]
    assert ((scores >= 0) & (scores <= 1)).all()  # class scores pass through a sigmoid


def test_detector_parameter_count_is_yolov8n_scale():
    params = sum(int(np.prod(t.dims)) for t in dm.build_onnx("detector").graph.initializer
                 if t.name.startswith(("w_", "b_")))
    # Ultralytics lists YOLOv8n at 3.2 M parameters (docs.ultralytics.com/models/yolov8, performance table).
    assert 3.0e6 < params < 3.4e6


def test_camera_frame_size_is_supported_and_changes_anchor_count():
    assert dm.describe("detector", (736, 1280)).output_shape == (84, 92 * 160 + 46 * 80 + 23 * 40)
    with pytest.raises(ServingInputError, match="multiples of 32"):
        dm.describe("detector", (720, 1280))


@pytest.mark.parametrize("name,hw", [("tiny", (640, 640)), ("detector", (128, 160))])
def test_torch_module_computes_what_the_onnx_graph_computes(name, hw):
    import torch
    spec = dm.describe(name, hw)
    x = np.random.default_rng(1).random((2, *spec.input_shape), dtype=np.float32)
    expected = run_onnx(dm.build_onnx(name, hw, seed=3), x)
    with torch.no_grad():
        got = dm.build_torch(name, hw, seed=3)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(expected).max())))
    other = run_onnx(dm.build_onnx(name, hw, seed=4), x)
    assert not np.allclose(other, expected)  # the seed matters, so agreement above is not an accident


def test_write_onnx_is_atomic_and_loadable(tmp_path):
    spec = dm.write_onnx("tiny", tmp_path / "m" / "tiny.onnx")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["tiny.onnx"]
    x = np.zeros((3, *spec.input_shape), np.float32)
    session = ort.InferenceSession(str(tmp_path / "m" / "tiny.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {spec.input_name: x})[0].shape == (3, 10)

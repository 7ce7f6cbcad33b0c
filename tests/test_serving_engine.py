"""`serving build-engine`: settings, INT8 calibration images, and the TensorRT build where TensorRT exists."""
import numpy as np
import pytest

from serving.cli import main as serving_main
from serving.demo_models import write_onnx
from serving.engine import (
    LETTERBOX_FILL, BuildSettings, CalibrationBatches, letterbox)
from gpufleet.contracts.engine_sidecar import EngineSidecar, read_sidecar, sidecar_path
from serving.errors import ServingInputError
from gpufleet.errors import ContractError

from PIL import Image  # noqa: E402


def test_letterbox_keeps_aspect_and_pads_with_grey():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    x = letterbox(wide, (64, 64))
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    # 200x100 scales to 64x32 and sits in rows 16..47; the rest is padding
    assert np.allclose(x[:, 16:48, :], np.array([1.0, 0.0, 0.0])[:, None, None])
    assert np.allclose(x[:, :16, :], LETTERBOX_FILL / 255) and np.allclose(x[:, 48:, :], LETTERBOX_FILL / 255)


def test_calibration_batches_are_fixed_size_and_drop_the_remainder(tmp_path):
    for i in range(11):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(tmp_path / f"frame{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    batches = CalibrationBatches(tmp_path, (32, 32), batch_size=4)
    got = list(batches)
    assert len(batches) == 2 and [b.shape for b in got] == [(4, 3, 32, 32)] * 2
    assert got[0].flags["C_CONTIGUOUS"]
    reds = [float(b[k, 0, 0, 0]) for b in got for k in range(4)]
    assert reds == pytest.approx([i * 20 / 255 for i in range(8)])  # name order; frames 8..10 are dropped
    with pytest.raises(ServingInputError, match="fewer than one calibration batch"):
        CalibrationBatches(tmp_path, (32, 32), batch_size=12)


def test_a_broken_image_is_named(tmp_path):
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"ok{i}.jpg")
    (tmp_path / "zz-broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ServingInputError, match="zz-broken.jpg"):
        list(CalibrationBatches(tmp_path, (8, 8), batch_size=3))


@pytest.mark.parametrize("kwargs,needle", [
    ({"min_batch": 4, "opt_batch": 2}, "1 <= min <= opt <= max"),
    ({"workspace_gib": 0}, "workspace"),
    ({"precision": "int8"}, "calibration-images"),
])
def test_build_settings_are_checked_before_tensorrt_is_needed(kwargs, needle, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    write_onnx("tiny", onnx_path)
    with pytest.raises(ServingInputError, match=needle):
        BuildSettings(onnx_path, tmp_path / "m.plan", **kwargs).check()


def test_build_engine_cli_without_tensorrt_says_what_is_missing(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; test_tensorrt_build covers the build")
    except ImportError:
        pass
    onnx_path = tmp_path / "m.onnx"
    write_onnx("tiny", onnx_path)
    assert serving_main(["build-engine", str(onnx_path), str(tmp_path / "m.plan")]) == 2
    assert "gpu] extra" in capsys.readouterr().err
    assert not (tmp_path / "m.plan").exists() and not sidecar_path(tmp_path / "m.plan").exists()


def test_tensorrt_build_fp16_and_int8(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt is not installed here (no wheels reach this workplace); runs where the [gpu] extra "
                    "and an NVIDIA GPU exist")
    from serving.backends import TensorRTBackend
    from serving.engine import build_engine

    onnx_path = tmp_path / "tiny.onnx"
    write_onnx("tiny", onnx_path)
    for i in range(16):
        Image.new("RGB", (40, 30), (i * 10, 50, 100)).save(tmp_path / f"c{i}.png")
    fp16 = build_engine(BuildSettings(onnx_path, tmp_path / "fp16.plan", "fp16", 1, 4, 8, 1.0))
    int8 = build_engine(BuildSettings(onnx_path, tmp_path / "int8.plan", "int8", 1, 4, 8, 1.0, tmp_path,
                                      tmp_path / "calib.cache", 4, 16))
    assert fp16.batch_profile == {"min": 1, "opt": 4, "max": 8} and int8.calibration["image_count"] == 16
    assert (tmp_path / "calib.cache").is_file()
    assert read_sidecar(tmp_path / "int8.plan") == int8
    times = TensorRTBackend(tmp_path / "fp16.plan").time_batches(8, 5, 20)
    assert times.shape == (20,) and (times > 0).all()


def test_sidecar_round_trip(tmp_path):
    side = EngineSidecar(engine="m.plan", onnx="m.onnx", onnx_sha256="0" * 64, precision="fp16",
                         batch_profile={"min": 1, "opt": 8, "max": 32}, workspace_bytes=2**32,
                         inputs=[{"name": "images", "dtype": "float16", "shape": [-1, 3, 640, 640]}],
                         outputs=[{"name": "output0", "dtype": "float16", "shape": [-1, 84, 8400]}],
                         tensorrt_version="10.3.0", device="NVIDIA L4", built="2026-11-21T00:00:00+00:00")
    sidecar_path(tmp_path / "m.plan").write_text(side.model_dump_json())
    assert read_sidecar(tmp_path / "m.plan") == side
    sidecar_path(tmp_path / "bad.plan").write_text("{}")
    with pytest.raises(ContractError, match="bad.plan.json: field"):
        read_sidecar(tmp_path / "bad.plan")

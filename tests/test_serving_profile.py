"""`serving profile`: measured profiles in the planner's format, from ONNX Runtime and PyTorch."""
import json

import numpy as np
import pytest

from gpufleet.contracts.plan import read_plan
from serving.errors import ServingInputError
from serving.backends import BackendUnavailable, OnnxRuntimeBackend, TensorRTBackend, TorchBackend
from serving.cli import main as serving_main
from serving.demo_models import build_torch, describe, write_onnx
from serving.measure import measure_profile, summarise
from gpufleet.contracts.profile import read_profile

import onnxruntime  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)


def test_summary_quantiles_are_observed_samples_at_or_above_the_rank():
    row = summarise(4, np.arange(1.0, 101.0))
    assert (row.p50_ms, row.p90_ms, row.p99_ms) == (51.0, 91.0, 100.0)
    assert row.mean_ms == pytest.approx(50.5)
    assert row.throughput_per_s == pytest.approx(4 * 1000 / 50.5)


def test_onnxruntime_profile_round_trips_and_records_how_it_was_made(tmp_path):
    write_onnx("tiny", tmp_path / "tiny.onnx")
    prof = measure_profile(OnnxRuntimeBackend(tmp_path / "tiny.onnx", threads=1), model="tiny", gpu="T4",
                           batch_sizes=[4, 1, 2], warmup=2, iterations=15)
    assert prof.batch_sizes == [1, 2, 4]
    assert prof.origin.kind == "measured" and prof.origin.iterations == 15 and prof.origin.warmup_iterations == 2
    assert prof.origin.device["kind"] == "cpu" and "onnxruntime" in prof.origin.device
    assert "CPU" in prof.origin.derivation  # a CPU-measured profile says it stands in for the GPU
    for b in prof.batches:
        assert 0 < b.p50_ms <= b.p90_ms <= b.p99_ms
    path = tmp_path / "p.json"
    path.write_text(prof.model_dump_json())
    assert read_profile(path) == prof


def test_pytorch_cpu_profile(tmp_path):
    import torch  # noqa: F401 (in [test]: a broken install fails, never skips)
    backend = TorchBackend(build_torch("tiny"), describe("tiny").input_shape, "cpu", "fp32")
    prof = measure_profile(backend, model="tiny", gpu="L4", batch_sizes=[1, 8], warmup=1, iterations=5)
    assert prof.backend == "pytorch" and prof.precision == "fp32" and prof.batch_sizes == [1, 8]


def test_torch_cuda_fp16_with_cuda_graphs():
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the torch-CUDA path runs on a GPU machine (DEVELOPERS.md)")
    backend = TorchBackend(build_torch("detector"), describe("detector").input_shape, "cuda", "fp16", cuda_graphs=True)
    prof = measure_profile(backend, model="detector", gpu="H100", batch_sizes=[1, 4], warmup=5, iterations=20)
    assert prof.origin.device["kind"] == "gpu"
    assert prof.batches[1].throughput_per_s > prof.batches[0].throughput_per_s


def test_tensorrt_backend_refuses_with_one_line(tmp_path):
    """Without the [gpu] extra: the reason names the extra. With it: a missing engine is named, not a traceback."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match=r"\[gpu\] extra"):
            TensorRTBackend(tmp_path / "missing.plan")
        return
    with pytest.raises(ServingInputError, match="missing.plan: engine file not found"):
        TensorRTBackend(tmp_path / "missing.plan")


def test_detector_profile_from_onnxruntime_feeds_planner_recommend(tmp_path, capsys):
    from planner.cli import main as planner_main

    profile = tmp_path / "detector-L4.json"
    assert serving_main(["profile", "--demo", "detector", "--model", "demo-detector", "--gpu", "L4",
                         "--batch-sizes", "1,2", "--warmup", "1", "--iterations", "3", "--threads", "2",
                         "-o", str(profile)]) == 0
    measured = read_profile(profile)
    plan_path = tmp_path / "plan.json"
    assert planner_main(["recommend", "--qps", "10", "--p99-ms", "2000", "--model", "demo-detector", "--gpu", "L4",
                         "--profile", str(profile), "--format", "json", "--output", str(plan_path)]) == 0
    plan = read_plan(plan_path)
    (dep,) = plan.deployments
    assert dep.gpu == "L4" and dep.model == "demo-detector"
    # The measured service times set the capacity: no replica is planned above the best measured throughput.
    best_rate = max(b.throughput_per_s for b in measured.batches)
    assert dep.rate_per_replica <= best_rate * dep.triton.instance_count
    assert dep.predicted.p99_ms <= 2000


@pytest.mark.parametrize("argv,needle", [
    (["profile", "--demo", "tiny", "--gpu", "L4", "-o", "X", "--batch-sizes", "0,2"], "values must be >= 1"),
    (["profile", "--demo", "tiny", "--gpu", "L4", "-o", "X", "--batch-sizes", "a"], "comma-separated integers"),
    (["profile", "nope.onnx", "--gpu", "L4", "-o", "X"], "model file not found"),
    (["profile", "--demo", "tiny", "-o", "X"], "--gpu"),
    (["profile", "--demo", "tiny", "--gpu", "L4", "-o", "X", "--backend", "tensorrt"], "engine file"),
    (["profile", "--demo", "tiny", "--gpu", "L4", "-o", "X", "--backend", "pytorch", "--precision", "fp16"],
     "fp16 on the CPU"),
])
def test_bad_profile_arguments_give_one_line_and_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert serving_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "X").exists()


def test_profile_json_is_the_documented_schema(tmp_path):
    write_onnx("tiny", tmp_path / "tiny.onnx")
    out = tmp_path / "p.json"
    assert serving_main(["profile", str(tmp_path / "tiny.onnx"), "--gpu", "T4", "-o", str(out),
                         "--batch-sizes", "1", "--warmup", "0", "--iterations", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["model"] == "tiny" and data["backend"] == "onnxruntime"


def test_concurrency_speedup_compares_instances_running_together_with_one(tmp_path):
    from serving.measure import measure_concurrency

    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    made = []

    def make():
        made.append(OnnxRuntimeBackend(model, "cpu", "fp32", threads=1))
        return made[-1]

    speedup = measure_concurrency(make, 3, iterations=20)
    assert len(made) == 3 and set(speedup) == {2, 3}
    assert all(0 < s <= n for n, s in speedup.items())
    assert measure_concurrency(make, 1) == {}


def test_corun_measures_two_models_on_one_device_through_the_console_entry_point(tmp_path):
    from tests.cli_run import run_cli

    out = tmp_path / "tiny-T4.json"
    run = run_cli("serving", ["profile", "--demo", "tiny", "--gpu", "T4", "-o", str(out), "--batch-sizes", "1,2",
                              "--warmup", "2", "--iterations", "40", "--threads", "1", "--corun", "detector",
                              "--height", "64", "--width", "64"])
    assert run.returncode == 0, run.stderr
    prof = read_profile(out)
    assert set(prof.corun_speedup) == {"detector"}
    assert 0 < prof.corun_speedup["detector"] <= 2
    bad = run_cli("serving", ["profile", "--demo", "tiny", "--gpu", "T4", "-o", str(tmp_path / "x.json"), "--corun",
                              str(tmp_path / "nope.onnx")])
    assert bad.returncode == 2 and "nope.onnx: model file not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


# --- the GPU type a profile stands for must be one the planner knows (issue 25, item 3) -------------------------

QUICK = ["--batch-sizes", "1", "--warmup", "0", "--iterations", "2"]


def test_serving_profile_refuses_a_gpu_type_the_planner_does_not_know(tmp_path):
    from tests.cli_run import run_cli

    out = tmp_path / "p.json"
    run = run_cli("serving", ["profile", "--demo", "tiny", "--gpu", "L5", "-o", str(out), *QUICK])
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "'L5'" in line and "L4" in line and "--catalog" in line, line
    assert not out.exists()


@pytest.mark.parametrize("gpu", ["L4", "A100-MIG-1g.5gb"])
def test_serving_profile_takes_a_catalog_gpu_and_a_mig_slice_of_one(gpu, tmp_path):
    """The embedded catalog's GPU types, and MIG slices of them by the planner's name (`planner recommend --mig`
    plans with a measured slice profile)."""
    from tests.cli_run import run_cli

    out = tmp_path / "p.json"
    run = run_cli("serving", ["profile", "--demo", "tiny", "--gpu", gpu, "-o", str(out), *QUICK])
    assert run.returncode == 0, run.stderr
    assert read_profile(out).gpu == gpu

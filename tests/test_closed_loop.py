"""The whole loop on one machine: profile -> stress -> fit -> recommend -> stack (Pulumi mocks).

A real local Triton serves the tiny demo model, a real open-loop stress run measures it, ``planner fit`` calibrates
on that run, ``planner recommend --calibration --stack dev`` writes the plan where the dev stack reads it, and the
dev stack, built under Pulumi mocks, must buy exactly the plan's pools and scale on exactly the plan's thresholds.
"""
from __future__ import annotations

import shutil

import pytest

import pytriton  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import pulumi_aws  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import yaml  # noqa: E402

from infra.gpu_pools import CAPACITY_LABEL, GPU_LABEL, capacity_group  # noqa: E402
from infra.preview import manifests, preview  # noqa: E402
from infra.program import load_plan  # noqa: E402
from infra.settings import ROOT, settings_from_config, stack_file_config  # noqa: E402
from infra.triton import quantity  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from gpufleet.contracts.calibration import read_calibration  # noqa: E402
from planner.cli import main as planner_main  # noqa: E402
from gpufleet.contracts.plan import read_plan  # noqa: E402
from gpufleet.contracts.autoscaling import AutoscalingSpec  # noqa: E402
from serving.backends import OnnxRuntimeBackend  # noqa: E402
from serving.demo_models import write_onnx  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.measure import measure_profile  # noqa: E402
from gpufleet.contracts.profile import write_profile  # noqa: E402
from serving.repository import write_model  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from serving.triton_config import ModelSpec, onnx_tensors  # noqa: E402

MODEL = "demo-tiny"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the Pulumi project whose dev stack serves the demo model."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    dev["config"]["gpufleet:modelName"] = MODEL
    (root / "Pulumi.dev.yaml").write_text(yaml.safe_dump(dev))
    return root


@pytest.fixture(scope="module")
def loop(tmp_path_factory, project):
    work = tmp_path_factory.mktemp("loop")
    onnx = work / "tiny.onnx"
    write_onnx("tiny", onnx)
    # 1. profile
    profile = measure_profile(OnnxRuntimeBackend(onnx, "cpu", "fp32", threads=1), model=MODEL, gpu="L4",
                              batch_sizes=(1, 2, 4, 8), warmup=5, iterations=50)
    write_profile(profile, work / "profile.json")
    # 2. stress: open loop against a real Triton serving the model with dynamic batching
    batching = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=1000, instance_kind="KIND_CPU")
    write_model(work / "repo", ModelSpec(MODEL, "python", *onnx_tensors(onnx), batching), onnx)
    server = LocalTriton(work / "repo", extra_args=["--exit-timeout-secs=5"]).start(timeout_s=90)
    try:
        run = StressSettings(host=f"http://{server.http_url}", model=MODEL, out=work, metrics_url=server.metrics_url,
                             shape=Steps(rates=[80, 160], step_duration=4, warmup=1), timeout_s=10, name="stress")
        run_stress(run)
    finally:
        server.kill()  # the run has scraped its figures; the server's shutdown is not under test
    # 3. fit, 4. recommend into the dev stack
    cal_path = work / "calibration.json"
    assert planner_main(["fit", str(run.result_path), "--profile", str(work / "profile.json"), "--output",
                         str(cal_path), "--p99-ms", "50", "--scale-up-lag-min", "5", "--ramp-pct-per-min", "3"]) == 0
    # Two 4 s steps pin capacity only loosely, far past the gate's default ±15% (tests/test_capacity_gate.py): this
    # test is about the plan reaching the stack, so it accepts any width.
    assert planner_main(["recommend", "--qps", "3000", "--p99-ms", "50", "--model", MODEL, "--gpu", "L4",
                         "--profile", str(work / "profile.json"), "--calibration", str(cal_path),
                         "--max-capacity-spread-pct", "1000", "--stack", "dev", "--project-dir", str(project)]) == 0
    settings = settings_from_config(stack_file_config("dev", project), "dev")
    plan = load_plan(settings, project)
    return read_calibration(cal_path), plan, settings, preview(settings, plan)


def test_the_plan_lands_where_the_dev_stack_reads_it(loop, project):
    cal, plan, settings, _ = loop
    assert (project / settings.plan_path).is_file()
    assert read_plan(project / settings.plan_path) == plan
    assert plan.request.model == MODEL and plan.request.calibration is not None
    assert plan.request.overhead_ms == cal.overhead_ms  # the fitted overhead, not the default


def test_the_fit_saw_the_triton_config_and_the_servers_batching(loop):
    cal, *_ = loop
    assert {(s.config.max_batch_size, s.config.max_queue_delay_microseconds) for s in cal.steps} == {(8, 1000)}
    assert len(cal.steps) == 2 and all(s.measured_mean_batch is not None for s in cal.steps)


def test_the_stacks_node_pools_are_the_plans(loop):
    _, plan, _, records = loop
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup" and GPU_LABEL in (r.inputs.get("labels") or {})]
    built: dict[tuple[str, str], int] = {}
    for g in groups:
        key = (g.inputs["labels"][GPU_LABEL], g.inputs["labels"][CAPACITY_LABEL])
        built[key] = built.get(key, 0) + int(g.inputs["scalingConfig"]["desiredSize"])
    planned: dict[tuple[str, str], int] = {}
    for p in plan.pools:
        key = (p.gpu, capacity_group(p.capacity_type))
        planned[key] = planned.get(key, 0) + p.count
    assert {k: v for k, v in built.items() if v} == planned


def test_the_stacks_hpa_thresholds_are_the_plans(loop):
    cal, plan, settings, records = loop
    lag = AutoscalingSpec(scale_up_lag_s=cal.scaling.scale_up_lag_s, ramp_per_min=cal.scaling.ramp_per_min)
    objs = manifests(records)
    for d in plan.deployments:
        (hpa,) = [m for m in objs if m["kind"] == "HorizontalPodAutoscaler"
                  and m["metadata"]["name"] == f"triton-{MODEL}-{d.gpu.lower()}"]
        spec = hpa["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (d.autoscaling.min_replicas, d.autoscaling.max_replicas)
        assert spec["metrics"][0]["pods"]["target"]["averageValue"] == quantity(d.autoscaling.target_rate_per_replica)
        # ... and the plan's threshold is the fitted, lag-aware one.
        assert plan.autoscaling.scale_up_lag_s == 300 and plan.autoscaling.ramp_per_min == 0.03
        assert d.autoscaling.target_rate_per_replica == pytest.approx(
            lag.hpa_target(d.autoscaling.max_rate_per_replica), rel=1e-3)


def test_stack_refuses_a_plan_for_another_model(loop, project, capsys):
    _, plan, settings, _ = loop
    before = (project / settings.plan_path).read_text()
    assert planner_main(["recommend", "--qps", "1000", "--stack", "dev", "--project-dir", str(project)]) == 2
    assert "serves model 'demo-tiny'" in capsys.readouterr().err
    assert (project / settings.plan_path).read_text() == before

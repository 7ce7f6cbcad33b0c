"""MIG slices as capacity: the derived slice profiles, the partitioned pools, and `planner recommend --mig`."""
import subprocess
import sys
from pathlib import Path

import pytest

from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.profile import write_profile
from planner.capacity import CapacitySearch, ReplicaModel
from planner.catalog import pools_for, read_catalog
from planner.mig import slice_pools, slice_profiles, slices
from planner.profiles import load_profiles

PLANNER = str(Path(sys.executable).with_name("planner"))
# The A100-SXM4-40GB's geometry as its sources state it (planner/data/mig.json): 108 SMs, 14 per compute slice,
# 8 memory slices; a 1g.5gb slice holds 1 compute and 1 memory slice, 2g.10gb 2 and 2, 3g.20gb 3 and 4.
EXPECTED_SLOWDOWN = {"A100-MIG-1g.5gb": 8.0, "A100-MIG-2g.10gb": 4.0, "A100-MIG-3g.20gb": 108 / 42}
PER_INSTANCE = {"A100-MIG-1g.5gb": 56, "A100-MIG-2g.10gb": 24, "A100-MIG-3g.20gb": 16}  # p4d: 8 GPUs


def test_slices_are_the_a100_profiles_that_can_beat_the_whole_gpu():
    assert {s.gpu_type: s.slowdown for s in slices()} == pytest.approx(EXPECTED_SLOWDOWN)


def test_a_slice_profile_is_the_whole_gpus_scaled_and_says_it_was_not_measured():
    profiles = load_profiles([])
    derived = slice_profiles(profiles)
    whole = profiles[("yolov8s-640", "A100")]
    for gpu, k in EXPECTED_SLOWDOWN.items():
        sliced = derived[("yolov8s-640", gpu)]
        assert sliced.origin.kind == "derived" and "not measured" in sliced.origin.derivation
        for a, b in zip(whole.batches, sliced.batches):
            assert (b.p50_ms, b.p99_ms, b.mean_ms) == pytest.approx((a.p50_ms * k, a.p99_ms * k, a.mean_ms * k))
    assert not any(g == "T4" or "7g" in g for _, g in derived)  # no MIG on a T4; a 7g slice never pays


def test_a_measured_slice_profile_is_kept(tmp_path):
    profiles = load_profiles([])
    measured = profiles[("yolov8n-640", "A100")].model_copy(update={"gpu": "A100-MIG-1g.5gb"})
    path = tmp_path / "slice.json"
    write_profile(measured, path)
    with_measured = load_profiles([path])
    assert slice_profiles(with_measured).get(("yolov8n-640", "A100-MIG-1g.5gb")) is None  # not replaced


def test_partitioned_pools_hold_slices_per_instance_at_the_instance_price():
    whole = pools_for(read_catalog(), {"A100", "T4"}, 12.0)
    sliced = slice_pools(whole)
    assert {p.gpu for p in sliced} == set(EXPECTED_SLOWDOWN)
    for p in sliced:
        twin = next(w for w in whole if (w.instance_type, w.capacity_type) == (p.instance_type, p.capacity_type)
                    and w.gpu == "A100")
        assert p.usd_per_hour == twin.usd_per_hour and p.gpus_per_instance == PER_INSTANCE[p.gpu]
        assert p.name == f"{twin.name}/{p.partition}" and p.partition == "all-" + p.gpu.split("-MIG-")[1]
    assert len({p.name for p in whole + sliced}) == len(whole) + len(sliced)


def test_a_slice_holds_less_than_its_whole_gpu_and_more_than_its_share():
    profiles = load_profiles([])
    derived = slice_profiles(profiles)
    whole = CapacitySearch(ReplicaModel.from_profile(profiles[("yolov8n-640", "A100")])).best(98.0).max_rate
    for gpu, k in EXPECTED_SLOWDOWN.items():
        part = CapacitySearch(ReplicaModel.from_profile(derived[("yolov8n-640", gpu)])).best(98.0).max_rate
        assert part < whole and part * k > 0.5 * whole, (gpu, part, whole)


def test_recommend_mig_buys_partitioned_instances_and_says_how(tmp_path):
    out = tmp_path / "plan.json"
    run = subprocess.run([PLANNER, "recommend", "--model", "yolov8n-640", "--qps", "3000", "--p99-ms", "100", "--mig",
                          "--gpu", "A100-MIG-1g.5gb", "--output", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    plan = read_plan(out)
    assert plan.request.mig
    for p in plan.pools:
        assert p.gpu == "A100-MIG-1g.5gb" and p.mig_partition == "all-1g.5gb" and p.instance_type == "p4d.24xlarge"
        assert p.replicas == 56 * p.count
    assert plan.deployments[0].predicted.p99_ms <= 100
    report = subprocess.run([PLANNER, "report", str(out), "--out", str(tmp_path / "r")], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "A100-MIG-1g.5gb" in (tmp_path / "r" / "report.html").read_text()

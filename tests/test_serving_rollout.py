"""Circuit breaking on the real local Triton, under open-loop load from loadtests: a P99 judged in real time, so
this file runs alone (tests/conftest.py ALONE); hot reload under load, which judges no latency, is
tests/test_serving_reload.py.

The model is the stand-in (:mod:`serving.standin`): a latency profile served by sleeping, so Triton's batcher, queue,
version handling and HTTP path are real while the two cores stay with the load generator.
"""
import importlib.util
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

# Not imported here: importing locust monkey-patches the whole test process for gevent; runs happen in Locust's own
# processes.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)
import pytriton  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)

from gpufleet.contracts.profile import LatencyProfile  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from gpufleet.triton import loaded_batching  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from planner.capacity import CapacitySearch, ReplicaModel, queue_bound  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.standin import StandIn  # noqa: E402

# Loopback HTTP plus the Python backend's hand-off, allowed for when the planner turns the target into a device budget.
OVERHEAD_MS = 10.0


def profile(base_ms: float, per_image_ms: float) -> LatencyProfile:
    return LatencyProfile.model_validate({
        "schema_version": 1, "model": "standin", "gpu": "T4", "precision": "fp16", "backend": "triton",
        "origin": {"kind": "derived", "date": "2026-11-22", "derivation": "synthetic test profile: base + per image"},
        "batches": [{"batch_size": b, "mean_ms": base_ms + per_image_ms * b, "p50_ms": base_ms + per_image_ms * b,
                     "p99_ms": 1.05 * (base_ms + per_image_ms * b)} for b in (1, 2, 4, 8)]})


def test_at_three_times_capacity_the_queue_bound_sheds_load_and_keeps_p99_within_target(tmp_path):
    target_ms = 300.0
    prof = profile(40.0, 8.0)  # a batch of 8 takes 104 ms: about 77 req/s at saturation
    model = ReplicaModel.from_profile(prof)
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=0)
    budget_s = (target_ms - OVERHEAD_MS) / 1000.0
    capacity = CapacitySearch(model).max_rate(cfg, budget_s)
    bounded = queue_bound(model, cfg, budget_s)
    assert 0 < capacity < model.saturation_rate(cfg) and bounded.max_queue_size >= 1
    assert 0 < bounded.queue_timeout_microseconds < budget_s * 1e6
    surge = Steps(rates=[round(3 * capacity)], step_duration=5, warmup=2)
    # How long a request may wait for its answer: the bounded queue answers or turns away within the target; on the
    # unbounded one the backlog grows by two thirds of the surge every second, so requests still unanswered after
    # 10 target-lengths are counted as timed out, and the run ends that long after its last send, not 10 s.
    timeout_s = {"bounded": 10, "unbounded": 10 * target_ms / 1000}

    results, served_by = {}, {"bounded": bounded, "unbounded": cfg}
    tritons = {}
    for name, served in served_by.items():
        StandIn("standin", prof).write(tmp_path / name / "repo", served)
        tritons[name] = LocalTriton(tmp_path / name / "repo", extra_args=["--exit-timeout-secs=5"])
    # The two servers start together before the runs and stop together after them (start-up and shutdown are
    # waiting, not work); the runs stay one after the other, and an idle stand-in server takes nothing from a run.
    with ThreadPoolExecutor(len(tritons)) as pool:
        starts = [pool.submit(LocalTriton.start, triton) for triton in tritons.values()]
        try:
            for start in starts:
                start.result()
            for name, served in served_by.items():  # bounded first: its run leaves no backlog behind
                triton = tritons[name]
                loaded = loaded_batching(f"http://{triton.http_url}", "standin")
                assert (loaded.max_queue_size, loaded.queue_timeout_microseconds) == (
                    served.max_queue_size, served.queue_timeout_microseconds)
                results[name] = run_stress(StressSettings(
                    host=f"http://{triton.http_url}", model="standin", out=tmp_path / name / "run", shape=surge,
                    metrics_url=triton.metrics_url, timeout_s=timeout_s[name], name=name))
        finally:
            # A server still starting when the other failed to start is killed too, not left running after the test.
            wait(starts)
            list(pool.map(LocalTriton.kill, tritons.values()))  # their shutdown is not under test

    (shed,) = results["bounded"].reported_steps()
    assert results["bounded"].target.triton.latency_shape == results["unbounded"].target.triton
    # Two thirds of the surge cannot be served: it is turned away, and counted apart from errors.
    assert shed.errors == 0, shed.error_kinds
    assert shed.rejected > 0.4 * shed.sent
    assert shed.ok + shed.rejected == pytest.approx(shed.sent, abs=5)
    assert shed.latency_ms.p99 <= target_ms
    # The same surge on an unbounded queue: latency grows with the backlog, far past the target.
    (piled,) = results["unbounded"].reported_steps()
    assert piled.rejected == 0
    assert piled.latency_ms.p99 is None or piled.latency_ms.p99 > 3 * target_ms or piled.errors > 0

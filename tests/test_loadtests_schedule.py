"""Arrival schedules, the per-step recorder and Triton's counters: the parts a stress run is computed from."""
from pathlib import Path

import numpy as np
import pytest

from pydantic import ValidationError

from loadtests import schedule as sch
from loadtests.shapes import ClosedLoop, Ramp, Replay, Steps
from gpufleet.errors import ContractError
from loadtests.errors import LoadTestInputError

DATA = Path(__file__).parent / "data"


def test_poisson_arrivals_offer_the_scheduled_rate_per_step():
    s = Steps(rates=[200, 800], step_duration=20, warmup=5).schedule()
    times = list(sch.arrivals(s, "poisson", seed=1))
    per_step = np.bincount([i for _, i in times], minlength=3)
    expected = np.array([200 * 5, 200 * 20, 800 * 20])
    assert np.all(np.abs(per_step - expected) < 4 * np.sqrt(expected))  # Poisson counts within 4 sigma
    gaps = np.diff([t for t, i in times if i == 2])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps: coefficient of variation 1
    assert all(a < b for (a, _), (b, _) in zip(times, times[1:]))
    assert times[-1][0] < s.duration_s


def test_generators_sharing_a_rate_add_up_to_it_and_draw_different_times():
    s = Steps(rates=[300], step_duration=30, warmup=0).schedule()
    parts = [list(sch.arrivals(s, "poisson", seed=7, share=3, index=i)) for i in range(3)]
    total = sum(len(p) for p in parts)
    assert abs(total - 9000) < 4 * np.sqrt(9000)
    assert parts[0][:5] != parts[1][:5]
    assert list(sch.arrivals(s, "poisson", seed=7, share=3, index=1)) == parts[1]  # reproducible from the seed


def test_constant_arrivals_are_evenly_spaced_and_interleaved():
    s = Steps(rates=[100], step_duration=1, warmup=0).schedule()
    a = [t for t, _ in sch.arrivals(s, "constant", share=2, index=0)]
    b = [t for t, _ in sch.arrivals(s, "constant", share=2, index=1)]
    assert len(a) == len(b) == 50
    merged = sorted(a + b)
    assert np.allclose(np.diff(merged), 0.01)


def test_ramp_and_replay_shapes(tmp_path):
    r = Ramp(start=50, stop=400, factor=2, step_duration=3, warmup=1).schedule()
    assert [s.rate for s in r.steps] == [50, 50, 100, 200, 400] and r.steps[0].warmup and r.kind == "ramp"
    curve = tmp_path / "day.csv"
    curve.write_text("minute,qps\n0,100\n1,250\n2,0\n")
    replay = Replay.from_csv(curve, seconds_per_row=2, rate_scale=0.5)
    rp = replay.schedule()
    assert [s.rate for s in rp.steps] == [50, 125, 0.1] and rp.duration_s == 6 == replay.duration_s
    assert replay.source == str(curve)


def test_shapes_plan_the_steps_the_result_reports():
    steps = Steps(rates=[10, 20], step_duration=5, warmup=2)
    assert [(p.name, p.start_s, p.duration_s, p.rate, p.warmup) for p in steps.plan()] == [
        ("warmup", 0, 2, 10, True), ("step00@10rps", 2, 5, 10, False), ("step01@20rps", 7, 5, 20, False)]
    closed = ClosedLoop(users=3, duration=12)
    assert closed.schedule() is None and not closed.open_loop and closed.duration_s == 12
    assert closed.locust_users(generators=1, workers=2) == 3 and steps.locust_users(generators=1, workers=2) == 2


def _stats(latencies_ms, errors=0):
    from loadtests.recorder import StepRecorder

    rec = StepRecorder()
    for ms in latencies_ms:
        rec.success(0, ms / 1000)
    for _ in range(errors):
        rec.failure(0, "timeout")
    return rec.steps[0]


def test_only_a_ramp_with_a_bound_stops_early_and_it_names_the_bound_passed():
    assert not Steps(rates=[10]).stops_early and not ClosedLoop(users=1).stops_early
    assert Steps(rates=[10]).verdict(_stats([500] * 100)) is None
    ramp = Ramp(start=10, stop=40, factor=2, p99_bound_ms=50)
    assert ramp.stops_early
    assert ramp.verdict(_stats([10] * 100)) is None
    assert ramp.verdict(_stats([10] * 98 + [80] * 2)).startswith("p99-bound: 80.")
    assert ramp.verdict(_stats([10] * 97, errors=3)).startswith("error-share: 0.030 > 0.01")
    assert not Ramp(start=10, stop=40, factor=2, max_error_share=1.0).stops_early


@pytest.mark.parametrize("build,needle", [
    (lambda: Steps(rates=[100, 0], step_duration=10), "rate 0.0 must be a positive"),
    (lambda: Steps(rates=[100, -5], step_duration=10), "must be a positive"),
    (lambda: Steps(rates=[float("nan")], step_duration=10), "finite number"),
    (lambda: Steps(rates=[], step_duration=10), "at least 1 item"),
    (lambda: Steps(rates=[100], step_duration=0), "duration"),
    (lambda: Steps(rates=[1e6], step_duration=60), "at most 20,000,000"),
    (lambda: Ramp(start=100, stop=50, factor=2), "start <= stop"),
    (lambda: Ramp(start=1, stop=1e9, factor=1.01), "larger factor"),
    (lambda: Ramp(start=1, stop=10, factor=2, max_error_share=1.5), "less than or equal to 1"),
    (lambda: ClosedLoop(users=0), "greater than or equal to 1"),
    (lambda: Steps(rates=[1], step_duration=1, sped_up=True), "Extra inputs"),
])
def test_bad_shapes_name_the_problem(build, needle):
    with pytest.raises(ValidationError, match=needle):
        build()


def test_replay_rejects_a_bad_curve(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,qps\n0,100\n1,lots\n")
    with pytest.raises(LoadTestInputError, match="line 3"):
        Replay.from_csv(bad, 1)
    (tmp_path / "nocol.csv").write_text("minute,rate\n0,1\n")
    with pytest.raises(LoadTestInputError, match="'qps' column"):
        Replay.from_csv(tmp_path / "nocol.csv", 1)


def test_recorders_merged_across_workers_give_the_percentiles_of_all_requests():
    from loadtests.recorder import StepRecorder

    rng = np.random.default_rng(0)
    latencies = rng.lognormal(np.log(0.02), 0.6, 20_000)
    workers = [StepRecorder() for _ in range(4)]
    for k, lat in enumerate(latencies):
        workers[k % 4].success(3, lat)
        workers[k % 4].sent(3, 0.002 if k % 10 == 0 else 0.0001)
    master = StepRecorder()
    for w in workers:
        master.merge(w.drain())
        assert w.steps == {}  # drained
    s = master.steps[3]
    assert s.ok == 20_000 and s.sent == 20_000 and s.late == 2_000
    for q in (0.5, 0.99, 0.999):
        assert s.quantile_ms(q) == pytest.approx(np.quantile(latencies, q) * 1000, rel=0.01)


def test_triton_counters_are_read_per_model_and_differenced():
    from loadtests import triton_metrics as tm

    text = (DATA / "triton/metrics-tiny.txt").read_text()
    v = tm.parse(text, "tiny")
    assert v["nv_inference_request_success"] == 108 and v["nv_inference_count"] == 108
    assert v["nv_inference_exec_count"] == 89
    assert tm.parse(text, "other")["nv_inference_count"] == 0
    start = tm.Scrape(100.0, {k: 0.0 for k in tm.COUNTERS})
    fig = tm.step_figures(start, tm.Scrape(110.0, v))
    assert fig["seconds"] == 10 and fig["mean_batch_size"] == pytest.approx(108 / 89)
    assert fig["queue_us_per_request"] == pytest.approx(v["nv_inference_queue_duration_us"] / 108)
    assert tm.step_figures(None, start) is None


def test_stress_result_reader_names_the_file_and_field(tmp_path):
    from gpufleet.contracts.stress_result import read_stress_result

    bad = tmp_path / "r.stress.json"
    bad.write_text('{"schema_version": 1, "mode": "sideways"}')
    with pytest.raises(ContractError, match=r"r\.stress\.json: field .*"):
        read_stress_result(bad)
    bad.write_text("{not json")
    with pytest.raises(ContractError, match="not JSON"):
        read_stress_result(bad)
    with pytest.raises(ContractError, match="cannot read stress result"):
        read_stress_result(tmp_path / "missing.json")

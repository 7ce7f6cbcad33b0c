"""Arrival schedules, the per-step recorder and Triton's counters: the parts a stress run is computed from."""
from pathlib import Path

import numpy as np
import pytest

from loadtests import schedule as sch
from gpufleet.errors import ContractError
from loadtests.errors import LoadTestInputError

DATA = Path(__file__).parent / "data"


def test_poisson_arrivals_offer_the_scheduled_rate_per_step():
    s = sch.steps([200, 800], duration_s=20, warmup_s=5)
    times = list(sch.arrivals(s, "poisson", seed=1))
    per_step = np.bincount([i for _, i in times], minlength=3)
    expected = np.array([200 * 5, 200 * 20, 800 * 20])
    assert np.all(np.abs(per_step - expected) < 4 * np.sqrt(expected))  # Poisson counts within 4 sigma
    gaps = np.diff([t for t, i in times if i == 2])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps: coefficient of variation 1
    assert all(a < b for (a, _), (b, _) in zip(times, times[1:]))
    assert times[-1][0] < s.duration_s


def test_generators_sharing_a_rate_add_up_to_it_and_draw_different_times():
    s = sch.steps([300], duration_s=30)
    parts = [list(sch.arrivals(s, "poisson", seed=7, share=3, index=i)) for i in range(3)]
    total = sum(len(p) for p in parts)
    assert abs(total - 9000) < 4 * np.sqrt(9000)
    assert parts[0][:5] != parts[1][:5]
    assert list(sch.arrivals(s, "poisson", seed=7, share=3, index=1)) == parts[1]  # reproducible from the seed


def test_constant_arrivals_are_evenly_spaced_and_interleaved():
    s = sch.steps([100], duration_s=1)
    a = [t for t, _ in sch.arrivals(s, "constant", share=2, index=0)]
    b = [t for t, _ in sch.arrivals(s, "constant", share=2, index=1)]
    assert len(a) == len(b) == 50
    merged = sorted(a + b)
    assert np.allclose(np.diff(merged), 0.01)


def test_ramp_and_replay_shapes(tmp_path):
    r = sch.ramp(50, 400, 2, duration_s=3, warmup_s=1)
    assert [s.rate for s in r.steps] == [50, 50, 100, 200, 400] and r.steps[0].warmup and r.kind == "ramp"
    curve = tmp_path / "day.csv"
    curve.write_text("minute,qps\n0,100\n1,250\n2,0\n")
    rp = sch.replay(curve, seconds_per_row=2, rate_scale=0.5)
    assert [s.rate for s in rp.steps] == [50, 125, 0.1] and rp.duration_s == 6
    assert sch.Schedule.from_text(r.to_text()) == r


@pytest.mark.parametrize("build,needle", [
    (lambda: sch.steps([100, 0], 10), "rate 0.0 must be a positive"),
    (lambda: sch.steps([100, -5], 10), "must be a positive"),
    (lambda: sch.steps([float("nan")], 10), "must be a positive"),
    (lambda: sch.steps([100], 0), "duration"),
    (lambda: sch.ramp(100, 50, 2, 10), "start <= stop"),
    (lambda: sch.ramp(1, 1e9, 1.01, 10), "larger factor"),
    (lambda: sch.Schedule.from_text("a@b"), "rate@seconds"),
])
def test_bad_schedules_name_the_problem(build, needle):
    with pytest.raises(LoadTestInputError, match=needle):
        build()


def test_replay_rejects_a_bad_curve(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,qps\n0,100\n1,lots\n")
    with pytest.raises(LoadTestInputError, match="line 3"):
        sch.replay(bad, 1)
    (tmp_path / "nocol.csv").write_text("minute,rate\n0,1\n")
    with pytest.raises(LoadTestInputError, match="'qps' column"):
        sch.replay(tmp_path / "nocol.csv", 1)


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

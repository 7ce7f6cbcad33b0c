"""bench/calibrate_validation.py's pure pieces: the generated profiles, the verdict, a profile's record from its
recorded runs. No server runs here."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from calibrate_validation import KINDS, generate, record, run_noise, verdict  # noqa: E402
from gpufleet.contracts.stress_result import read_stress_result, write_stress_result  # noqa: E402
from planner.capacity import ReplicaModel  # noqa: E402


def test_profiles_are_the_same_from_the_same_seed():
    a, b = generate(4, seed=5), generate(4, seed=5)
    assert [(c.profile, c.config, c.target_ms) for c in a] == [(c.profile, c.config, c.target_ms) for c in b]


def test_another_seed_gives_other_profiles():
    a, b = generate(4, seed=5), generate(4, seed=6)
    assert all(x.profile.batches != y.profile.batches for x, y in zip(a, b))


def test_ten_profiles_cover_every_kind():
    assert {c.kind for c in generate(10, seed=27)} == set(KINDS)


def test_profiles_say_they_are_generated():
    assert all(c.profile.origin.kind == "derived" and "generated" in c.profile.origin.derivation
               for c in generate(4, seed=27))


def test_every_profile_has_a_heavy_tail():
    tails = [b.p99_ms / b.mean_ms for c in generate(10, seed=27) for b in c.profile.batches]
    assert min(tails) >= 1.25


def test_overhead_kind_dominates_small_batches():
    # The per-call overhead: a batch of 2 costs little more than a batch of 1.
    for c in (c for c in generate(8, seed=27) if c.kind == "overhead"):
        p50 = {b.batch_size: b.p50_ms for b in c.profile.batches}
        assert p50[2] < 1.12 * p50[1]


def test_knee_lies_where_locust_drives_open_loop():
    for c in generate(10, seed=27):
        assert 40.0 <= c.params["model_knee_rate"] <= 250.0


def test_target_lies_above_light_load_latency():
    for c in generate(10, seed=27):
        model = ReplicaModel.from_profile(c.profile)
        assert c.target_ms > model.service.mean(1) * 1000.0


def test_served_batch_is_in_the_profile():
    assert all(c.config.max_batch_size <= max(c.profile.batch_sizes) for c in generate(10, seed=27))


def test_verdict_met_with_nine_of_ten_within_and_none_above():
    assert verdict([1.0, 0.98, 1.03, 0.96, 1.05, 0.99, 1.01, 0.97, 1.02, 0.90])["met"]


def test_verdict_fails_on_one_above():
    v = verdict([1.0, 0.98, 1.03, 0.96, 1.05, 0.99, 1.01, 0.97, 1.02, 1.06])
    assert not v["met"] and v["above"] == 1


def test_verdict_fails_with_two_outside():
    assert not verdict([1.0, 0.98, 1.03, 0.96, 1.05, 0.99, 1.01, 0.97, 0.90, 0.93])["met"]


def test_verdict_counts_a_missing_figure_as_a_miss():
    v = verdict([1.0, 0.98, 1.03, 0.96, 1.05, 0.99, 1.01, 0.97, None, 0.93])
    assert not v["met"] and v["missing"] == 1


def test_verdict_needs_ten_profiles():
    assert not verdict([1.0] * 9)["met"]


def test_verdict_is_written_as_json_from_numpy_ratios():
    # Measured capacities come out of numpy (isotonic regression): the counts must still be plain JSON numbers.
    v = verdict([np.float64(1.0)] * 10)
    assert json.loads(json.dumps(v))["within"] == 10


RECORDED = ROOT / "docs" / "validation" / "calibrate" / "gen04"  # a finished profile: calibrate and two long steps


def test_a_repeat_is_measured_on_its_own_and_leaves_the_judged_capacity_alone(tmp_path):
    d = tmp_path / "gen04"
    shutil.copytree(RECORDED, d)
    before = record(d)
    # The repeat's steps read 5% slower than the long runs: its capacity moves, the judged one does not.
    res = read_stress_result(d / "capacity.stress.json")
    slower = [s.model_copy(update={"latency_ms": s.latency_ms.model_copy(update={"p99": s.latency_ms.p99 * 1.05})})
              if s.latency_ms.p99 is not None else s for s in res.steps]
    write_stress_result(res.model_copy(update={"steps": slower}), d / "repeat1.stress.json")
    after = record(d)
    assert after["measured"] == before["measured"] and after["ratio"] == before["ratio"]
    assert [r["file"] for r in after["repeats"]] == ["repeat1.stress.json"]
    assert after["repeats"][0]["measured"] < before["measured"]


def test_repeat_of_an_unknown_profile_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "calibrate_validation.py"), "--out", str(tmp_path),
                           "--repeat", "gen99"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --repeat: no finished profile gen99 in {tmp_path}"]
    assert list(tmp_path.iterdir()) == []


def test_run_noise_is_one_runs_spread_from_the_repeated_steps():
    # Two steps repeated, one reading 10% slower and one 10% faster: log ratios +-ln 1.1, so one run's spread is
    # ln(1.1) / sqrt(2); the step only the first run measured (90 req/s) pairs with nothing.
    rows = [{"profile": "gen08", "measured_steps": [[70.0, 100.0, 6000], [80.0, 120.0, 7000], [90.0, 150.0, 8000]],
             "repeats": [{"steps": [[70.0, 110.0, 6000], [80.0, 120.0 / 1.1, 7000]]}]},
            {"profile": "gen01", "measured_steps": [[50.0, 80.0, 5000]], "repeats": []}]
    noise = run_noise(rows)
    assert noise["pairs"] == 2 and noise["profiles"] == ["gen08"]
    assert abs(noise["run_noise"] - np.log(1.1) / np.sqrt(2)) < 1e-4
    assert abs(noise["log_ratio_mean"]) < 1e-4


def test_no_repeats_no_run_noise():
    assert run_noise([{"profile": "gen01", "measured_steps": [[50.0, 80.0, 5000]]}]) is None

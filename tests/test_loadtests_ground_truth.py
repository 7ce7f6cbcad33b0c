"""Open loop against a server with known, injected latency: the measured P99 is the true P99, and closed loop's
is not (coordinated omission)."""
import importlib.util
import json
import urllib.request

import numpy as np
import pytest

# Not imported here: importing locust monkey-patches the whole test process for gevent (sockets, subprocess, sleep),
# which other tests' servers and subprocesses do not survive. Runs happen in Locust's own processes.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from loadtests.cli import main as loadtests_main  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.schedule import arrivals  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import ClosedLoop, Ramp, Steps  # noqa: E402


UNDER_TOLERANCE = 0.05  # the histogram's resolution and the seconds of the step edges
RELEASE_ALLOWANCE = 0.15  # what answering a stall's queued requests at once adds to its tail (see below)


def true_latencies_ms(schedule, seed, start_epoch, config, step):
    """What each scheduled request should take, from the server's rule, at its *scheduled* time."""
    t = np.array([t for t, i in arrivals(schedule, "poisson", seed) if i == step]) + start_epoch
    phase = (t - config["epoch0"]) % config["stall_period_s"]
    stall = np.where(phase < config["stall_ms"] / 1000, config["stall_ms"] / 1000 - phase, 0.0)
    return (config["service_ms"] / 1000 + stall) * 1000


def test_open_loop_p99_matches_ground_truth_and_closed_loop_under_reports(stalling_server, tmp_path):
    config = json.loads(urllib.request.urlopen(stalling_server + "/stub/config").read())
    shape = Steps(rates=[300], step_duration=10, warmup=1)  # the truth is of the same requests
    sched = shape.schedule()
    opened = run_stress(StressSettings(host=stalling_server, model="cam", out=tmp_path, shape=shape, seed=11,
                                       metrics_url="", name="open", timeout_s=10))
    (step,) = opened.reported_steps()
    truth = true_latencies_ms(sched, 11, opened.start_epoch_s, config, step.index)
    true_p99 = float(np.quantile(truth, 0.99, method="higher"))
    assert step.errors == 0 and step.dropped == 0 and step.ok == len(truth)
    # Never under the truth (coordinated omission would be: closed loop below reports half of it). Over it by at
    # most the stall's release: the ~90 requests queued in a 300 ms stall are all answered at its end, one after
    # another by the stub and received one after another by Locust, which the server's rule leaves out; on two
    # shared cores that has taken up to 21 ms (298.5 against 277.8 on 2026-11-22).
    assert true_p99 * (1 - UNDER_TOLERANCE) <= step.latency_ms.p99 <= true_p99 * (1 + RELEASE_ALLOWANCE)
    assert true_p99 > 200  # the stalls are in the tail: 10% of arrivals land in one

    closed = run_stress(StressSettings(host=stalling_server, model="cam", out=tmp_path,
                                       shape=ClosedLoop(users=2, duration=6), metrics_url="", name="closed",
                                       timeout_s=10))
    (cstep,) = closed.steps
    assert cstep.ok > 1000
    # Two back-to-back users send one request per stall each, so stalls are well under 1% of their samples: the
    # tail they report is the service time, not the stall, though 10% of the time the server is stalled.
    assert cstep.latency_ms.p99 < 0.5 * true_p99
    assert closed.mode == "closed-loop" and cstep.offered_rate is None and cstep.concurrency == 2


def test_a_ramp_stops_after_the_step_that_passes_the_p99_bound(stalling_server, tmp_path):
    shape = Ramp(start=50, stop=400, factor=2, step_duration=2.5, warmup=0.5, p99_bound_ms=50)
    sched = shape.schedule()
    result = run_stress(StressSettings(host=stalling_server, model="cam", out=tmp_path, shape=shape,
                                       metrics_url="", timeout_s=5, name="ramp"))
    assert result.stopped["reason"] == "p99-bound"
    at = result.stopped["at_step"]
    assert result.steps[-1].index == at < len(sched.steps) - 1  # later steps were not run to the end
    assert result.steps[at].latency_ms.p99 > 50


def test_result_files_sit_together(stalling_server, tmp_path):
    run_stress(StressSettings(host=stalling_server, model="cam", out=tmp_path,
                              shape=Steps(rates=[20], step_duration=1.5, warmup=0), metrics_url="", name="r"))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"r.stress.json", "r_stats.csv", "r_stats_history.csv", "r.locust.json"} <= names
    locust_json = json.loads((tmp_path / "r.locust.json").read_text())
    assert sum(e["num_requests"] for e in locust_json) > 0


@pytest.mark.parametrize("argv,needle", [
    (["--rates", "100,0"], "must be a positive"),
    (["--rates", "-3"], "must be a positive"),
    (["--rates", "10", "--model", "nope"], "model 'nope' not found"),
    (["--rates", "10", "--ramp", "1:2:2"], "exactly one of"),
    (["--ramp", "10:5:2"], "start <= stop"),
    (["--closed-loop", "0"], "--closed-loop 0: Input should be greater than or equal to 1"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, needle, stalling_server, tmp_path, capsys):
    argv = ["run", "--host", stalling_server, "--out", str(tmp_path)] + (
        argv if "--model" in argv else argv + ["--model", "cam"])
    assert loadtests_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_unreachable_host_is_one_line(tmp_path, capsys):
    from gpufleet.net import free_port

    assert loadtests_main(["run", "--host", f"http://127.0.0.1:{free_port()}", "--model", "m", "--rates", "5",
                           "--out", str(tmp_path)]) == 2
    assert "host unreachable" in capsys.readouterr().err


def test_master_and_workers_on_loopback_share_the_rate(stalling_server, tmp_path):
    result = run_stress(StressSettings(host=stalling_server, model="cam", out=tmp_path,
                                       shape=Steps(rates=[200], step_duration=4, warmup=0), users=2, workers=2,
                                       metrics_url="", timeout_s=5, name="dist"))
    (step,) = result.steps
    assert result.workers == 2 and result.users == 2
    assert abs(step.sent - 800) < 4 * 800 ** 0.5  # the two workers' halves add up to the offered rate, once
    assert step.errors == 0 and step.ok == step.sent

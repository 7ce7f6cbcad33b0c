"""Issue 27, item 4: a stress result's steps carry Triton's utilization gauges, and `loadtests show` names the steps
where the host's CPU was saturated (`planner fit` leaves them out: tests/test_fit.py)."""
from __future__ import annotations

from gpufleet.contracts.stress_result import HOST_CPU_SATURATED, read_stress_result
from gpufleet.contracts.triton import BatchingConfig
from planner.service import ServerCost
from tests.cli_run import run_cli
from tests.synthetic import affine_profile, stress_result

CONFIG = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(),
                        instance_count=1)


def test_loadtests_show_flags_the_steps_where_the_hosts_cpu_was_saturated(tmp_path):
    """Each step's host CPU, mean (max), and the saturated ones named after the table."""
    profile = affine_profile()
    path = tmp_path / "busy.stress.json"
    stress_result(profile, CONFIG, [50.0, 80.0], overhead_ms=3.0, cost=ServerCost(2.0, 0.5, 1.2), duration_s=10,
                  seed=3, path=path, host_cpu=HOST_CPU_SATURATED + 0.05)
    show = run_cli("loadtests", ["show", str(path)], env={"COLUMNS": "250"})
    assert show.returncode == 0, show.stderr
    assert "95 (95) SATURATED" in show.stdout
    (line,) = [x for x in show.stdout.splitlines() if x.startswith("Host CPU saturated")]
    assert all(s.name in line for s in read_stress_result(path).reported_steps())


def test_loadtests_show_does_not_flag_a_calm_host(tmp_path):
    profile = affine_profile()
    path = tmp_path / "calm.stress.json"
    stress_result(profile, CONFIG, [50.0, 80.0], overhead_ms=3.0, cost=ServerCost(2.0, 0.5, 1.2), duration_s=10,
                  seed=3, path=path, host_cpu=0.4)
    show = run_cli("loadtests", ["show", str(path)], env={"COLUMNS": "250"})
    assert show.returncode == 0, show.stderr
    assert "40 (40)" in show.stdout and "SATURATED" not in show.stdout and "Host CPU saturated" not in show.stdout


def test_a_page_with_two_gpus_gives_the_host_cpu_and_the_busiest_gpu():
    """Triton's exposition (core r24.10 src/metrics.cc: one nv_gpu_utilization per gpu_uuid, nv_cpu_utilization
    unlabelled); no device here, so the GPU form is checked on a page written as Triton writes it."""
    from loadtests.triton_metrics import parse_gauges
    page = ("# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n# TYPE nv_gpu_utilization gauge\n"
            'nv_gpu_utilization{gpu_uuid="GPU-a"} 0.25\nnv_gpu_utilization{gpu_uuid="GPU-b"} 0.75\n'
            "# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]\n# TYPE nv_cpu_utilization gauge\n"
            "nv_cpu_utilization 0.5\n"
            'nv_inference_count{model="m",version="1"} 7\n')
    assert parse_gauges(page) == {"nv_gpu_utilization": 0.75, "nv_cpu_utilization": 0.5}

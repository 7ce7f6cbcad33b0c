"""A short open-loop step run against the real local Triton, server metrics included, over HTTP and gRPC."""
import importlib.util

import pytest

# Not imported here: importing locust monkey-patches the whole test process for gevent (sockets, subprocess, sleep),
# which other tests' servers and subprocesses do not survive. Runs happen in Locust's own processes.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)
import pytriton  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)

from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from serving.demo_models import write_onnx  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.repository import write_model  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from serving.triton_config import ModelSpec, onnx_tensors  # noqa: E402


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-for-loadtests")
    model = root / "tiny.onnx"
    write_onnx("tiny", model)
    batching = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=20_000, instance_count=1,
                                instance_kind="KIND_CPU")
    write_model(root / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), batching), model)
    server = LocalTriton(root / "repo", extra_args=["--exit-timeout-secs=5"]).start(timeout_s=90)
    yield server
    server.kill()  # its shutdown is not under test here (stop() waits ~3 s for Triton to unload)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_step_run_against_local_triton_with_server_metrics(triton, protocol, tmp_path):
    run = StressSettings(host=f"http://{triton.http_url}", model="tiny", out=tmp_path,
                         shape=Steps(rates=[40, 80], step_duration=3, warmup=1), protocol=protocol,
                    grpc_url=triton.grpc_url if protocol == "grpc" else "", metrics_url=triton.metrics_url,
                    timeout_s=10, name=protocol)
    result = run_stress(run)
    assert read_stress_result(run.result_path) == result
    assert result.target.input_shape == [3, 32, 32] and result.target.protocol == protocol
    # The run records the config Triton actually loaded, which is what `planner fit` simulates.
    assert result.target.triton is not None
    assert (result.target.triton.max_batch_size, result.target.triton.max_queue_delay_microseconds,
            result.target.triton.instance_count) == (8, 20_000, 1)
    reported = result.reported_steps()
    assert [s.offered_rate for s in reported] == [40, 80]
    for s in reported:
        assert s.errors == 0 and s.ok > 0.5 * s.offered_rate * s.duration_s
        srv = s.server
        assert srv is not None
        # Triton counted what we sent in that step (boundaries are a scrape apart, so allow the edges).
        assert srv.request_success == pytest.approx(s.ok, abs=max(5, 0.1 * s.ok))
        assert srv.mean_batch_size >= 1 and srv.execution_count <= srv.inference_count
        assert srv.compute_infer_us_per_request > 0
    # 20 ms of queue delay at 80 req/s: the batcher groups requests, so executions fall behind inferences.
    assert reported[1].server.mean_batch_size > 1.0


def test_each_step_records_the_hosts_cpu_utilization_sampled_through_it(triton, tmp_path):
    """Issue 27, item 4: Triton's nv_cpu_utilization is a gauge, so it is sampled through each step (about once a
    second), not read at the boundaries: every step has its own mean and max, each a share of the whole host."""
    run = StressSettings(host=f"http://{triton.http_url}", model="tiny", out=tmp_path,
                         shape=Steps(rates=[40, 80], step_duration=3, warmup=0), metrics_url=triton.metrics_url,
                         timeout_s=10, name="gauges")
    for s in run_stress(run).reported_steps():
        srv = s.server
        assert srv.utilization_samples >= 2, s
        assert 0 < srv.cpu_utilization_mean <= srv.cpu_utilization_max <= 1, s

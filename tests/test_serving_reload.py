"""Hot reload on the real local Triton under open-loop load from loadtests: a version published mid-run takes over
with no request failed. Nothing here is judged in real time (no latency, only counts and states), so it runs beside
other tests (it left tests/test_serving_rollout.py, which runs alone)."""
import importlib.util
import threading
import time
import urllib.request

import pytest

# Not imported here: importing locust monkey-patches the whole test process for gevent; runs happen in Locust's own
# processes.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)
import pytriton  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import tritonclient.http as httpclient  # noqa: E402
import numpy as np  # noqa: E402

from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.standin import STANDIN_INPUT, StandIn  # noqa: E402

from tests.synthetic import affine_profile  # noqa: E402

POLL_S = 1


def polling_triton(repo) -> LocalTriton:
    return LocalTriton(repo, extra_args=["--model-control-mode=poll", f"--repository-poll-secs={POLL_S}",
                                         "--exit-on-error=false", "--exit-timeout-secs=5"])


def success_by_version(metrics_url: str, model: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{") and f'model="{model}"' in line:
            version = line.split('version="', 1)[1].split('"', 1)[0]
            out[version] = float(line.rsplit(" ", 1)[1])
    return out


def test_publishing_version_2_under_open_loop_load_fails_no_request(tmp_path):
    standin = StandIn("standin", affine_profile("standin", base_ms=8.0, per_image_ms=1.0, sizes=(1, 2, 4, 8)))
    batching = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000)
    standin.write(tmp_path / "repo", batching, version=1)
    shape = Steps(rates=[40], step_duration=14, warmup=1)
    with polling_triton(tmp_path / "repo") as triton:
        settings = StressSettings(host=f"http://{triton.http_url}", model="standin", out=tmp_path / "run",
                                  shape=shape, metrics_url=triton.metrics_url, timeout_s=10, name="reload")
        published = {}

        def publish():
            time.sleep(4.0)  # well inside the measured step (warm-up ends at 1 s)
            published["before"] = success_by_version(triton.metrics_url, "standin")
            published["at"] = time.time()
            standin.write(tmp_path / "repo", batching, version=2)

        publisher = threading.Thread(target=publish)
        publisher.start()
        result = run_stress(settings)
        publisher.join()
        after = success_by_version(triton.metrics_url, "standin")
        client = httpclient.InferenceServerClient(triton.http_url)
        inp = httpclient.InferInput(STANDIN_INPUT.name, [1, *STANDIN_INPUT.dims], "UINT8")
        inp.set_data_from_numpy(np.zeros((1, *STANDIN_INPUT.dims), np.uint8))
        answered_by = client.infer("standin", [inp]).get_response()["model_version"]
        index = {(m["name"], m.get("version")): m.get("state") for m in client.get_model_repository_index()}

    (step,) = result.reported_steps()
    run_end = result.start_epoch_s + step.start_s + step.duration_s
    assert result.start_epoch_s + step.start_s < published["at"] < run_end - 5  # the switch fell inside the step
    assert step.sent > 400 and step.ok == step.sent
    assert step.errors == 0 and step.rejected == 0 and step.dropped == 0, step.error_kinds
    # Version 1 served before the switch; version 2 served load afterwards and answers now; version 1 is unloaded.
    assert published["before"].get("1", 0) > 0
    assert after.get("2", 0) > 0
    assert answered_by == "2"
    assert index[("standin", "2")] == "READY" and index.get(("standin", "1")) != "READY"

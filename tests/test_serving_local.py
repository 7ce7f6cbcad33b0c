"""A real Triton (the tritonserver bundled with nvidia-pytriton) loading gpufleet's generated config, on loopback."""
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pytriton  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import onnxruntime as ort  # noqa: E402
from tritonclient import http as httpclient  # noqa: E402
from tritonclient import grpc as grpcclient  # noqa: E402

from serving.demo_models import write_onnx  # noqa: E402
from serving.local import LocalTriton, Ports, TritonStartError, stub_regions  # noqa: E402
from serving.repository import write_model  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from serving.triton_config import ModelSpec, TensorSpec, onnx_tensors  # noqa: E402

from gpufleet.net import free_ports  # noqa: E402

BATCHING = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=100_000, preferred_batch_sizes=(8,),
                            instance_count=2, instance_kind="KIND_CPU")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("local-triton")
    model = root / "tiny.onnx"
    write_onnx("tiny", model)
    spec = ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING, warmup_batch_sizes=(1, 8))
    write_model(root / "repo", spec, model)
    server = LocalTriton(root / "repo", extra_args=["--exit-timeout-secs=5"])
    server.start(timeout_s=90)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    yield server, session
    server.kill()  # its shutdown is not under test here (test_sigterm_stops_triton_cleanly is)


def group_gone(pgid: int, within_s: float = 10.0) -> bool:
    """True once no process is left in the group (SIGKILLed children take a moment to be reaped)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def frames(n, seed=0):
    return np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)


def metric(server, name, model="tiny"):
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_kserve_v2_http_with_binary_tensor_data(served):
    server, session = served
    x = frames(3)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer("tiny", [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)])
    finally:
        client.close()
    out = result.get_response()["outputs"][0]
    assert out["parameters"]["binary_data_size"] == 3 * 10 * 4  # the output came back as raw bytes, not JSON
    np.testing.assert_allclose(result.as_numpy("logits"), session.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)


def test_kserve_v2_grpc(served):
    server, session = served
    x = frames(5, seed=1)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("tiny", [inp])
        assert client.is_server_ready() and client.is_model_ready("tiny")
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("logits"), session.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)


def test_triton_loaded_the_generated_config(served):
    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        cfg = client.get_model_config("tiny").config
    finally:
        client.close()
    assert cfg.backend == "python" and cfg.max_batch_size == 8
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100_000
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8]
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, cfg.instance_group[0].KIND_CPU)]
    assert [w.batch_size for w in cfg.model_warmup] == [1, 8]


def test_dynamic_batcher_groups_concurrent_requests(served):
    server, session = served
    before = (metric(server, "nv_inference_count"), metric(server, "nv_inference_exec_count"))
    x = frames(1, seed=2)

    def one(_):
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return client.infer("tiny", [inp]).as_numpy("logits")
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(one, range(16)))
    expected = session.run(None, {"input": x})[0]
    for out in outs:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    inferences = metric(server, "nv_inference_count") - before[0]
    executions = metric(server, "nv_inference_exec_count") - before[1]
    assert inferences == 16
    assert executions < inferences  # 100 ms of queue delay let the batcher put several requests in one execution


def test_sigterm_stops_triton_cleanly(tmp_path):
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    server = LocalTriton(tmp_path / "repo", extra_args=["--exit-timeout-secs=5"]).start(timeout_s=90)
    pid = server._proc.pid
    workdir = server.log_path.parent  # its copy of the server and its log (other tests' servers have their own)
    assert workdir.is_dir()
    assert server.stop() == 0
    assert group_gone(pid)  # no stub or server left in its process group
    assert not server.ready()
    assert not workdir.exists()  # no server copy and no log left under /tmp (a log is kept only when asked)


def test_a_killed_server_leaves_no_process_and_no_shared_memory(tmp_path):
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    server = LocalTriton(tmp_path / "repo").start(timeout_s=90)
    pid = server._proc.pid
    regions = stub_regions(pid)
    assert regions and all(r.exists() for r in regions)  # one per stub while it serves
    assert server.kill() == -signal.SIGKILL
    assert group_gone(pid)
    assert [r.name for r in regions if r.exists()] == []  # what only Triton's own shutdown removes


def test_a_config_that_does_not_match_the_model_fails_to_start_with_one_line(tmp_path):
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    wrong = ModelSpec("tiny", "python", (TensorSpec("input", "float32", (3, 64, 64)),),
                      onnx_tensors(model)[1], BATCHING)  # warm-up feeds 64x64 frames to a 32x32 model
    write_model(tmp_path / "repo", wrong, model)
    server = LocalTriton(tmp_path / "repo", extra_args=["--exit-timeout-secs=5"])
    with pytest.raises(TritonStartError) as info:
        server.start(timeout_s=90)
    assert "\n" not in str(info.value) and "tiny" in str(info.value), str(info.value)
    assert group_gone(server._proc.pid)  # nothing it started (the backend stubs) is left running


def test_a_server_that_crashes_before_logging_why_is_named_with_its_signal_and_models(tmp_path):
    # Seen on a CI run: the wrong-warm-up model above made tritonserver exit with SIGSEGV before it logged the load
    # failure, and the message quoted an unrelated line ("failed to allocate pinned system memory ...").
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    server = LocalTriton(tmp_path / "repo", log_path=tmp_path / "triton.log")
    (tmp_path / "triton.log").write_text("W1203 10:56:01.1 1 pinned_memory_manager.cc:273] \"failed to allocate "
                                         "pinned system memory: no pinned memory pool, falling back to non-pinned "
                                         "system memory\"\n")
    server._proc = subprocess.Popen(["sh", "-c", "kill -SEGV $$"])
    server._proc.wait(10)
    message = server.exit_message()
    assert "SIGSEGV" in message and "tiny" in message and "pinned" not in message, message


def test_a_server_refusing_its_arguments_is_named_with_triton_s_reason(tmp_path):
    # Triton prints its usage and the reason, no error line, and exits 1 when two endpoints share a port; the message
    # said "exited with 1 while loading ..., before it logged why" (a CI run's fixture), hiding the reason.
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    port, other = free_ports(2)
    server = LocalTriton(tmp_path / "repo", Ports(http=port, grpc=other, metrics=port))
    with pytest.raises(TritonStartError) as info:
        server.start(timeout_s=60)
    message = str(info.value)
    assert "\n" not in message and "same address and port" in message and str(port) in message, message


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serving_local_command_serves_then_stops_on_signal(sig, tmp_path):
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "serving.cli", "local", "--demo", "tiny", "--max-batch-size", "4",
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready("tiny"):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        inp = httpclient.InferInput("input", [2, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(frames(2), binary_data=True)
        assert client.infer("tiny", [inp]).as_numpy("logits").shape == (2, 10)
        client.close()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Triton stopped (exit status 0)" in err


def test_serving_local_standin_serves_a_profile_by_sleeping(tmp_path):
    """``--standin PROFILE``: Triton's real HTTP path and batcher in front of a model that sleeps the profile's time."""
    from gpufleet.contracts.profile import read_profile, write_profile
    from importlib import resources
    from serving.standin import STANDIN_INPUT

    prof = read_profile(resources.files("planner.data").joinpath("profiles/yolov8x-1280x720-T4.json"))
    path = tmp_path / "profile.json"
    write_profile(prof, path)
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "serving.cli", "local", "--standin", str(path), "--max-batch-size", "4",
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = prof.model
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready(name):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        inp = httpclient.InferInput(STANDIN_INPUT.name, [1, *STANDIN_INPUT.dims], "UINT8")
        inp.set_data_from_numpy(np.zeros((1, *STANDIN_INPUT.dims), np.uint8), binary_data=True)
        started = time.perf_counter()
        client.infer(name, [inp])
        took_ms = (time.perf_counter() - started) * 1000
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # At least the profile's fastest batch-1 time (its quantile table's left end), which is tens of ms here.
    assert took_ms >= 0.7 * prof.batches[0].p50_ms, took_ms
    assert proc.returncode == 0, err


def test_serving_local_refuses_two_sources_and_a_bad_profile(tmp_path):
    from tests.cli_run import run_cli

    both = run_cli("serving", ["local", "--demo", "tiny", "--standin", "p.json"], cwd=tmp_path)
    assert both.returncode == 2 and "give one of" in both.stderr and len(both.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{}")
    bad = run_cli("serving", ["local", "--standin", str(tmp_path / "bad.json")])
    assert bad.returncode == 2 and "bad.json" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# --- ports another server holds, and readiness judged on our own server (issue 25, item 2) ----------------------

def _listening_socket():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("taken", ["--http-port", "--grpc-port", "--metrics-port"])
def test_serving_local_refuses_a_port_another_server_holds(taken, tmp_path):
    """Another KServe server answers ready on the HTTP port (or something listens on the gRPC or metrics port):
    `serving local` says which port, and the option that moves it, in one line, exit 2; it never says ready."""
    from tests.cli_run import run_cli

    from .conftest import start_stub

    stub, _ = start_stub(model="tiny", input_shape="3,32,32")
    other = _listening_socket()
    try:
        ports = dict(zip(("--http-port", "--grpc-port", "--metrics-port"), free_ports(3)))
        ports[taken] = int(stub.args[stub.args.index("--port") + 1]) if taken == "--http-port" \
            else other.getsockname()[1]
        args = ["local", "--demo", "tiny"]
        for option, port in ports.items():
            args += [option, str(port)]
        run = run_cli("serving", args, timeout_s=120)
    finally:
        stub.terminate()
        stub.wait(10)
        other.close()
    assert run.returncode == 2, run.stderr
    assert "Triton ready" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert taken in line and str(ports[taken]) in line, line


def test_local_triton_is_ready_only_when_its_own_server_is(tmp_path):
    """A ready answer from another server on our HTTP port is not our Triton being ready: start fails with the
    server's own reason (the port in use), never returns."""
    from .conftest import start_stub

    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "repo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    stub, _ = start_stub(model="tiny", input_shape="3,32,32")
    try:
        http = int(stub.args[stub.args.index("--port") + 1])
        server = LocalTriton(tmp_path / "repo", Ports(http, *free_ports(2)),
                             extra_args=["--exit-timeout-secs=5"])
        try:
            with pytest.raises(TritonStartError) as info:
                server.start(timeout_s=90)
        finally:
            server.stop()
    finally:
        stub.terminate()
        stub.wait(10)
    assert "\n" not in str(info.value) and str(http) in str(info.value), str(info.value)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_serving_local_exits_1_when_triton_dies(tmp_path):
    """Triton going away with an error status (here killed) is a run failure: one line, exit 1."""
    from .conftest import console

    ports = free_ports(3)
    proc = subprocess.Popen([console("serving"), "local", "--demo", "tiny", "--http-port", str(ports[0]),
                             "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    seen = []
    try:
        # Killed only once the command has said ready: the failure under test is Triton's, after a good start.
        while not any(line.startswith("Triton ready") for line in seen):
            seen.append(lines.get(timeout=90))
        (triton,) = _children(proc.pid)
        os.kill(triton, signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen += list(lines.queue)
    assert proc.returncode == 1, seen
    last = seen[-1]
    assert "exit status" in last and "-9" in last, seen


# --- the README's hot reload, as typed (issue 25, item 5) --------------------------------------------------------

def _index(client) -> dict[tuple[str, str], dict]:
    return {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}


def test_readme_hot_reload_serving_repo_publishes_version_2_into_the_local_triton(tmp_path):
    """README: `serving local tiny.onnx --repository hrepo/ --poll-s 1`, then `serving repo tiny.onnx hrepo/
    --version 2`: version 2 loads (READY, answering) and version 1 is unloaded. Triton runs as the README's shell 1
    does, in its own process; the other commands call the console's main(argv) in-process (tests/cli_run.py)."""
    from tests.cli_run import run_cli

    from .conftest import console

    serving = console("serving")
    made = run_cli("serving", ["demo-model", "tiny", "tiny.onnx"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ports = free_ports(3)
    proc = subprocess.Popen([serving, "local", "tiny.onnx", "--repository", "hrepo/", "--poll-s", "1",
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                             "--metrics-port", str(ports[2])],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready("tiny", "1"):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        published = run_cli("serving", ["repo", "tiny.onnx", "hrepo/", "--version", "2"], cwd=tmp_path)
        assert published.returncode == 0, published.stderr
        deadline = time.monotonic() + 60
        index = _index(client)
        # Poll until version 2 settles: READY, or a state with a reason (UNAVAILABLE) once Triton gave up on it.
        while time.monotonic() < deadline and not (index.get(("tiny", "2"), {}).get("reason")
                                                   or index.get(("tiny", "2"), {}).get("state") == "READY"
                                                   and index.get(("tiny", "1"), {}).get("state") != "READY"):
            time.sleep(0.5)
            index = _index(client)
        inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(frames(1), binary_data=True)
        v2 = index.get(("tiny", "2"), {})
        assert v2.get("state") == "READY", v2
        assert client.infer("tiny", [inp]).get_response()["model_version"] == "2"
        assert index.get(("tiny", "1"), {}).get("state") != "READY"
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serving_repo_keeps_a_production_repository_in_production_form(tmp_path):
    """A repository `serving repo` wrote (ONNX Runtime platform) gets version 2 in the same form: only a repository a
    local Triton serves gets the local one."""
    from tests.cli_run import run_cli

    made = run_cli("serving", ["demo-model", "tiny", "tiny.onnx"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    for version in ("1", "2"):
        run = run_cli("serving", ["repo", "tiny.onnx", "prod/", "--version", version], cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    config = (tmp_path / "prod" / "tiny" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "backend" not in config
    assert sorted(p.name for p in (tmp_path / "prod" / "tiny" / "2").iterdir()) == ["model.onnx"]


def test_serving_repo_refuses_to_upload_a_local_triton_s_model(tmp_path):
    """A local Triton's model (Python backend, CPU instances) is not one for the stack: `--upload` is refused, in one
    line, and the repository is left as it was."""
    from tests.cli_run import run_cli

    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    write_model(tmp_path / "hrepo", ModelSpec("tiny", "python", *onnx_tensors(model), BATCHING), model)
    run = run_cli("serving", ["repo", "tiny.onnx", "hrepo/", "--version", "2", "--upload", "s3://models/dev/tiny/L4"],
                  cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "hrepo/tiny" in line and "local" in line, line
    assert not (tmp_path / "hrepo" / "tiny" / "2").exists()

"""Shared fixtures: servers on loopback, bounded in time, always stopped; and, under pytest-xdist, the rule that a
real-time test runs alone."""
import contextlib
import fcntl
import os
import tempfile
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from gpufleet.net import free_port

# Files whose tests measure in real time: Locust runs whose latencies, rates or verdicts are judged against
# predictions, bounds or the fit's needs, and Triton's readiness within a probe's period. The suite runs under
# pytest-xdist (pyproject's addopts: `-n auto --dist loadfile`: one file per worker at a time, so module fixtures
# start once); each of their tests runs alone: no other worker runs a test
# meanwhile, since on two cores a CPU-bound planner test beside it would change what it measures. Every other test
# holds the CPU lock shared, so those run side by side; test_serving_local starts Triton many times but measures no
# latency (its bounds are generous deadlines and a lower bound), so it is one of them.
ALONE = frozenset({
    "test_closed_loop.py", "test_colocate_local.py", "test_first_deploy_local.py", "test_loadtests_ground_truth.py",
    "test_loadtests_calibrate.py", "test_loadtests_knee.py", "test_loadtests_verify.py", "test_serving_rollout.py",
    "test_production_live.py",
})
# The files that run beside others and take longest, longest first (seconds of a quiet run at 2026-12-04: 63, 47,
# 25, 24, 23): started first among those files, so none of them is left running alone at the end.
LONGEST_SHARED = ("test_readme_loadtests.py", "test_serving_local.py", "test_loadtests_triton.py",
                  "test_serving_reload.py", "test_loadtests_overdue.py")
# Not here: test_readme_loadtests.py runs the README's commands for what they leave behind (files, exit statuses,
# no errors), judging no latency; its calibrate is cut to seconds, so its recommend opens the width gate and its
# verify may find a promise broken (that verdict is not its subject). test_loadtests_triton.py checks what a step
# records from Triton (counts, batches over one, utilization samples), and test_serving_reload.py that a version
# published under load fails no request: counts and states, no time judged.


@contextlib.contextmanager
def _flock(path: Path, mode: int):
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_files(run_id: str) -> tuple[Path, Path]:
    base = Path(tempfile.gettempdir()) / f"gpufleet-pytest-{run_id}"
    return base.with_suffix(".turnstile"), base.with_suffix(".cpu")


@contextlib.contextmanager
def _cpu_lock(run_id: str, alone: bool):
    """A readers-writer lock over the run's workers (flock on two files in the temp folder): a real-time test holds
    it exclusively, any other test shared. Passing the turnstile first makes a waiting real-time test hold back new
    shared holders, so it waits only for the tests already running, never for ever."""
    turnstile, cpu = _lock_files(run_id)
    with contextlib.ExitStack() as held:
        with _flock(turnstile, fcntl.LOCK_EX):
            if alone:
                held.enter_context(_flock(cpu, fcntl.LOCK_EX))
        if not alone:
            held.enter_context(_flock(cpu, fcntl.LOCK_SH))
        yield


# The exclusive hold of the real-time file running on this worker: taken at its first test, given back after its
# last (pytest's ``nextitem``), so the other worker waits once per file, not once per test. Each wait lasts until
# the other worker's current test ends, one core idle meanwhile: per test, they added up to over a minute.
_held_alone: contextlib.ExitStack | None = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown (so module fixtures' servers too) inside the CPU lock, when xdist runs workers."""
    global _held_alone
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        yield
        return
    if item.path.name not in ALONE:
        with _cpu_lock(run_id, alone=False):
            yield
        return
    if _held_alone is None:
        _held_alone = contextlib.ExitStack()
        _held_alone.enter_context(_cpu_lock(run_id, alone=True))
    try:
        yield
    finally:
        if nextitem is None or nextitem.path != item.path:
            _held_alone.close()
            _held_alone = None


def pytest_collection_modifyitems(session, config, items):
    """Under xdist, the real-time files first: while they run, the other worker waits for the exclusive hold and
    loses nothing (the file holding it has both cores), whereas one that comes due beside CPU-bound tests idles a
    core until the test running there ends. Then the longest of the others (LONGEST_SHARED), so the run does not end
    with one worker finishing a long file while the other idles (14 s of a 465 s run before). The rest keep their
    order. The scheduler keeps this order only with ``--no-loadscope-reorder`` (pyproject's addopts); by default it
    sorts files by their number of tests."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return

    def rank(item) -> tuple[bool, int]:
        name = item.path.name
        return name not in ALONE, LONGEST_SHARED.index(name) if name in LONGEST_SHARED else len(LONGEST_SHARED)

    items.sort(key=rank)  # stable: each group keeps collection order


def pytest_configure(config):
    # The controller names the run (xdist passes the id to every worker), so it can remove the lock files after.
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput") \
            and config.option.testrunuid is None:
        config.option.testrunuid = uuid.uuid4().hex


def pytest_unconfigure(config):
    run_id = getattr(config.option, "testrunuid", None)
    if run_id and not hasattr(config, "workerinput"):  # the controller, once every worker has finished
        for path in _lock_files(run_id):
            path.unlink(missing_ok=True)


# Debian's prometheus package brings the server and promtool (README command 2 and .ci/run install it).
PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus"


def prometheus_tool(name: str) -> str:
    """The installed ``prometheus`` or ``promtool``: a test that needs Prometheus' own engine fails without it, in one
    line naming the install (never skips: CI installs it, and a skip would pass what was never tested)."""
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: Prometheus' own engine runs these tests. Install Debian's prometheus "
                    f"package: `{PROMETHEUS_INSTALL}` (README command 2 and .ci/run do)", pytrace=False)
    return path


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
    """Stop a server the test started: ``sig`` (SIGINT for the user's Ctrl-C), up to ``grace_s`` to exit, then
    SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_prometheus_ready(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    """Until the Prometheus server ``proc`` at ``url`` answers its readiness endpoint; fails with its stderr's tail if
    it exits, or when ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"prometheus not ready in {timeout_s} s"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto_server on 127.0.0.1 (AWS APIs in-process, no network); yields its endpoint URL."""
    import moto  # noqa: F401 (in [test]: a broken install fails, never skips)
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials so boto3 never looks for real ones."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return os.environ


def start_stub(**params):
    """loadtests.stub_server in its own process on a free loopback port; returns (process, base URL)."""
    port = free_port()
    args = [sys.executable, "-m", "loadtests.stub_server", "--port", str(port)]
    for key, value in params.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/v2/health/ready", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("stub server did not start within 20 s")


@pytest.fixture(scope="module")
def stalling_server():
    """A KServe v2 stub: 5 ms per request, and a 300 ms stall at the start of every 3 s."""
    proc, url = start_stub(service_ms=5, stall_period_s=3, stall_ms=300, model="cam", input_shape="3,64,64")
    yield url
    proc.terminate()
    proc.wait(10)


def console(name: str) -> str:
    """The installed console entry ``name`` (``serving``, ``planner``, ...) beside this interpreter: what the README
    types."""
    import shutil

    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe, f"console entry {name} not installed: pip install -e '.[test]'"
    return exe


def fresh_bucket(endpoint_url: str, bucket: str) -> None:
    """``bucket`` in the session's moto_server, made if missing and emptied: tests share the server, and several use
    the bucket name a previewed stack gives its models bucket."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=bucket)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])

"""Run one stress test: start Locust headless on :mod:`loadtests.locustfile` with the settings, return the result.

Everything that can be checked before load is sent is checked first, so a bad argument costs one line and exit
status 2 and no partial run: the settings' own validators (rates, durations, URLs, names), then :func:`preflight`
(the output folder, the host reachable and ready, the model present with a usable input). The run always ends by
itself: the shape's length plus the request timeout bounds it, and Locust's ``--run-time`` is set past that as a
backstop.
"""
from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from gpufleet.contracts.io import check_output_dir
from gpufleet.errors import InputError, RunFailure
from gpufleet.contracts.stress_result import StressResult, read_stress_result
from gpufleet.net import free_port
from loadtests import kserve
from loadtests.errors import LoadTestInputError
from loadtests.settings import SETTINGS_ARG, StressSettings

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Bounds on waiting for processes: the master past its own bound, workers once the master told them to quit, and
# any process after SIGINT before it is killed.
MASTER_GRACE_S = 60.0
WORKER_QUIT_S = 15.0
INTERRUPT_GRACE_S = 10.0
# The readiness check before the run waits at most this long for the server, whatever the request timeout.
PREFLIGHT_TIMEOUT_S = 5.0


def preflight(settings: StressSettings) -> kserve.Target:
    """What needs the disk or the network, checked before any load: the output folder, then the server and model."""
    try:
        check_output_dir(settings.out, "stress results")
    except InputError as exc:
        raise LoadTestInputError(str(exc)) from None
    return kserve.resolve(settings.host, settings.model, settings.version,
                          timeout_s=min(PREFLIGHT_TIMEOUT_S, settings.timeout_s))


def worker_command(settings: StressSettings, master_port: int, master_host: str = "127.0.0.1") -> list[str]:
    """A worker: it takes every setting from the master when the run starts."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), settings.shape.user_class, "--worker",
            "--headless", "--master-host", master_host, "--master-port", str(master_port)]


def locust_command(settings: StressSettings, master_port: int | None = None,
                   bind_host: str | None = "127.0.0.1") -> list[str]:
    """The Locust command line (a master when ``master_port`` is given, bound to ``bind_host`` if not None)."""
    users = settings.locust_users
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), settings.shape.user_class, "--headless",
           "--only-summary", "-u", str(users), "-r", str(users), "--run-time", f"{settings.run_time_s()}s",
           "--stop-timeout", str(math.ceil(settings.timeout_s)), "--host", settings.host,
           "--csv", str(settings.locust_prefix), "--csv-full-history",
           "--json-file", str(settings.out / f"{settings.name}.locust"),
           SETTINGS_ARG, settings.model_dump_json()]
    if master_port is not None:
        cmd += ["--master", "--expect-workers", str(settings.workers), "--master-bind-port", str(master_port)]
        if bind_host:
            cmd += ["--master-bind-host", bind_host]
    return cmd


def run_stress(settings: StressSettings, echo=None) -> StressResult:
    """Check, run Locust to completion, and return the stress result it wrote.

    ``echo`` receives the Locust command line (for the record and for running it by hand).
    """
    preflight(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    if settings.result_path.exists():
        settings.result_path.unlink()  # a stale result must not pass for this run's
    master_port = free_port() if settings.workers else None
    cmd = locust_command(settings, master_port)
    if echo:
        echo(" ".join(shlex.quote(c) for c in cmd))
    log_path = settings.log_path
    procs: list[subprocess.Popen] = []
    with open(log_path, "wb") as log:
        try:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            for _ in range(settings.workers):
                procs.append(subprocess.Popen(worker_command(settings, master_port), stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            try:
                procs[0].wait(timeout=settings.bound_s() + MASTER_GRACE_S)
            except subprocess.TimeoutExpired:
                raise LoadTestRunError(f"locust did not finish within its bound; see {log_path}") from None
            for worker in procs[1:]:
                try:
                    worker.wait(timeout=WORKER_QUIT_S)  # workers quit when the master tells them to
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=settings.timeout_s + INTERRUPT_GRACE_S)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    if not settings.result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
        raise LoadTestRunError(f"locust exited with {procs[0].returncode} and wrote no result; last log line: "
                               f"{tail[0]} (log: {log_path})")
    return read_stress_result(settings.result_path)


class LoadTestRunError(RunFailure):
    """The run itself failed (Locust crashed or overran its bound); one line pointing at its log."""

"""Run one stress test: check the arguments, start Locust headless on :mod:`loadtests.locustfile`, return the result.

Everything that can be checked before load is sent is checked here, so a bad argument costs one line and exit
status 2 and no partial run: rates and durations, the host (reachable, ready), the model (present, with a usable
input), and the metrics URL. The run always ends by itself: the schedule's length plus the request timeout bounds
it, and Locust's ``--run-time`` is set past that as a backstop.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.contracts.io import check_output_dir
from gpufleet.errors import InputError, RunFailure
from gpufleet.net import check_host_port, check_url, free_port
from loadtests import kserve
from loadtests.errors import LoadTestInputError
from gpufleet.contracts.stress_result import StressResult, read_stress_result
from loadtests.schedule import Schedule

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass
class StressRun:
    """One run's settings. ``schedule`` is None in closed-loop mode (``users`` back-to-back senders)."""

    host: str
    model: str
    out_dir: Path
    schedule: Schedule | None = None
    users: int = 1
    closed_loop_s: float = 30.0
    version: str = ""
    protocol: str = "http"
    grpc_url: str = ""
    arrival: str = "poisson"
    seed: int = 0
    request_batch: int = 1
    late_ms: float = 1.0
    timeout_s: float = 30.0
    max_in_flight: int = 10_000
    metrics_url: str | None = None  # None: http://<host>:8002/metrics; "" for none
    p99_bound_ms: float = 0.0
    max_error_share: float = 1.0
    name: str = "run"
    workers: int = 0  # > 0: a Locust master on loopback and this many worker processes
    extra_locust_args: list[str] = field(default_factory=list)

    @property
    def result_path(self) -> Path:
        return self.out_dir / f"{self.name}.stress.json"

    def check(self) -> kserve.Target:
        """Validate everything; return the resolved target."""
        if self.users < 1:
            raise LoadTestInputError(f"users {self.users}: must be >= 1")
        if not 0 <= self.workers <= 64:
            raise LoadTestInputError(f"workers {self.workers}: must be 0 (one process) to 64")
        if self.schedule is None and not (math.isfinite(self.closed_loop_s) and self.closed_loop_s > 0):
            raise LoadTestInputError(f"duration {self.closed_loop_s}: must be > 0 s")
        for name, v in (("timeout", self.timeout_s), ("late threshold", self.late_ms)):
            if not (math.isfinite(v) and v > 0):
                raise LoadTestInputError(f"{name} {v}: must be > 0")
        if self.request_batch < 1:
            raise LoadTestInputError(f"request batch {self.request_batch}: must be >= 1")
        if not 0 <= self.max_error_share <= 1:
            raise LoadTestInputError(f"max error share {self.max_error_share}: must be in [0, 1]")
        if self.protocol == "grpc" and not self.grpc_url:
            raise LoadTestInputError("protocol grpc needs --grpc-url host:port")
        if not self.model:
            raise LoadTestInputError("a model name is required (--model)")
        if not (math.isfinite(self.p99_bound_ms) and self.p99_bound_ms >= 0):
            raise LoadTestInputError(f"--p99-bound-ms {self.p99_bound_ms}: must be >= 0")
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise LoadTestInputError(f"--name {self.name!r}: use letters, digits, '-', '_' and '.' (a file name stem)")
        try:
            check_url(self.host, "--host")
            if self.protocol == "grpc":
                check_host_port(self.grpc_url, "--grpc-url")
            if self.metrics_url:
                check_url(self.metrics_url, "--metrics-url")
            check_output_dir(self.out_dir, "stress results")
        except InputError as exc:
            raise LoadTestInputError(str(exc)) from None
        return kserve.resolve(self.host, self.model, self.version, timeout_s=min(5.0, self.timeout_s))

    def resolved_metrics_url(self) -> str:
        if self.metrics_url is not None:
            return self.metrics_url
        host = urllib.parse.urlparse(self.host).hostname
        return f"http://{host}:8002/metrics"

    def bound_s(self) -> float:
        length = self.schedule.duration_s if self.schedule else self.closed_loop_s
        return length + self.timeout_s + 30.0

    @property
    def user_class(self) -> str:
        return "OpenLoopUser" if self.schedule is not None else "ClosedLoopUser"

    def worker_command(self, master_port: int, master_host: str = "127.0.0.1") -> list[str]:
        """A worker: it takes every setting from the master when the run starts."""
        return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), self.user_class, "--worker", "--headless",
                "--master-host", master_host, "--master-port", str(master_port)]

    def locust_command(self, master_port: int | None = None, bind_host: str | None = "127.0.0.1") -> list[str]:
        """The Locust command line (a master when ``master_port`` is given, bound to ``bind_host`` if not None)."""
        user = self.user_class
        prefix = self.out_dir / self.name
        files = {"stats_csv": f"{prefix}_stats.csv", "history_csv": f"{prefix}_stats_history.csv",
                 "failures_csv": f"{prefix}_failures.csv", "json": f"{prefix}.locust.json"}
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), user, "--headless", "--only-summary",
               "-u", str(self.users), "-r", str(self.users), "--run-time", f"{math.ceil(self.bound_s())}s",
               "--stop-timeout", str(math.ceil(self.timeout_s)), "--host", self.host,
               "--csv", str(prefix), "--csv-full-history", "--json-file", str(self.out_dir / f"{self.name}.locust"),
               "--gf-model", self.model, "--gf-version", self.version, "--gf-protocol", self.protocol,
               "--gf-grpc-url", self.grpc_url, "--gf-arrival", self.arrival, "--gf-seed", str(self.seed),
               "--gf-generators", str(self.users),
               "--gf-duration", str(self.closed_loop_s), "--gf-request-batch", str(self.request_batch),
               "--gf-late-ms", str(self.late_ms), "--gf-timeout-s", str(self.timeout_s),
               "--gf-max-in-flight", str(self.max_in_flight), "--gf-metrics-url", self.resolved_metrics_url(),
               "--gf-p99-bound-ms", str(self.p99_bound_ms), "--gf-max-error-share", str(self.max_error_share),
               "--gf-result", str(self.result_path), "--gf-locust-files", json.dumps(files)]
        if self.schedule is not None:
            cmd += ["--gf-schedule", self.schedule.to_text()]
        if master_port is not None:
            cmd += ["--master", "--expect-workers", str(self.workers), "--master-bind-port", str(master_port)]
            if bind_host:
                cmd += ["--master-bind-host", bind_host]
        return cmd + self.extra_locust_args


def run_stress(run: StressRun, echo=None) -> StressResult:
    """Check, run Locust to completion, and return the stress result it wrote.

    ``echo`` receives the Locust command line (for the record and for running it by hand).
    """
    run.check()
    run.out_dir.mkdir(parents=True, exist_ok=True)
    if run.result_path.exists():
        run.result_path.unlink()  # a stale result must not pass for this run's
    cmd = run.locust_command()
    master_port = free_port() if run.workers else None
    cmd = run.locust_command(master_port)
    if echo:
        echo(" ".join(shlex.quote(c) for c in cmd))
    log_path = run.out_dir / f"{run.name}.locust.log"
    procs: list[subprocess.Popen] = []
    with open(log_path, "wb") as log:
        try:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            for _ in range(run.workers):
                procs.append(subprocess.Popen(run.worker_command(master_port), stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            try:
                procs[0].wait(timeout=run.bound_s() + 60)
            except subprocess.TimeoutExpired:
                raise LoadTestRunError(f"locust did not finish within its bound; see {log_path}") from None
            for worker in procs[1:]:
                try:
                    worker.wait(timeout=15)  # workers quit when the master tells them to
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=run.timeout_s + 10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    if not run.result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
        raise LoadTestRunError(f"locust exited with {procs[0].returncode} and wrote no result; last log line: "
                               f"{tail[0]} (log: {log_path})")
    return read_stress_result(run.result_path)


class LoadTestRunError(RunFailure):
    """The run itself failed (Locust crashed or overran its bound); one line pointing at its log."""

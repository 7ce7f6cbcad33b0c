"""A real Triton Inference Server on this machine, from the ``tritonserver`` binary that nvidia-pytriton bundles.

PyTriton's own API generates its configs; gpufleet instead runs the bundled binary directly on a model repository it
wrote, so what Triton loads locally is the generated ``config.pbtxt`` itself. The bundle carries only the Python
backend, so local models run ONNX Runtime inside a Python-backend ``model.py`` (:mod:`serving.templates`).

Two environment facts make the Python-backend stub work:

- the stub links ``libpython`` dynamically and finds it through the loader path, so ``LD_LIBRARY_PATH`` gets this
  interpreter's ``sysconfig.get_config_var("LIBDIR")``; without it the model fails to load with an RLock
  ``_recursion_count`` error;
- the stub resolves its ``site-packages`` from the ``python`` first on ``PATH``, so this interpreter's directory goes
  first, and the model sees the same ``numpy`` and ``onnxruntime``.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gpufleet.deployed import METRICS_ARGS
from gpufleet.errors import RunFailure
from gpufleet.net import LOOPBACK, free_ports, listens_on
from serving.errors import ServingInputError


# Each Python-backend stub works through one POSIX shared-memory region that the server creates, names on the stub's
# command line, and removes when it unloads the model (triton-inference-server/python_backend, read at f9088ff, the
# snapshot's head; no release tags in it: src/python_be.cc sets the prefix "triton_" + backend name +
# "_backend_shm_region_", src/stub_launcher.cc names the region prefix + a UUID and passes it as the stub's argument,
# src/shm_manager.cc ~SharedMemoryManager removes the region it created). A killed server never removes them: one MiB
# each stays in /dev/shm until reboot (121 had piled up here from killed test servers).
STUB_REGION_PREFIX = "triton_python_backend_shm_region_"
SHM_DIR = Path("/dev/shm")


SPAWN_TRIES = 20
SPAWN_RETRY_S = 0.05


def stub_regions(pgid: int) -> list[Path]:
    """The shared-memory regions named on the command lines of the processes in process group ``pgid``."""
    regions = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
        regions += [SHM_DIR / a.decode() for a in args if a.startswith(STUB_REGION_PREFIX.encode()) and b"/" not in a]
    return regions


def kill_group(pgid: int) -> None:
    """SIGKILL every process in group ``pgid`` (a tritonserver started in its own session, and its stubs), then remove
    the stubs' shared-memory regions, which only a clean shutdown would have removed."""
    regions = stub_regions(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for region in regions:
        region.unlink(missing_ok=True)


class TritonStartError(RunFailure):
    """Triton did not become ready; the message carries the decisive log line."""


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> "Ports":
        return cls(*free_ports(3))


def _pytriton_dist() -> tuple[Path, Path, Path]:
    """(tritonserver folder, shared-library folder, Python-backend stub for this interpreter) from nvidia-pytriton."""
    try:
        from pytriton.utils.distribution import (
            get_libs_path,
            get_root_module_path,
            get_stub_path,
        )
    except ImportError as exc:
        raise TritonStartError(f"nvidia-pytriton is not installed (pip install -e '.[serving]'): {exc}") from None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = Path(get_stub_path(version))
    if not stub.is_file():
        raise TritonStartError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    return Path(get_root_module_path()) / "tritonserver", Path(get_libs_path()), stub


def triton_environment(libs: Path) -> dict[str, str]:
    env = os.environ.copy()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, str(libs), env.get("LD_LIBRARY_PATH", "")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def bundled_server(server_dir: Path) -> tuple[Path, dict[str, str]]:
    """PyTriton's ``tritonserver`` copied into ``server_dir`` (``bin/tritonserver``, ``backends/python``) with this
    interpreter's Python-backend stub, and the environment it runs in (:func:`triton_environment`). For a caller
    that starts the server with flags of its own (a rendered Deployment's, in the first-deploy test)."""
    dist, libs, stub = _pytriton_dist()
    server_dir = Path(server_dir)
    # The stub must sit inside backends/python; copying keeps the installed package untouched.
    shutil.copytree(dist, server_dir, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    target = server_dir / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(stub, target)
    target.chmod(0o755)
    return server_dir, triton_environment(libs)


ARGUMENTS_REFUSED = "Usage: tritonserver"  # how its log begins when it refuses its command line


class LocalTriton:
    """``tritonserver`` on loopback serving ``repository``; a context manager that always stops it.

    ``start`` returns once this server is ready (:meth:`ready`) or raises :class:`TritonStartError` with the first
    error line of the server log. ``stop`` sends SIGTERM, which makes Triton finish in-flight requests and unload
    models, and SIGKILL only after ``grace_s``; a stop with an error status keeps its reason in ``exit_reason``.
    """

    def __init__(self, repository: Path | str, ports: Ports | None = None, log_path: Path | str | None = None,
                 extra_args: list[str] | None = None):
        self.repository = Path(repository).resolve()
        self._auto_ports = ports is None
        self.ports = ports or Ports.free()
        self._workdir = Path(tempfile.mkdtemp(prefix="gpufleet-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "tritonserver.log"
        self._extra = extra_args or []
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.exit_reason: str | None = None

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def command(self, server_dir: Path) -> list[str]:
        return [str(server_dir / "bin" / "tritonserver"),
                f"--model-repository={self.repository}",
                f"--backend-directory={server_dir / 'backends'}",
                f"--cache-directory={server_dir / 'caches'}",
                f"--http-address={LOOPBACK}", f"--http-port={self.ports.http}",
                f"--grpc-address={LOOPBACK}", f"--grpc-port={self.ports.grpc}",
                f"--metrics-address={LOOPBACK}", f"--metrics-port={self.ports.metrics}",
                "--allow-metrics=true", "--allow-cpu-metrics=true", "--exit-on-error=true",
                # The latency summaries the stack's Triton exports (P99 alert, planner check): the same series here.
                *METRICS_ARGS, *self._extra]

    def _prepare(self) -> tuple[Path, dict[str, str]]:
        return bundled_server(self._workdir / "tritonserver")

    def start(self, timeout_s: float = 120.0) -> "LocalTriton":
        """Start and wait for readiness. With ports chosen here, a port taken between choosing and binding (another
        process's connection can grab a free port in that window) means new ports and another try, up to 3."""
        for attempt in range(3):
            try:
                return self._start_once(timeout_s)
            except TritonStartError as exc:
                if not (self._auto_ports and "already in use" in str(exc)) or attempt == 2:
                    raise
                self.ports = Ports.free()
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> "LocalTriton":
        if not self.repository.is_dir():
            raise ServingInputError(f"{self.repository}: model repository not found")
        self._workdir.mkdir(parents=True, exist_ok=True)
        server_dir, env = self._prepare()
        self._log = open(self.log_path, "wb")
        self._proc = self._spawn(self.command(server_dir), env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                # The Python-backend stubs it started can outlive it; they share its process group.
                kill_group(self._proc.pid)
                message = self.exit_message()
                self._cleanup()
                raise TritonStartError(message)
            if self.ready():
                return self
            time.sleep(0.2)
        message = f"tritonserver not ready after {timeout_s:.0f} s: {self.first_error()}"
        self.stop()
        raise TritonStartError(message)

    def _spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Popen, again after ETXTBSY. The binary was copied a moment ago; a child another thread forked while the copy
        was open for writing holds that descriptor until it execs, and exec refuses a file open for writing (seen
        with two servers started from two threads: "Text file busy"). The child execs within milliseconds."""
        for attempt in range(SPAWN_TRIES):
            try:
                return subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
            except OSError as exc:
                if exc.errno != errno.ETXTBSY or attempt == SPAWN_TRIES - 1:
                    raise
                time.sleep(SPAWN_RETRY_S)
        raise AssertionError("unreachable")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        """This server is ready: its process runs, it is the one listening on the three ports, and
        ``/v2/health/ready`` answers 200 (every model loaded and warmed up).

        An answer on the HTTP port alone proves nothing: Triton loads every model first and binds its endpoints only
        then (gRPC, HTTP, metrics; any failure ends the process with status 1), so while it loads another server on
        the port answers for it. Its log cannot tell either: "Started HTTPService at" and "Started Metrics Service
        at" are written before the bind (triton-inference-server/server v2.51.0, the version nvidia-pytriton 0.7.0
        bundles: src/main.cc ``StartEndpoints`` after ``TRITONSERVER_ServerNew``; src/http_server.cc
        ``HTTPAPIServer::Create``, ``HTTPMetricsServer::Create``). The listening
        sockets themselves can (:func:`gpufleet.net.listens_on`)."""
        if not self.running or not all(listens_on(self._proc.pid, p) for p in
                                       (self.ports.http, self.ports.grpc, self.ports.metrics)):
            return False
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    @staticmethod
    def _one_line(line: str) -> str:
        line = line.split("] ", 1)[-1].replace("\\n", " ").strip().strip('"')
        return line if len(line) <= 400 else line[:397] + "..."

    def explained_error(self) -> str | None:
        """The log line that explains a failed start, on one line (a model's load failure first, then the server's),
        or None when the log holds none."""
        lines = self._log_lines()
        if lines and lines[0].startswith(ARGUMENTS_REFUSED):
            # Triton refused its command line: it prints its usage, then the reason, and no error line (seen with
            # the bundled v2.51 given one port for two endpoints).
            reason = next((ln for ln in reversed(lines) if ln.strip()), "")
            return f"it refused its arguments: {self._one_line(reason)}"
        benign = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory")  # a CPU-only machine logs these at every start
        ranked = ([ln for ln in lines if "failed to load '" in ln],
                  [ln for ln in lines if ln.startswith("error:")],
                  [ln for ln in lines if ln[:1] == "E" and not any(b in ln for b in benign)])
        line = next((group[0] for group in ranked if group), None)
        return None if line is None else self._one_line(line)

    def first_error(self) -> str:
        """What the log says about a failed start: the explaining line, else its last line."""
        lines = self._log_lines()
        return self.explained_error() or (self._one_line(lines[-1]) if lines else "empty log")

    def exit_message(self) -> str:
        """One line for a server that ended while starting. It can crash loading a model before it logs why (seen
        here: SIGSEGV while a Python-backend model with a wrong warm-up shape loads): then the message names the
        signal and the models it was loading, not an unrelated last log line."""
        code = self._proc.returncode
        why = self.explained_error()
        if why is not None:
            return f"tritonserver exited with {code}: {why}"
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        models = sorted(p.name for p in self.repository.iterdir() if p.is_dir() and not p.name.startswith("."))
        return (f"tritonserver {how} while loading {', '.join(models) or 'no model'}, before it logged why "
                f"(check the model's config against the model: inputs, shapes, warm-up)")

    def stop(self, grace_s: float = 30.0) -> int | None:
        """Stop the server; return its exit status (None if it was not running)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                kill_group(self._proc.pid)
                self._proc.wait()
        # The Python-backend stubs are children of tritonserver in its own session; none may outlive it.
        kill_group(self._proc.pid)
        return self._stopped()

    def kill(self) -> int | None:
        """Stop at once, for a server whose own shutdown is not what a caller waits on (a test's fixture between
        measurements). A graceful :meth:`stop` lets Triton unload: here ~3 s, most of it the Python-backend stubs
        finalizing one after another and Triton's one-second shutdown poll. This kills the process group and removes
        what only that shutdown would have removed (the stubs' shared memory); returns the exit status (-9)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            kill_group(self._proc.pid)
            self._proc.wait()
        kill_group(self._proc.pid)
        return self._stopped()

    def _stopped(self) -> int | None:
        code = self._proc.returncode
        if code:
            # Read before the working folder (and the log in it) goes.
            self.exit_reason = (f"killed by {signal.Signals(-code).name}" if code < 0 and -code in
                                signal.valid_signals() else self.first_error())
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._log:
            self._log.close()
            self._log = None
        # The working folder (the server's log included, unless the caller named a log file) goes with the server.
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "LocalTriton":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

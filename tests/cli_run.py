"""The four console entries called in-process with their argv, as the installed scripts call them.

A Python interpreter start (and the imports of numpy, scipy, pydantic, rich, typer, pulumi, ...) costs seconds per case
on a small machine; where the thing under test is what ``main(argv)`` does with the arguments, not the start-up, a
test calls :func:`run_cli` instead of a subprocess. It reproduces what a process would see:

- ``sys.argv`` is ``[<console path>, *argv]`` (Click names the program from it in usage messages);
- ``sys.stdout`` / ``sys.stderr`` are fresh text buffers that are not terminals (as in a pipe), ``sys.stdin`` is
  empty (as ``stdin=DEVNULL``);
- the working directory, any environment overrides and the SIGINT/SIGTERM handlers (``serving local`` sets its own)
  hold for the call only;
- warnings are shown on stderr under Python's default filters, as in a fresh interpreter (pytest would otherwise
  swallow them, and a stray warning breaks the "one stderr line" rule);
- an exception that escapes ``main`` is written to stderr as the interpreter writes it (``Traceback ...``) with exit
  status 1, and ``SystemExit`` gives its code, exactly as the console script's ``sys.exit(main())`` would.

What it cannot see: output written by child processes the command starts (they inherit the real file descriptors)
and anything that happens only once per interpreter (import-time warnings, start-up). Each console keeps true
subprocess cases for those (:func:`run_console`). A call still running after ``timeout_s`` is interrupted by SIGALRM
(as ``subprocess.run(timeout=...)`` would stop a process) and the test fails with :class:`CliTimeout` and where it hung.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
# The console scripts of pyproject's [project.scripts]: name -> module whose main(argv) -> int the script calls.
ENTRIES = {"planner": "planner.cli", "serving": "serving.cli", "loadtests": "loadtests.cli", "infra": "infra.cli"}
TIMEOUT_S = 300


@dataclass(frozen=True)
class Result:
    """What a finished command left: its exit status and what it wrote (same names as ``CompletedProcess``)."""
    returncode: int
    stdout: str
    stderr: str
    args: tuple[str, ...] = ()


def console(name: str) -> str:
    """The installed console script ``name`` beside this interpreter: what the README types."""
    exe = shutil.which(name, path=str(BIN))
    assert exe, f"console entry {name} not installed: pip install -e '.[test]'"
    return exe


class CliTimeout(BaseException):
    """Raised into a call that ran past its time. A BaseException, so that no ``except Exception`` in the command
    turns it into an exit status."""


@contextlib.contextmanager
def _deadline(cli: str, args: list[str], timeout_s: float):
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def expired(signum, frame):
        raise CliTimeout(f"{cli} {' '.join(args)}: still running after {timeout_s:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Pipe(io.StringIO):
    """A text stream that, like a pipe, is not a terminal and has no file descriptor."""

    def isatty(self) -> bool:
        return False


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _fresh_warnings():
    # Python's default filters (Doc/library/warnings.rst, "Default Warning Filter"), in their order.
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        for quiet in (PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=quiet)
        warnings.showwarning = _show_warning
        yield


@contextlib.contextmanager
def _environment(env: dict[str, str | None] | None):
    saved = {k: os.environ.get(k) for k in (env or {})}
    try:
        for k, v in (env or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(cli: str, argv: list[str] | tuple[str, ...], *, cwd: str | Path | None = None,
            env: dict[str, str | None] | None = None, timeout_s: float = TIMEOUT_S) -> Result:
    """``<cli> *argv`` through its console entry function in this process; ``env`` overrides (``None`` unsets)."""
    main = importlib.import_module(ENTRIES[cli]).main
    args = [str(a) for a in argv]
    out, err = _Pipe(), _Pipe()
    saved = sys.argv, sys.stdin, os.getcwd()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sys.argv = [console(cli), *args]
        sys.stdin = io.StringIO("")
        if cwd is not None:
            os.chdir(cwd)
        with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _fresh_warnings(), \
                _deadline(cli, args, timeout_s):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc(file=sys.stderr)
                code = 1
            sys.stdout.flush()
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        sys.argv, sys.stdin = saved[0], saved[1]
        os.chdir(saved[2])
    return Result(int(code or 0), out.getvalue(), err.getvalue(), (cli, *args))


def run_console(cli: str, argv: list[str] | tuple[str, ...], *, cwd: str | Path | None = None,
                env: dict[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """``<cli> *argv`` as a user types it: the installed script, in its own interpreter, stdin closed."""
    return subprocess.run([console(cli), *map(str, argv)], capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          env=None if env is None else dict(os.environ, **env), stdin=subprocess.DEVNULL)


REPOSITORY = Path(__file__).resolve().parents[1]


def run_loadtests(*argv, timeout_s: float = 120) -> Result:
    """``loadtests ARGV`` from the repository's root, as the README types it: the console's main(argv) in-process;
    Locust runs in its own processes either way, and they inherit PYTHONPATH from the environment set for the call."""
    return run_cli("loadtests", argv, env={"PYTHONPATH": str(REPOSITORY)}, cwd=REPOSITORY, timeout_s=timeout_s)

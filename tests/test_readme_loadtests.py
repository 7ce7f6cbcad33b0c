"""The README's load-test and closed-loop commands run on a CPU as written (issue 25, defects 6 and 9).

The commands are read from README.md's code blocks, never retyped, and run through the console entries in a scratch
folder. The only changes are the substitutions below: free loopback ports in place of 8000-8002 (other tests run
servers at the same time), and shorter steps and warm-ups (the runs keep their shape and rates; a step still holds
enough requests for `planner fit`). What each section's commands leave behind is output git ignores. `serving local`
runs as the installed script in its own process (the README's shell 1, stopped with Ctrl-C's SIGINT); the other
commands call their console's main(argv) in-process with the README's argv (tests/cli_run.py; Locust runs in its own
processes).
"""
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.stress_result import read_stress_result
from gpufleet.net import free_port
from infra.settings import ROOT

from tests.cli_run import run_cli

from .test_infra_gates import _console

CONSOLE = ("planner", "serving", "infra", "loadtests")
NOT_HERE = {
    "pip": "installs into the venv; the test's venv has every extra",
    "planner catalog refresh": "AWS credentials",
}
# Shorter runs: option -> the value used here (seconds). 6 s at 40 req/s is 240 requests, over fit's 200.
SHORTER = {"--step-duration": "6", "--warmup": "1", "--seconds-per-row": "0.25", "--duration": "3"}
# A step or ramp run that leaves its warm-up at the default (10 s) gets the short one too: it is discarded either way.
WARMED = ("--rates", "--ramp")
READY_S = 120


def block_commands(readme: str, heading: str) -> list[str]:
    """The commands of the first code block under ``heading``: continuation lines joined, comments dropped, the
    ``.venv/bin/`` prefix taken off."""
    start = readme.index(heading)
    block = re.search(r"^```[a-z]*\n(.*?)^```", readme[start:], re.M | re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            words[0] = words[0].removeprefix(".venv/bin/")
            commands.append(words)
    return commands


def _skipped(words: list[str]) -> bool:
    return any(" ".join(words).startswith(k) for k in NOT_HERE)


def _shorter(words: list[str], shorter: dict[str, str]) -> list[str]:
    out = list(words)
    for i, w in enumerate(out[:-1]):
        if w in shorter:
            out[i + 1] = shorter[w]
    if words[:2] == ["loadtests", "run"] and any(w in words for w in WARMED) and "--warmup" not in words:
        out += ["--warmup", shorter["--warmup"]]
    return out


class _Triton:
    """`serving local` as the README types it, on free ports, stopped with SIGINT (the README's Ctrl-C)."""

    def __init__(self, words: list[str], cwd: Path):
        self.ports = [free_port() for _ in range(3)]
        argv = [_console("serving"), *words[1:], "--http-port", str(self.ports[0]), "--grpc-port",
                str(self.ports[1]), "--metrics-port", str(self.ports[2])]
        self.log = open(cwd / "serving-local.out", "w")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_S
        while "Triton ready" not in (cwd / "serving-local.out").read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, (cwd / "serving-local.out").read_text()
            time.sleep(0.1)  # reading a short log: the ready line is seen within 0.1 s of being written

    def loadtests_args(self, words: list[str]) -> list[str]:
        words = [w.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{self.ports[0]}") for w in words]
        if "--host" not in words:
            words += ["--host", f"http://127.0.0.1:{self.ports[0]}"]
        return words + ["--metrics-url", f"http://127.0.0.1:{self.ports[2]}/metrics"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _run_section(heading: str, cwd: Path, shorter: dict[str, str] = SHORTER) -> list[str]:
    """Run the section's commands in order in ``cwd``; return what failed, one line each."""
    triton, failures = None, []
    try:
        for words in block_commands((ROOT / "README.md").read_text(), heading):
            if _skipped(words):
                continue
            assert words[0] in CONSOLE, f"{' '.join(words)}: not a gpufleet command and not in NOT_HERE"
            if words[:2] == ["serving", "local"]:
                triton = _Triton(words, cwd)
                continue
            if words[:2] == ["loadtests", "run"]:
                if triton is None:
                    failures.append(f"{' '.join(words)}: the section starts no server for it")
                    continue
                words = triton.loadtests_args(words)
            argv = _shorter(words, shorter)
            run = run_cli(argv[0], argv[1:], cwd=cwd)
            if run.returncode != 0:
                failures.append(f"{' '.join(words)} -> exit {run.returncode}: {run.stderr.strip()[-400:]}")
    finally:
        if triton is not None:
            triton.stop()
    return failures


def _made(cwd: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in cwd.iterdir()
                  if p.name not in ("bench", "serving-local.out"))


def _unignored(names: list[str]) -> list[str]:
    """The names git would show as untracked if the commands ran at the repository root."""
    check = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-v", "-n"], cwd=ROOT, input="\n".join(
        names) + "\n", capture_output=True, text=True, timeout=30)
    return [line.split("\t")[-1] for line in check.stdout.splitlines() if line.startswith("::")]


def test_the_loadtests_walkthrough_runs_on_a_cpu(tmp_path):
    (tmp_path / "bench").symlink_to(ROOT / "bench")  # the README runs from the repository root
    # Nothing here is fitted, so the steps can be shorter still than fit's 200 requests need: 20 at the lowest rate.
    failures = _run_section("## `loadtests`: open-loop stress runs against Triton", tmp_path,
                            {**SHORTER, "--step-duration": "1"})
    assert not failures, "\n".join(failures)
    results = sorted((tmp_path / "stress").glob("*.stress.json"))
    assert [p.name for p in results] == ["closed.stress.json", "day.stress.json", "ramp.stress.json",
                                         "run.stress.json"]
    for path in results:  # every step served without errors (a replayed quiet hour may hold no request at all)
        result = read_stress_result(path)
        assert all(s.errors == 0 for s in result.steps), (path.name, result.steps)
        assert sum(s.ok for s in result.steps) > 0, path.name
    assert _unignored(_made(tmp_path)) == []


def test_the_closed_loop_runs_on_a_cpu(tmp_path):
    failures = _run_section("## The closed loop: fit, validate, refresh prices, report, provision", tmp_path)
    assert not failures, "\n".join(failures)
    calibration = read_calibration(tmp_path / "calibration.json")
    assert calibration.steps, "planner fit kept no step"
    plan = read_plan(tmp_path / "plan.json")
    assert {d.model for d in plan.deployments} == {"tiny"}
    assert (tmp_path / "report" / "report.html").is_file()
    assert _unignored(_made(tmp_path)) == []


def test_what_the_walkthroughs_make_is_ignored():
    names = ["stress/", "runs/", "report/", "plan.json", "calibration.json", "tiny.onnx", "tiny-L4.json",
             "det-L4.json", "det.onnx", "det.plan", "det.plan.json", "det.cache", "catalog-us-east-1-2026-12-03.json",
             "repo/", "repo-t4/", "hrepo/", "stress.yaml", "day.plan.json", "mix.plan.json"]
    assert _unignored(names) == []

"""The README's load-test and closed-loop commands run on a CPU as written (issue 25, defects 6 and 9).

The commands are read from README.md's code blocks, never retyped, and run through the console entries in a scratch
folder. The only changes are the substitutions below: free loopback ports in place of 8000-8002 (other tests run
servers at the same time), and shorter steps, warm-ups and budgets (the runs keep their shape and rates; a step still
holds enough requests for `planner fit`). What each section's commands leave behind is output git ignores. `serving
local` runs as the installed script in its own process (the README's shell 1, stopped with Ctrl-C's SIGINT; a second
`serving local` in a section is the README's "Ctrl-C, then serve the plan's config"); the other commands call their
console's main(argv) in-process with the README's argv (tests/cli_run.py; Locust runs in its own processes).

The closed loop's calibrate is cut from the README's minutes to seconds, too short to pin capacity, so its
`planner recommend` runs with the width gate opened (what the README's full run reached, the README says) and its
`loadtests verify`, on one-second steps, may find a promise broken (exit 1): that verdict is not this test's subject;
a refused plan or config (exit 2) still fails it. `--stack dev` writes into a copy of the stack files in the scratch
folder, never the repository's infra/plans/dev.plan.json.
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
from gpufleet.net import free_ports
from infra.settings import ROOT
from loadtests.verify import BEYOND_FACTOR

from tests.cli_run import run_cli

from .conftest import console, stop_process

CONSOLE = ("planner", "serving", "infra", "loadtests")
NOT_HERE = {
    "pip": "installs into the venv; the test's venv has every extra",
    "planner catalog refresh": "AWS credentials",
    "pulumi up": "AWS credentials and a Pulumi backend (tests/test_closed_loop.py builds the stack under mocks)",
}
# Shorter runs: option -> the value used here (seconds). 6 s at 40 req/s is 240 requests, over fit's 200.
SHORTER = {"--step-duration": "6", "--warmup": "1", "--seconds-per-row": "0.25", "--duration": "3"}
# A step or ramp run that leaves its warm-up at the default (10 s) gets the short one too: it is discarded either way.
WARMED = ("--rates", "--ramp")
# Options a command gets from the shorter set when the README leaves them at their defaults (minutes, for a user).
DEFAULTED = {("loadtests", "verify"): ("--step-duration", "--warmup"),
             ("loadtests", "calibrate"): ("--budget-s", "--window-s", "--stability-pct"),
             ("planner", "recommend"): ("--max-capacity-spread-pct",)}
# The closed loop's: calibrate's windows of 1 s (its rule still makes each window hold a third of fit's requests:
# 2.1 s at the README's 40 req/s), any three of them counted stable, for 12 s: one step (three windows and Locust's
# start and drain), then the fit on it; verify's three rates a second each. A calibration cut to seconds cannot be
# trusted to pass recommend's width gate (15%), nor to leave more than one fitted step (an interval of unknown
# width): the gate is opened all the way.
LOOP_SHORTER = {**SHORTER, "--budget-s": "12", "--window-s": "1", "--stability-pct": "1000", "--step-duration": "1",
                "--warmup": "0.5", "--max-capacity-spread-pct": "inf"}
# Commands whose exit 1 is a measured verdict, not a broken command (see the module docstring).
VERDICT = {("loadtests", "verify")}
STACK_FILES = ("Pulumi.yaml", "Pulumi.dev.yaml")
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
    for option in DEFAULTED.get(tuple(words[:2]), ()):
        if option not in words and option in shorter:
            out += [option, shorter[option]]
    return out


class _Triton:
    """`serving local` as the README types it, on free ports, stopped with SIGINT (the README's Ctrl-C)."""

    def __init__(self, words: list[str], cwd: Path):
        self.ports = free_ports(3)
        argv = [console("serving"), *words[1:], "--http-port", str(self.ports[0]), "--grpc-port",
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
        stop_process(self.proc, signal.SIGINT, grace_s=60)
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
                if triton is not None:
                    triton.stop()  # the README's Ctrl-C in shell 1 before serving another config
                triton = _Triton(words, cwd)
                continue
            if words[0] == "loadtests" and words[1] in ("run", "calibrate", "verify"):
                if triton is None:
                    failures.append(f"{' '.join(words)}: the section starts no server for it")
                    continue
                words = triton.loadtests_args(words)
            argv = _shorter(words, shorter)
            run = run_cli(argv[0], argv[1:], cwd=cwd)
            if run.returncode != 0 and not (run.returncode == 1 and tuple(words[:2]) in VERDICT):
                failures.append(f"{' '.join(words)} -> exit {run.returncode}: {run.stderr.strip()[-400:]}")
    finally:
        if triton is not None:
            triton.stop()
    return failures


def _made(cwd: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in cwd.iterdir()
                  if p.name not in ("bench", "serving-local.out", "infra", *STACK_FILES))


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
    for name in STACK_FILES:  # the project as `--stack dev` finds it, in the scratch folder
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "infra" / "plans").mkdir(parents=True)
    failures = _run_section("## The closed loop: fit, validate, refresh prices, report, provision", tmp_path,
                            LOOP_SHORTER)
    assert not failures, "\n".join(failures)
    calibration = read_calibration(tmp_path / "runs" / "calibrate.calibration.json")
    assert calibration.steps, "calibrate's fit kept no step"
    plan = read_plan(tmp_path / "plan.json")
    (deployment,) = plan.deployments
    assert deployment.model == "tiny"
    verified = read_stress_result(tmp_path / "runs" / "verify" / "verify-tiny-L4.stress.json")
    assert [round(s.offered_rate, 1) for s in verified.reported_steps()] == [
        round(r, 1) for r in (deployment.rate_per_replica, deployment.autoscaling.max_rate_per_replica,
                              BEYOND_FACTOR * deployment.autoscaling.max_rate_per_replica)]
    assert read_plan(tmp_path / "infra" / "plans" / "dev.plan.json").deployments == plan.deployments
    assert (tmp_path / "report" / "report.html").is_file()
    assert _unignored(_made(tmp_path)) == []


def test_what_the_walkthroughs_make_is_ignored():
    names = ["stress/", "runs/", "report/", "plan.json", "calibration.json", "tiny.onnx", "tiny-L4.json",
             "det-L4.json", "det.onnx", "det.plan", "det.plan.json", "det.cache", "catalog-us-east-1-2026-12-03.json",
             "repo/", "repo-t4/", "hrepo/", "stress.yaml", "day.plan.json", "mix.plan.json"]
    assert _unignored(names) == []

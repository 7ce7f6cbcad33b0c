"""What a new user's installation and file system do to the console entries (issue 25, defects 7, 8 and 9).

* A command whose optional extra is not installed says which extra to install, in one line, exit 2 (the
  installation, not the run, is what must change). Tested by running the console entry in a process where the
  extra's module cannot be imported: a meta-path finder refuses it, as a missing distribution would.
* An output path that cannot be written is one line, exit 2, before any work, and nothing is left behind.
* Files the tools write honour the user's umask, as any other program's do.

A missing extra needs an interpreter that never imported it, so those cases run the installed script in a process;
the others call the console's ``main(argv)`` in-process (tests/cli_run.py), the umask set for the call and put back.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.settings import ROOT

from tests.cli_run import run_cli

from .conftest import console

# Runs the console script (the file pip wrote) with some top-level modules made unimportable.
BLOCKED_RUN = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Missing())
script = sys.argv[2]
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


def _blocked(modules: str, entry: str, *args: str, cwd: Path, timeout: float = 120):
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, modules, console(entry), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("modules, extra, argv", [
    ("hdrh", "loadtests", ["loadtests", "run", "--model", "tiny", "--rates", "1", "--out", "{tmp}/stress"]),
    ("pulumi", "infra", ["infra", "render", "--stack", "dev", "--out", "{tmp}/r"]),
    ("onnx", "serving", ["serving", "demo-model", "tiny", "{tmp}/t.onnx"]),
    ("google", "serving", ["serving", "local", "--demo", "tiny"]),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, modules, extra, argv):
    args = [a.format(tmp=tmp_path) for a in argv]
    run = _blocked(modules, args[0], *args[1:], cwd=tmp_path)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"'.[{extra}]'" in lines[0] and f"'{modules}'" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_command_without_its_extra_leaves_help_working(tmp_path):
    """`loadtests --help` needs no extra: the commands are listed, and only running one asks for the extra."""
    run = _blocked("hdrh,locust", "loadtests", "--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "run" in run.stdout and "show" in run.stdout


def test_the_extras_table_matches_pyproject():
    """Every distribution an extra of pyproject.toml requires is imported under a name the table maps to that extra,
    read from the installed distributions' own file lists (importlib.metadata)."""
    import importlib.metadata as md
    import re
    import tomllib

    from gpufleet.cli import EXTRA_MODULES

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    core = {re.split(r"[<>=\[ ;]", r)[0].lower() for r in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    dist_of = {name: {d.lower() for d in dists} for name, dists in md.packages_distributions().items()}
    for extra in ("serving", "loadtests", "infra"):
        for req in extras[extra]:
            dist = re.split(r"[<>=\[ ;]", req)[0].lower()
            if dist in core or dist.startswith("gpufleet"):
                continue
            names = {n for n, d in dist_of.items() if dist.replace("_", "-") in {x.replace("_", "-") for x in d}}
            assert names & set(EXTRA_MODULES[extra]), (extra, dist, sorted(names))


# --- unwritable outputs --------------------------------------------------------------------------------------------

# /proc refuses new entries even to root (tests may run as root, where a chmod'd folder is writable).
UNWRITABLE = "/proc/gpufleet-no-such/out"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    run = subprocess.run([console("serving"), "demo-model", "tiny", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return path


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("argv", [
    ["planner", "report", str(ROOT / "infra/plans/dev.plan.json"), "--out", UNWRITABLE],
    ["planner", "recommend", "--qps", "500", "--p99-ms", "100", "--output", UNWRITABLE + "/p.json"],
    ["serving", "demo-model", "tiny", UNWRITABLE + "/t.onnx"],
    ["serving", "profile", "{onnx}", "--gpu", "L4", "--batch-sizes", "1", "-o", UNWRITABLE + "/p.json"],
    ["serving", "import", "trtexec-log", str(DATA / "trtexec/yolov7-pr-329.log"), "--gpu", "L4", "--model", "m",
     "--batch-size", "8", "-o", UNWRITABLE + "/p.json"],
    ["serving", "repo", "{onnx}", UNWRITABLE + "/repo"],
    ["loadtests", "run", "--model", "tiny", "--rates", "1", "--out", UNWRITABLE],
    ["infra", "render", "--stack", "dev", "--out", UNWRITABLE],
], ids=lambda a: " ".join(a[:2]))
def test_an_unwritable_output_is_one_line_exit_2(argv, tiny_onnx, tmp_path):
    args = [a.format(onnx=tiny_onnx) for a in argv]
    run = run_cli(args[0], args[1:], cwd=ROOT)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "/proc/gpufleet-no-such" in lines[0] and "cannot" in lines[0], lines[0]


def test_a_refused_output_folder_leaves_nothing_behind(tmp_path):
    """The check makes the folders it needs to try a write, and removes them again when the run is refused."""
    out = tmp_path / "new" / "deeper" / "report"
    run = run_cli("planner", ["report", str(tmp_path / "missing.plan.json"), "--out", str(out)], cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert list(tmp_path.iterdir()) == []


# --- file modes ----------------------------------------------------------------------------------------------------

@pytest.fixture
def umask_022():
    """The user's umask is 022 for the test (as a shell's usually is), and whatever it was afterwards."""
    saved = os.umask(0o022)
    yield
    os.umask(saved)


def test_written_files_follow_the_umask(tmp_path, umask_022):
    plan = tmp_path / "p.json"
    run = run_cli("planner", ["recommend", "--qps", "500", "--p99-ms", "100", "--output", str(plan)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(plan.read_text())["schema_version"] == 2
    assert plan.stat().st_mode & 0o777 == 0o644


def test_the_report_follows_the_umask(tmp_path, umask_022):
    run = run_cli("planner", ["report", str(ROOT / "infra/plans/dev.plan.json"), "--out", str(tmp_path / "report")],
                  cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "report").iterdir()}
    assert "report.html" in modes and set(modes.values()) == {0o644}, modes

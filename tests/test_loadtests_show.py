"""What `loadtests run` and `loadtests show` print, through their console entry as the README types them, against the
stub server on loopback: the mode and the offered rates said once, and tables that read right in a terminal of 80
or 120 columns. Nothing here is judged in time (the stub answers in 5 ms; only the printed text is checked), so
these tests run beside others, unlike the knee search's (tests/test_loadtests_knee.py, tests/conftest.py ALONE).
`loadtests run` calls the console's main(argv) in-process (tests/cli_run.py); `loadtests show` runs as the installed
script on a pseudo-terminal."""
import importlib.util
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from tests.cli_run import run_loadtests  # noqa: E402

from .conftest import console, start_stub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")




@pytest.fixture(scope="module")
def fast_server():
    proc, url = start_stub(model="cam", input_shape="3,16,16", service_ms=5)
    yield url
    proc.terminate()
    proc.wait(10)


def test_closed_loop_table_names_its_mode_once(fast_server, tmp_path):
    run = run_loadtests("run", "--model", "cam", "--host", fast_server, "--closed-loop", "1", "--duration", "1",
                        "--timeout-s", "5", "--metrics-url", "", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "closed-loop, closed-loop" not in run.stdout
    assert "closed loop, 1 user," in run.stdout, run.stdout


def test_run_banner_says_what_is_offered(fast_server, tmp_path):
    run = run_loadtests("run", "--model", "cam", "--host", fast_server, "--rates", "20,40", "--step-duration", "1",
                        "--warmup", "0", "--timeout-s", "5", "--metrics-url", "", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    first = run.stderr.splitlines()[0]
    assert "20, 40 req/s" in first and "1 s each" in first, first


@pytest.fixture(scope="module")
def steps_result(fast_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("show")
    run = run_loadtests("run", "--model", "cam", "--host", fast_server, "--rates", "20,40,80", "--step-duration", "1",
                        "--warmup", "0.5", "--timeout-s", "5", "--metrics-url", "", "--out", str(out))
    assert run.returncode == 0, run.stderr
    return out / "run.stress.json"


def _show_in_terminal(path: Path, columns: int) -> list[str]:
    """`loadtests show` with its stdout on a terminal of ``columns`` columns (a pseudo-terminal; COLUMNS says its
    width, as a shell exports it: rich 15.0.0, rich/console.py, Console.__init__ and Console.size read COLUMNS)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([console("loadtests"), "show", str(path)], stdout=follower, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS=str(columns), LINES="50", TERM="xterm"),
                            cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read()
    text = ANSI.sub("", b"".join(chunks).decode())
    return [line.rstrip("\r") for line in text.split("\n")]


@pytest.mark.parametrize("columns", [80, 120])
def test_show_never_cuts_a_name_or_a_number(steps_result, columns):
    lines = _show_in_terminal(steps_result, columns)
    text = "\n".join(lines)
    assert "…" not in text, text
    for step in read_stress_result(steps_result).steps:
        assert step.name in text, (step.name, text)
        assert f"{step.achieved_rate:.1f}" in text, (step.achieved_rate, text)


@pytest.mark.parametrize("columns", [80, 120])
def test_show_fits_the_terminal(steps_result, columns):
    lines = _show_in_terminal(steps_result, columns)
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)
    # Every figure is still shown: the latency and server columns are there, in a second table if need be (a
    # header may wrap between its words; a figure never does).
    assert all(h in "\n".join(lines) for h in ("P99.9", "queue", "infer", "dropped")), "\n".join(lines)

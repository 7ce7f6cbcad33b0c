"""Issue 25 (#10, planner): the planner's tables in a narrow terminal, through the console entry as the README types it.

README command 1 in an 80-column terminal printed `│ L40S │ 3 │ 1.0… │ 1,… │`; `--mix` at 100 columns `yol…`. Each
command here runs in a pseudo-terminal of 80, 100 and 120 columns (COLUMNS set as a shell sets it), and its output
must hold every figure and every name whole, in lines no wider than the terminal.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.profile import write_profile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.service import ServerCost
from tests.synthetic import affine_profile, stress_result

BIN = Path(sys.executable).parent
WIDTHS = (80, 100, 120)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # bold and the like; NO_COLOR leaves them


def in_terminal(columns: int, *args: str | Path) -> str:
    """stdout of `planner ARGS` in a terminal ``columns`` wide; stderr must be empty and the status 0."""
    exe = shutil.which("planner", path=str(BIN))
    assert exe, "console entry planner not installed: pip install -e '.[test]'"
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([exe, *map(str, args)], stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            # rich takes TERM=dumb for 80 columns whatever the size: a real terminal's TERM
                            env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color", "NO_COLOR": "1"})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the command ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    text = ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))  # what a spinner's line ends as


def assert_nothing_cut(text: str, columns: int) -> None:
    assert "…" not in text, text
    wide = [line for line in text.splitlines() if cell_len(line) > columns]
    assert not wide, wide


@pytest.mark.parametrize("columns", WIDTHS)
def test_readme_command_1_keeps_every_figure(columns, tmp_path):
    plan_path = tmp_path / "plan.json"
    text = in_terminal(columns, "recommend", "--qps", "5000", "--p99-ms", "100", "--output", plan_path)
    assert_nothing_cut(text, columns)
    plan = read_plan(plan_path)
    for d in plan.deployments:
        for figure in (f"{d.routing_weight:.3f}", f"{d.rate_per_replica:,.0f}", f"{d.predicted.p50_ms:.2f}",
                       f"{d.predicted.p99_ms:.2f}", f"{d.autoscaling.target_rate_per_replica:,.0f}"):
            assert figure in text, figure
    for p in plan.pools:
        assert p.instance_type in text and f"{p.usd_per_hour_per_instance:.4f}" in text


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_mix_keeps_every_model_and_deployment_name(columns, tmp_path):
    mix = tmp_path / "mix.csv"  # the README's mix
    mix.write_text("model,qps,p99_ms\nyolov8s-1280x720,2000,100\nyolov8m-seg-640,300,150\nyolov8n-640,500,50\n")
    plan_path = tmp_path / "mix.plan.json"
    text = in_terminal(columns, "recommend", "--mix", mix, "--output", plan_path)
    assert_nothing_cut(text, columns)
    plan = read_plan(plan_path)
    rows = [line for line in text.splitlines() if line.startswith("│")]
    for d in plan.deployments:  # each deployment row names its model and its Deployment whole, in one cell
        assert any(f" {d.model} " in row and f" {d.shared or 'own'} " in row for row in rows), (d.model, d.shared)


def test_fit_keeps_every_figure_at_80_columns(tmp_path):
    profile = affine_profile(model="det", gpu="L4")
    cost = ServerCost(2.0, 0.5, 1.2)
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(),
                         instance_count=1)
    sat = ReplicaModel.from_profile(profile, cost).saturation_rate(cfg)
    stress = tmp_path / "run.stress.json"
    stress_result(profile, cfg, [round(f * sat, 1) for f in (0.3, 0.55, 0.8)], overhead_ms=3.0, cost=cost,
                  duration_s=20, seed=5, path=stress)
    prof, cal_path = tmp_path / "det-L4.json", tmp_path / "calibration.json"
    write_profile(profile, prof)
    text = in_terminal(80, "fit", stress, "--profile", prof, "--output", cal_path)
    assert_nothing_cut(text, 80)
    cal = read_calibration(cal_path)
    for s in cal.steps:
        assert f"{s.measured_ms['p99']:.2f}" in text and f"{s.p99_error:+.1%}" in text
    for t in cal.thresholds:
        assert f"{t.max_rate_per_replica:,.1f}" in text and f"{t.hpa_target_rate_per_replica:,.1f}" in text

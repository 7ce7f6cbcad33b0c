"""Words a person reads in the console output, through the console entry as the README types it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_one_replica_is_not_replicas():
    planner = shutil.which("planner", path=str(Path(sys.executable).parent))
    proc = subprocess.run([planner, "recommend", "--qps", "20", "--p99-ms", "100", "--max-spot-share", "0.5"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    spot = [line for line in proc.stdout.splitlines() if line.startswith("Spot loss:")]
    assert spot and "(1 replica)" in spot[0], spot

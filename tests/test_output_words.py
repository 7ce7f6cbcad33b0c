"""Words a person reads in the console output, through the console entry as the README types it (its ``main(argv)``
in-process, tests/cli_run.py)."""
from pathlib import Path

from tests.cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_one_replica_is_not_replicas():
    proc = run_cli("planner", ["recommend", "--qps", "20", "--p99-ms", "100", "--max-spot-share", "0.5"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    spot = [line for line in proc.stdout.splitlines() if line.startswith("Spot loss:")]
    assert spot and "(1 replica)" in spot[0], spot

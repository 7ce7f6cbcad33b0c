"""The planner's MIPs with and without HiGHS's feasibility-jump heuristic, in one run. By hand:

    python bench/highs_bench.py                       # the MIPs of the first 4 models of bench/data/camera-stack-8.csv
    python bench/highs_bench.py --mix other.csv

It plans the point mix once in this process, recording every problem planner/highs.py is given, then solves each
recorded problem again (``--repeat`` times) with the heuristic on (HiGHS 1.12's default, and what
scipy.optimize.milp runs) and off (what planner/highs.py sets), and prints both totals, their ratio, and how many
answers differ: in objective (must be none) and in the solution vector (another of several equally cheap answers).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import highspy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import cli, highs  # noqa: E402

HEURISTIC = "mip_heuristic_run_feasibility_jump"


def record(mix: Path) -> list[tuple[tuple, dict]]:
    calls, solve = [], highs.solve

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return solve(*args, **kwargs)

    highs.solve = recording
    try:
        with tempfile.TemporaryDirectory() as out:
            # One process (--workers is not a CLI option): forked workers would record in their own memory.
            from planner import colocate
            colocate.PARALLEL_AT_LEAST = 10 ** 9
            with contextlib.redirect_stdout(io.StringIO()):
                cli.main(["recommend", "--mix", str(mix), "--output", f"{out}/plan.json"])
    finally:
        highs.solve = solve
    return calls


def timed(calls, heuristic: bool, repeat: int):
    setting = highspy.Highs.setOptionValue

    def forced(self, name, value):
        return setting(self, name, heuristic if name == HEURISTIC else value)

    highspy.Highs.setOptionValue = forced
    try:
        start = time.perf_counter()
        for _ in range(repeat):
            answers = [highs.solve(*args, **kwargs) for args, kwargs in calls]
        return (time.perf_counter() - start) / repeat, answers
    finally:
        highspy.Highs.setOptionValue = setting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mix", type=Path, help="mix CSV (default: the first 4 rows of bench/data/camera-stack-8.csv)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mix = args.mix
        if mix is None:
            lines = (ROOT / "bench" / "data" / "camera-stack-8.csv").read_text().splitlines()
            rows = [line for line in lines if line.strip() and not line.startswith("#")]
            mix = Path(tmp) / "four.csv"
            mix.write_text("\n".join(rows[:5]) + "\n")  # the header and the first four models
        calls = record(mix)
    mips = [(a, k) for a, k in calls if np.asarray(a[8]).sum() > 0]
    on_s, on = timed(mips, True, args.repeat)
    off_s, off = timed(mips, False, args.repeat)
    costs = [np.asarray(a[0]) for a, _ in mips]
    worse = sum(1 for c, x, y in zip(costs, on, off) if (x.x is None) != (y.x is None) or
                (x.x is not None and not np.isclose(c @ x.x, c @ y.x, rtol=1e-9, atol=1e-9)))
    other = sum(1 for x, y in zip(on, off) if x.x is not None and y.x is not None and not np.array_equal(x.x, y.x))
    print(f"{len(mips)} MIPs from `planner recommend --mix {mix.name}` (largest {max(len(a[0]) for a, _ in mips)} "
          f"columns), mean of {args.repeat} passes:")
    print(f"  feasibility jump on (HiGHS's default): {on_s:.3f} s")
    print(f"  off (planner/highs.py):                {off_s:.3f} s   ratio {on_s / off_s:.2f}x")
    print(f"  answers with another objective: {worse}; another equally cheap solution: {other}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())

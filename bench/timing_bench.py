"""Issue 26's "Done when" timings, whole process, through the console entry. By hand:

    python bench/timing_bench.py                                   # the point and the day goals, 3 runs each
    python bench/timing_bench.py --repeat 5
    python bench/timing_bench.py --mix four-models.csv             # also a point mix (goal 3 s)
    python bench/timing_bench.py --command "8-model stack|15|--mix stack.csv"   # any other: LABEL|GOAL_S|ARGS
    python bench/timing_bench.py --tree /tmp/old --tree .          # before/after: each tree's planner, interleaved

Each command runs as ``planner recommend ...`` (the console script beside this interpreter, with this tree first on
PYTHONPATH), its output discarded; the runs of the commands are interleaved (one of each, then again) so that they
share the machine's load. Printed per command: every run's wall time, the median against the goal, and the
median CPU time (user + sys of the process), which depends far less on what else the machine runs: on a shared
machine compare CPU times before and after a change, and read the wall times against the goals on a quiet one.
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANNER = Path(sys.executable).with_name("planner")
DAY_CURVE = ROOT / "bench" / "data" / "i94-weekday-2012-10-04.csv"
# The goals, whole process on the 2-core development machine (seconds).
POINT_GOAL_S = 1.5
DAY_GOAL_S = 3.0
MIX_GOAL_S = 3.0


def run_once(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one ``planner recommend`` process, ``tree`` first on its path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([str(PLANNER), "recommend", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"planner recommend {shlex.join(args)}: {done.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (default 3)")
    ap.add_argument("--mix", type=Path, action="append", default=[], help=f"a point mix CSV (goal {MIX_GOAL_S:g} s)")
    ap.add_argument("--command", action="append", default=[], metavar="LABEL|GOAL_S|ARGS",
                    help="another planner recommend command and its goal, e.g. '8-model stack|15|--mix stack.csv'")
    ap.add_argument("--tree", type=Path, action="append", default=[],
                    help="a source tree to time (repeat to compare trees, e.g. a worktree of an older commit); "
                         "default this one")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree] or [ROOT]
    commands = [("point: --qps 5000 --p99-ms 100", POINT_GOAL_S, ["--qps", "5000", "--p99-ms", "100"]),
                (f"day: default model, --qps-curve {DAY_CURVE.name}", DAY_GOAL_S,
                 ["--qps-curve", str(DAY_CURVE)])]
    commands += [(f"mix: {m.name}", MIX_GOAL_S, ["--mix", str(m)]) for m in args.mix]
    for spec in args.command:
        label, goal, rest = spec.split("|", 2)
        commands.append((label, float(goal), shlex.split(rest)))
    runs: dict[tuple[str, Path], list[tuple[float, float]]] = {(c[0], t): [] for c in commands for t in trees}
    for _ in range(args.repeat):
        for label, _, argv in commands:
            for tree in trees:
                runs[(label, tree)].append(run_once(tree, argv))
    print(f"{PLANNER} recommend, whole process, {args.repeat} runs each; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    failed = False
    for label, goal, _ in commands:
        print(f"  {label}")
        for tree in trees:
            walls = [w for w, _ in runs[(label, tree)]]
            wall, cpu = statistics.median(walls), statistics.median(c for _, c in runs[(label, tree)])
            failed |= wall >= goal
            name = f"{tree}: " if len(trees) > 1 else ""
            print(f"    {name}wall {' '.join(f'{w:.2f}' for w in walls)} s, median {wall:.2f} s "
                  f"({'under' if wall < goal else 'OVER'} the {goal:g} s goal); CPU (user+sys) median {cpu:.2f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

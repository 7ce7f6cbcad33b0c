"""The point, day and mix paths before and after issue 26, on the bench inputs. By hand:

    git worktree add /tmp/old-3f83a48 3f83a48          # the tree before issue 26 (detached)
    python bench/paths_bench.py --old /tmp/old-3f83a48
    python bench/paths_bench.py --old /tmp/old-3f83a48 --mix my-mix.csv --mix other.csv   # mix inputs to compare

Each input runs through each tree's console entry (`python -m planner recommend ... --format json --output`, the
tree first on PYTHONPATH, the same interpreter), old then new, in the same run so the wall times share the
machine's load. Printed per input: the old and new cost, whether the Deployments changed (GPU type, replicas,
Triton config, shared set) and the pools (instance type, capacity type, count), and each process's wall time.

Inputs (the other benches'): point = bench/recommend_bench.py's QPS list at P99 <= 100 ms, the CLI's default
model; day = bench/data's two I-94 curves, yolov8s-1280x720, P99 <= 100 ms (bench/day_bench.py); mix = the
3-model mix of bench/colocate_bench.py unless --mix names CSVs (repeat: rerun after the mix planner changes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from colocate_bench import MIX, write_mix  # noqa: E402
from recommend_bench import P99_MS, QPS  # noqa: E402

DAY_CURVES = (ROOT / "bench" / "data" / "i94-weekday-2012-10-04.csv",
              ROOT / "bench" / "data" / "i94-saturday-2012-10-06.csv")
DAY_MODEL = "yolov8s-1280x720"


def run(tree: Path, args: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="gpufleet-paths-") as tmp:
        out = Path(tmp) / "plan.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cmd = [sys.executable, "-m", "planner", "recommend", *args, "--format", "json", "--output", str(out)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{tree}: {' '.join(args)}: {done.stderr.strip()}")
        return wall, json.loads(out.read_text())


def fleet(plan: dict) -> dict:
    """What would be deployed: the Deployments (model, GPU, replicas, Triton config, shared set), the pools, and for
    a day plan the instances of every period and the alternatives it compares with."""
    out = {"deployments": sorted((d["model"], d["gpu"], d["replicas"], json.dumps(d["triton"], sort_keys=True),
                                  d.get("shared") or "") for d in plan["deployments"]),
           "pools": sorted((p["instance_type"], p["capacity_type"], p["count"]) for p in plan["pools"])}
    if plan.get("day"):
        out["periods"] = [sorted(p["instances"].items()) for p in plan["day"]["periods"]]
        # the alternatives the day plan prints against (not deployed, but a result a person reads)
        out["alternatives"] = [(c["name"], round(c["usd_per_day"], 2), c["holds_target"])
                               for c in plan["day"]["comparisons"]]
    return out


def cost(plan: dict) -> tuple[float, str]:
    if plan.get("day"):
        return plan["day"]["usd_per_day"], "$/day"
    return plan["cost"]["usd_per_hour"], "$/h"


def describe(old: dict, new: dict) -> str:
    changed = [k for k in old if old[k] != new.get(k)]
    return "changed: " + "+".join(changed) if changed else "same"


def inputs(mix_files: list[Path], tmp: Path) -> list[tuple[str, list[str]]]:
    rows = [(f"point {q:,} req/s", ["--qps", f"{q:g}", "--p99-ms", f"{P99_MS:g}"]) for q in QPS]
    rows += [(f"day {c.stem}", ["--qps-curve", str(c), "--model", DAY_MODEL, "--p99-ms", f"{P99_MS:g}"])
             for c in DAY_CURVES]
    if not mix_files:
        mix_files = [write_mix(tmp / "colocate-bench-mix.csv", MIX)]
    rows += [(f"mix {m.stem}", ["--mix", str(m.resolve())]) for m in mix_files]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the old tree (a git worktree of 3f83a48)")
    ap.add_argument("--new", type=Path, default=ROOT, help="the new tree; default this checkout")
    ap.add_argument("--mix", type=Path, action="append", default=[], help="mix CSV (repeat); default colocate_bench's")
    ap.add_argument("--show", action="store_true", help="also print both fleets where they differ")
    args = ap.parse_args()
    head = f"{'input':<34} {'old cost':>15} {'new cost':>15} {'new/old':>8} {'fleet':<28} {'old s':>6} {'new s':>6}"
    print(f"old tree {args.old}, new tree {args.new}; {os.cpu_count()} cores")
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in inputs(args.mix, Path(tmp)):
            wo, po = run(args.old, argv)
            wn, pn = run(args.new, argv)
            (co, unit), (cn, _) = cost(po), cost(pn)
            fo, fn = fleet(po), fleet(pn)
            print(f"{name:<34} {co:>9,.3f} {unit:<5} {cn:>9,.3f} {unit:<5} {cn / co:>8.4f} {describe(fo, fn):<28} "
                  f"{wo:>6.2f} {wn:>6.2f}", flush=True)
            if args.show:
                for k in fo:
                    if fo[k] != fn.get(k):
                        print(f"    {k} old: {fo[k]}\n    {k} new: {fn.get(k)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

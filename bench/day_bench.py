"""What a day plan saves against the usual ways of buying, and how long it takes. By hand:

    python bench/day_bench.py                      # the two curves in bench/data, yolov8s-1280x720, P99 <= 100 ms
    python bench/day_bench.py --model yolov8m-640 --p99-ms 50 --curve my-day.csv

For each curve, ``planner recommend --qps-curve`` runs through its console entry point (the whole process is
timed: start-up, imports, sizing, the day MILP, the HPA replay, the comparisons), and the plan it writes is read
back: the day's cost against (a) the peak's fleet all day on on-demand, (b) the peak's fleet on reserved terms,
(c) today's point plan at the curve's mean held all day; the MIP and LP-relaxation gaps; the replayed P99 through
the fastest ramp and in the worst hour. Curves and their sources: bench/data/README.md.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.contracts.plan import read_plan  # noqa: E402

CURVES = (ROOT / "bench" / "data" / "i94-weekday-2012-10-04.csv", ROOT / "bench" / "data" / "i94-saturday-2012-10-06.csv")
PLANNER = Path(sys.executable).with_name("planner")
WHOLE_PROCESS_GOAL_S = 3.0


def run(curve: Path, model: str, p99_ms: float, extra: list[str]) -> tuple[float, object]:
    with tempfile.TemporaryDirectory(prefix="gpufleet-day-") as tmp:
        out = Path(tmp) / "plan.json"
        cmd = [str(PLANNER), "recommend", "--qps-curve", str(curve), "--model", model, "--p99-ms", f"{p99_ms:g}",
               "--output", str(out), "--format", "json", *extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return wall, read_plan(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curve", type=Path, action="append", help="demand curve CSV (repeat); default bench/data's two")
    ap.add_argument("--model", default="yolov8s-1280x720")
    ap.add_argument("--p99-ms", type=float, default=100.0)
    ap.add_argument("extra", nargs="*", help="more planner recommend options, after --")
    args = ap.parse_args()
    for curve in args.curve or CURVES:
        wall, plan = run(curve, args.model, args.p99_ms, args.extra)
        d = plan.day
        print(f"\n{curve.name}: {args.model}, P99 <= {args.p99_ms:g} ms; peak {max(p.qps for p in d.periods):,.0f} "
              f"req/s, mean {sum(p.mean_qps * p.hours for p in d.periods) / d.span_hours:,.0f}")
        print(f"  day plan           ${d.usd_per_day:>9,.2f}/day  ${d.usd_per_month:>10,.0f}/month  worst-hour P99 "
              f"{'overloaded' if d.worst_period_p99_ms is None else f'{d.worst_period_p99_ms:.1f} ms'}")
        for c in d.comparisons:
            ratio = d.usd_per_day / c.usd_per_day if c.usd_per_day else float("nan")
            p99 = "overloaded" if c.worst_period_p99_ms is None else f"{c.worst_period_p99_ms:.1f} ms"
            print(f"  {c.name:<22} ${c.usd_per_day:>9,.2f}/day  day plan / this = {ratio:.3f}  worst-hour P99 {p99}"
                  f" ({'holds' if c.holds_target else 'MISSES'} the target)")
        r = d.ramp
        print(f"  HPA replay: ${d.replay_usd_per_day:,.2f}/day of replica-hours ({d.replay_usd_per_day / d.usd_per_day:.3f}"
              f" x the plan); fastest ramp {100 * r.fastest_ramp_per_min:.2f}%/min at hour {r.at_s / 3600:.2f}, P99 "
              f"through it {'overloaded' if r.p99_ms is None else f'{r.p99_ms:.1f} ms'} "
              f"({'holds' if r.holds else 'MISSES'})")
        gap = "n/a" if d.solver.lp_gap is None else f"{d.solver.lp_gap:.2%}"
        print(f"  day MILP: {d.solver.status}, MIP gap {d.solver.mip_gap:.2%}, LP-relaxation gap {gap}; "
              f"reserved bought: {', '.join(f'{t.bought} x {t.pool}' for t in d.reserved_thresholds if t.bought) or 'none'}")
        print(f"  whole process {wall:.2f} s ({'under' if wall < WHOLE_PROCESS_GOAL_S else 'OVER'} "
              f"{WHOLE_PROCESS_GOAL_S:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The 8-model camera stack over a day: `planner recommend --mix bench/data/camera-stack-8-day.csv`, each model
over its own 24-hour curve (bench/data/camera-stack-8-day-curves.csv; the derivation is in bench/data/README.md and
in :func:`derive`, which rewrites both files with ``--write-data``). By hand:

    python bench/stack_bench.py

Runs the console entry as a user does (a fresh process each time) and prints: the whole process's wall time (each
run; goal under 15 s), the chosen partition, every model's simulated P99 in every period against its target, the
MIP gap and the LP bound, and the cost against one day plan per model (each planned here too, with
`planner recommend --qps-curve`, one process per model) with the saving.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench/data"
STACK = DATA / "camera-stack-8.csv"  # rates (200 cameras x each model's fps) and targets; sources in its header
MIX = DATA / "camera-stack-8-day.csv"
CURVES = DATA / "camera-stack-8-day-curves.csv"
WEEKDAY, SATURDAY = DATA / "i94-weekday-2012-10-04.csv", DATA / "i94-saturday-2012-10-06.csv"
# Per model (file order of camera-stack-8.csv): the weekday shape's weight (the rest is Saturday's) and the hours
# the shape is shifted later, so the models' rates do not move in proportion over the day.
SHAPES = {"yolov8s-1280x720": (1.0, 0), "yolov8m-seg-640": (0.0, 0), "yolov8n-1280x720": (0.5, 1),
          "yolov8n-640": (1.0, 2), "yolov8s-640": (0.25, -1), "resnet50": (0.75, 3), "yolov8m-1280x720": (0.0, 2),
          "yolov8l-640": (0.5, -2)}
GOAL_S = 15.0
RUNS = int(__import__('os').environ.get('STACK_BENCH_RUNS', '2'))  # each run takes minutes today


def _shape(path: Path) -> list[float]:
    rows = list(csv.DictReader(path.open()))
    q = [float(r["qps"]) for r in rows]
    return [v / max(q) for v in q]


def derive() -> None:
    """Write the curves (long form time,model,qps) and the mix file: each model's curve is a * weekday + (1 - a) *
    Saturday (both scaled to peak 1), shifted by its hours (wrapping round the day), scaled so its peak is the
    model's stack rate."""
    week, sat = _shape(WEEKDAY), _shape(SATURDAY)
    stack = [r for r in csv.DictReader(line for line in STACK.open() if not line.startswith("#"))]
    with CURVES.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "model", "qps"])
        for r in stack:
            a, shift = SHAPES[r["model"]]
            mixed = [a * week[(h - shift) % 24] + (1 - a) * sat[(h - shift) % 24] for h in range(24)]
            top = max(mixed)
            for h, v in enumerate(mixed):
                w.writerow([f"{h:02d}:00", r["model"], round(v / top * float(r["qps"]), 1)])
    with MIX.open("w", newline="") as f:
        f.write("# The camera stack of camera-stack-8.csv (rates and targets: see its header), each model over its "
                "own day\n# (curves derived in bench/data/README.md).\n")
        w = csv.writer(f)
        w.writerow(["model", "curve", "p99_ms"])
        for r in stack:
            w.writerow([r["model"], CURVES.name, r["p99_ms"]])


def _planner(args: list[str]) -> tuple[float, dict]:
    planner = str(Path(sys.executable).with_name("planner"))
    t0 = time.perf_counter()
    out = subprocess.run([planner, "recommend", *args, "--format", "json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return wall, json.loads(out.stdout)


def main() -> None:
    if "--write-data" in sys.argv:
        derive()
        return
    walls = []
    for _ in range(RUNS):
        wall, plan = _planner(["--mix", str(MIX)])
        walls.append(wall)
    m, d = plan["mix"], plan["day"]
    print(f"8-model camera stack over 24 h: whole process {', '.join(f'{w:.1f} s' for w in walls)} "
          f"(goal < {GOAL_S:g} s: {'met' if max(walls) < GOAL_S else 'NOT met'})")
    print(f"  partition: {'; '.join(sorted({x['shared'] or x['model'] for x in plan['deployments']}))}")
    print(f"  cost ${d['usd_per_day']:,.2f}/day; MIP gap {plan['solver']['mip_gap']:.2%}; LP bound "
          f"${plan['solver']['lp_relaxation_usd_per_hour'] * 24:,.2f}/day (gap to it {plan['solver']['lp_gap']:.1%})")
    ok = True
    for x in m["models"]:
        p99 = x["period_p99_ms"]
        held = all(p is not None and p <= x["p99_ms"] for p in p99)
        ok &= held
        worst = max((p for p in p99 if p is not None), default=float("nan"))
        print(f"  {x['model']}: worst period P99 {worst:.1f} ms of {x['p99_ms']:g} ms over {len(p99)} periods: "
              f"{'holds in every period' if held else 'MISSES'}")
    print(f"  every model's P99 within target in every period: {ok}")
    rows = {}
    for r in csv.DictReader(CURVES.open()):
        rows.setdefault(r["model"], []).append((r["time"], r["qps"]))
    targets = {x["model"]: x["p99_ms"] for x in m["models"]}
    separate, solo_walls = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for model, vals in rows.items():
            path = Path(tmp) / f"{model}.csv"
            path.write_text("time,qps\n" + "".join(f"{t},{q}\n" for t, q in vals))
            wall, solo = _planner(["--qps-curve", str(path), "--model", model, "--p99-ms", f"{targets[model]:g}"])
            solo_walls.append(wall)
            separate += solo["day"]["usd_per_day"]
    saving = separate - d["usd_per_day"]
    print(f"  one day plan per model (8 processes, {sum(solo_walls):.1f} s): ${separate:,.2f}/day; the stack saves "
          f"${saving:,.2f}/day ({saving / separate:.1%})" if saving >= 0 else
          f"  one day plan per model: ${separate:,.2f}/day; the stack costs ${-saving:,.2f}/day more")


if __name__ == "__main__":
    main()

"""Several models, one fleet, at scale: `planner recommend --mix` on a 4-model point mix and on the 8-model camera
stack of bench/data/camera-stack-8.csv (its rates are 200 cameras x each model's frames per second, stated in the
file's header). By hand:

    python bench/mix_bench.py

Runs the console entry as a user does (a fresh process each time) and prints, per mix: the whole process's time
(each run), the cheapest partition into shared Deployments, its cost against one Deployment per model, the MIP gap,
the LP bound over the candidates, how many candidates were simulated, and each model's simulated P99 against its
target.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from colocate_bench import time_mix, write_mix  # noqa: E402

FOUR = [("yolov8s-1280x720", 2000.0, 100.0), ("yolov8m-seg-640", 300.0, 150.0), ("yolov8n-640", 500.0, 50.0),
        ("resnet50", 400.0, 50.0)]  # colocate_bench.py's three, plus re-identification at 400 req/s
EIGHT = ROOT / "bench/data/camera-stack-8.csv"
GOALS_S = {"4-model point mix": 3.0, "8-model camera stack": 15.0}
RUNS = 2


def report(name: str, walls: list[float], plan: dict) -> None:
    m, s = plan["mix"], plan["solver"]
    targets = {x["model"]: x["p99_ms"] for x in m["models"]}
    units = sorted({d["shared"] or f"{d['model']}@{d['gpu']}" for d in plan["deployments"]})
    held = all(d["predicted"]["p99_ms"] <= targets[d["model"]] for d in plan["deployments"])
    print(f"\n{name}: {len(targets)} models; whole process {', '.join(f'{w:.2f}' for w in walls)} s "
          f"(goal {GOALS_S[name]:g} s; {os.cpu_count()} cores)")
    print(f"  ${plan['cost']['usd_per_hour']:,.4f}/h against ${m['separate_usd_per_hour']:,.4f}/h for one Deployment "
          f"per model: {m['saving']:.1%} saved (${m['separate_usd_per_hour'] - plan['cost']['usd_per_hour']:,.4f}/h)")
    print(f"  MIP gap {s['mip_gap']:.2%}; LP bound ${s['lp_relaxation_usd_per_hour']:,.4f}/h (gap {s['lp_gap']:.1%}); "
          f"{m['bundles_evaluated']} candidate sets x GPU types simulated, {m['partitions_evaluated']} MILPs")
    print(f"  Deployments: {'; '.join(units)}")
    for d in plan["deployments"]:
        print(f"    {d['model']:>18} on {d['replicas']} {d['gpu']:<5} P99 {d['predicted']['p99_ms']:7.2f} ms "
              f"<= {targets[d['model']]:g}")
    print(f"  every model's P99 within its target: {held}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        four = write_mix(Path(tmp) / "four.csv", FOUR)
        for name, path in (("4-model point mix", four), ("8-model camera stack", EIGHT)):
            report(name, *time_mix(path, RUNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

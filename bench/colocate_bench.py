"""Several models, one fleet: what co-locating a perception mix saves against one fleet per model. By hand:

    python bench/colocate_bench.py

The mix (rates are this bench's assumptions, stated so they can be changed, not measurements): 200 intersection
cameras; a detector (yolov8s at 1280x720) on every camera at 10 frames/s = 2,000 req/s, P99 <= 100 ms; drivable-
area segmentation (yolov8m-seg at 640) at 1.5 frames/s = 300 req/s, P99 <= 150 ms; a traffic-light state model
(yolov8n at 640, on crops) at 2.5 frames/s = 500 req/s, P99 <= 50 ms. Embedded profiles and catalog, every GPU type,
production floor (2 replicas per GPU type per Deployment), spot share <= 0.7, lag-aware HPA targets.

Prints the cheapest partition into co-located bundles against one Deployment per model, each model's P99 simulated
at its fleet's own share per replica, and the whole process's time (a fresh interpreter: imports, solo capacity
searches, co-located simulations, the MILPs).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIX = [("yolov8s-1280x720", 2000.0, 100.0), ("yolov8m-seg-640", 300.0, 150.0), ("yolov8n-640", 500.0, 50.0)]
GOAL_S = 3.0

INNER = """
import json, sys
sys.path.insert(0, {root!r})
from planner.catalog import pools_for, read_catalog
from planner.colocate import ModelDemand, plan_mix
from planner.profiles import load_profiles
profiles = load_profiles([])
pools = tuple(pools_for(read_catalog(), {{g for _, g in profiles}}, 12.0))
plan = plan_mix([ModelDemand(m, q, t) for m, q, t in {mix!r}], profiles, pools)
def parts(ps):
    return [dict(models=p.models, counts=p.counts, usd=p.usd_per_hour, replicas=p.replicas, p99=p.p99_ms) for p in ps]
print(json.dumps(dict(usd=plan.usd_per_hour, separate=plan.separate_usd_per_hour, saving=plan.saving,
                      bundles=plan.bundles_evaluated, partitions=plan.partitions, parts=parts(plan.parts),
                      apart=parts(plan.separate))))
"""


def main() -> int:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", INNER.format(root=str(ROOT), mix=MIX)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    r = json.loads(out.stdout)
    targets = {m: t for m, _, t in MIX}
    print(f"mix: {', '.join(f'{m} {q:,.0f} req/s at P99 <= {t:g} ms' for m, q, t in MIX)}")
    for title, parts, usd in (("co-located", r["parts"], r["usd"]), ("one fleet per model", r["apart"], r["separate"])):
        print(f"\n{title}: ${usd:,.3f}/h (${usd * 730:,.0f}/month)")
        for p in parts:
            p99 = "; ".join(f"{g}: " + ", ".join(f"{m} {v:.1f} ms (<= {targets[m]:g})" for m, v in zip(p["models"], vals))
                            for g, vals in p["p99"].items())
            print(f"  {' + '.join(p['models'])}: {p['replicas']} replicas, ${p['usd']:,.3f}/h; P99 {p99}")
    held = all(v <= targets[m] for p in r["parts"] + r["apart"] for vals in p["p99"].values()
               for m, v in zip(p["models"], vals))
    print(f"\nsaving {r['saving']:.1%} against one fleet per model; {r['partitions']} partitions, {r['bundles']} bundles "
          f"(model set x GPU type) sized; every model's P99 within its target: {held}")
    print(f"whole process {wall:.2f} s ({'under' if wall < GOAL_S else 'OVER'} {GOAL_S:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

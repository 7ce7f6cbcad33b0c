"""Plans before and after a change that should not change them: each tree's planner on the same inputs, compared.

    git worktree add --detach /tmp/old <commit>        # the tree before the change
    python bench/plan_equality.py --old /tmp/old        # exit status 1 if any plan differs

Inputs: the point plan at 100, 5,000 and 100,000 req/s (P99 <= 100 ms, the default model) and the default model over
bench/data's two I-94 curves. Each runs as ``python -m planner recommend ... --format json --output`` with its tree
first on PYTHONPATH (the same interpreter); the plans are compared as JSON, without the fields that record when and
how long (``created_at``, ``wall_s``). Written for issue 26's start-up and simulation cuts, which must leave every
plan as it was.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURVES = sorted((ROOT / "bench" / "data").glob("i94-*.csv"))
INPUTS = [(f"point {q} req/s", ["--qps", str(q), "--p99-ms", "100"]) for q in (100, 5000, 100000)] + [
    (f"day {c.stem}", ["--qps-curve", str(c)]) for c in CURVES]
# What differs between two runs of one tree: when the plan was made and how long its solver took.
RUN_FIELDS = {"created_at", "wall_s"}


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in RUN_FIELDS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def plan_of(tree: Path, args: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-m", "planner", "recommend", *args, "--format", "json", "--output",
                           str(out)], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: planner recommend {' '.join(args)}: {done.stderr.strip()}")
    return _strip(json.loads(out.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the tree before the change")
    ap.add_argument("--new", type=Path, default=ROOT, help="the tree after it (default this one)")
    args = ap.parse_args()
    differ = 0
    with tempfile.TemporaryDirectory(prefix="gpufleet-equal-") as tmp:
        for label, inp in INPUTS:
            old = plan_of(args.old.resolve(), inp, Path(tmp) / "old.json")
            new = plan_of(args.new.resolve(), inp, Path(tmp) / "new.json")
            same = old == new
            differ += not same
            print(f"{label:<32} {'same' if same else 'DIFFERENT'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the closed loop keep its promises? A calibrated plan and a guessed one, each checked by ``loadtests verify``.

    python bench/verify_loop.py --out docs/validation/verify --p99-ms 300 --max-batch-size 8 --budget-s 420 \
        --calibrate-args '--stability-pct 20' --verify-step-s 40          # the committed run: by hand, ~14 minutes,
                                                                           # nothing else on the machine
    python bench/verify_loop.py ... --reuse-runs     # the same measurements (runs/): the plans and verify again

Issue 27's second done-when: ``loadtests verify`` on a plan made from a ``loadtests calibrate`` calibration holds all
three promises on the stand-in; on a calibration made from three guessed rates it fails where the promise is wrong.
Everything runs through the console entries, as a user types the commands (each one is written to
``commands.md`` as run, in ``--out``, which is its working folder):

1. **The profile** nobody tuned to: :func:`bench.calibrate_validation.generate` (``--seed``, default 2712, which
   neither that bench, seed 27, nor any test uses) and its profile ``--index`` (default 6: "balanced", 15 ms per
   batch + 5 ms per image at P50, P99/mean 1.3-2.3, the generator's config batch 4, no queue delay, its P99 target
   171.5 ms; ``--p99-ms`` and ``--max-batch-size`` override those two). The generator labels it ``standin``; it is
   written as an L4 profile (the label only: the stand-in sleeps the profile's times whatever it is called), so
   that ``planner recommend`` prices it.
2. **Calibrated**: ``serving local --standin profile.json`` with that config; ``loadtests calibrate`` against it
   (``--budget-s``, default 300 s, and ``--calibrate-args``); then **guessed**: ``loadtests run --rates a,b,c
   --step-duration 20 --warmup 10`` on the same server (the issue's loop: rates a user guesses, here a quarter, a
   half and all of the profile's batch-1 throughput, 1000 / P50 at batch 1), and ``planner fit`` on it.
3. ``planner recommend --qps`` (``--qps``, default 1000; on-demand, development) from each calibration, first as
   the README types it, the width gate at its default (its refusal, or not, is recorded); where it refuses, again
   with ``--max-capacity-spread-pct 1000`` as the README's old walkthrough did (marked in the table), so that
   verify measures what the calibration would have promised. The plan may deploy a Triton config the
   calibration never served: verify serves the plan's, so it checks the fit's extrapolation to it.
4. Per plan: ``serving local --standin profile.json --plan PLAN`` and ``loadtests verify PLAN --standin
   --step-duration`` (``--verify-step-s``, default 40 s, after a 10 s warm-up). The verdicts are re-judged from
   the written stress results by :func:`loadtests.verify.judge`, the function verify prints with, for the table.

Writes into ``--out``: ``profile.json``, ``runs/`` (calibrate's and the guessed run's stress results, steps and
calibrations), ``calibrated.plan.json``, ``guessed.plan.json``, ``verify-calibrated/``, ``verify-guessed/`` (the
verify runs), ``logs/`` (each command's output), ``commands.md``, ``summary.json`` and ``table.md``. Exit 0 when
the calibrated plan holds every promise and the guessed one fails at least one, else 1.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from calibrate_validation import generate  # noqa: E402
from gpufleet.contracts.calibration import read_calibration  # noqa: E402
from gpufleet.contracts.plan import read_plan  # noqa: E402
from gpufleet.contracts.profile import write_profile  # noqa: E402
from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from gpufleet.net import free_ports  # noqa: E402
from loadtests import verify  # noqa: E402
from loadtests.calibrate import interval_of  # noqa: E402

GPU = "L4"  # the label the plan prices the stand-in as (any catalog GPU type would do)
GUESSED_SHARES = (0.25, 0.5, 1.0)  # of the profile's batch-1 throughput
GUESSED_STEP_S, GUESSED_WARMUP_S = 20.0, 10.0  # the loop: three 20 s rates
OPEN_GATE_PCT = 1000.0  # the README's old walkthrough opened the width gate this far
READY_S = 120


def console(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


class Log:
    """Each command as typed (console name, relative paths) in commands.md, its output in logs/."""

    def __init__(self, out: Path):
        self.out = out
        (out / "logs").mkdir(exist_ok=True)
        self.commands: list[dict] = []

    def typed(self, words: list[str]) -> str:
        return " ".join(shlex.quote(w) for w in words)

    def run(self, tag: str, words: list[str], env: dict) -> dict:
        t = time.monotonic()
        with open(self.out / "logs" / f"{tag}.txt", "w") as log:
            done = subprocess.run([console(words[0]), *words[1:]], cwd=self.out, stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        rec = {"tag": tag, "command": self.typed(words), "exit": done.returncode,
               "wall_s": round(time.monotonic() - t, 1)}
        self.commands.append(rec)
        print(f"   {tag}: exit {done.returncode}, {rec['wall_s']:g} s", flush=True)
        return rec

    def last_line(self, tag: str) -> str:
        lines = [x for x in (self.out / "logs" / f"{tag}.txt").read_text().splitlines() if x.strip()]
        return lines[-1].strip() if lines else ""


class Server:
    """``serving local --standin ...`` in its own process on free ports, stopped with SIGINT (the user's Ctrl-C)."""

    def __init__(self, log: Log, tag: str, words: list[str], env: dict):
        self.ports = free_ports(3)
        self.words = words + ["--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]),
                              "--metrics-port", str(self.ports[2])]
        self.path = log.out / "logs" / f"{tag}.txt"
        self.file = open(self.path, "w")
        log.commands.append({"tag": tag, "command": log.typed(self.words), "exit": None, "wall_s": None,
                             "note": "shell 1, stopped with Ctrl-C after the next command"})
        self.proc = subprocess.Popen([console(words[0]), *self.words[1:]], cwd=log.out, stdout=self.file,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_S
        while "Triton ready" not in self.path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{tag}: the server did not start; see {self.path}")
            time.sleep(0.2)

    @property
    def host(self) -> list[str]:
        return ["--host", f"http://127.0.0.1:{self.ports[0]}",
                "--metrics-url", f"http://127.0.0.1:{self.ports[2]}/metrics"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.file.close()


def verdict_rows(out: Path, name: str, target: float, band: float) -> tuple[list[dict], dict]:
    """The plan's Deployment and its three promises, judged from verify's stress result as verify judges them."""
    plan = read_plan(out / f"{name}.plan.json")
    (d,) = plan.deployments
    rows = []
    path = out / f"verify-{name}" / f"{verify.run_name(d)}.stress.json"
    if path.exists():
        for v in verify.judge(f"{d.model}@{d.gpu}", d, target, read_stress_result(path), band):
            rows.append({"promise": v.promise, "rate": round(v.rate, 1),
                         "predicted": (f"{v.predicted_ms:.1f} ms (within ±{band:.0%}), ≤ {target:g}"
                                       if v.promise == verify.PLANNED else
                                       f"≤ {target:g} ms" if v.promise == verify.MAX_RATE else f"> {target:g} ms"),
                         "p99_ms": None if v.step.latency_ms.p99 is None else round(v.step.latency_ms.p99, 1),
                         "not_served": f"{v.step.rejected + v.step.errors + v.step.dropped}/"
                                       f"{v.step.sent + v.step.dropped}",
                         "holds": v.holds, "why": v.why})
    sized = next((s for s in plan.sizing if s.gpu == d.gpu and s.triton == d.triton), None)
    interval = sized.capacity_interval if sized else None
    facts = {"config": d.triton.describe(), "replicas": d.replicas, "rate_per_replica": d.rate_per_replica,
             "max_rate_per_replica": d.autoscaling.max_rate_per_replica,
             "capacity_interval": interval.model_dump() if interval else None,
             "predicted_p99_ms": d.predicted.p99_ms}
    return rows, facts


def table(meta: dict) -> str:
    lines = [f"`{meta['command']}` on {meta['date']} ({meta['machine']}); wall time {meta['wall_s']:.0f} s; load "
             f"average (1 min) {meta['loadavg_before'][0]:.2f} before, {meta['loadavg_after'][0]:.2f} after. The "
             f"commands as run: [commands.md](commands.md).", "",
             f"Profile `{meta['profile']}` ({meta['kind']}; generated, seed {meta['seed']}, index {meta['index']}: "
             f"{meta['derivation']}), P99 target {meta['target_ms']:g} ms, {meta['qps']:g} req/s planned.", "",
             "| plan | calibration | capacity at the target (interval) | config calibrated | config planned | "
             "replicas, req/s each | max_rate |", "|---|---|---|---|---|---|---|"]
    for name in ("calibrated", "guessed"):
        p = meta["plans"][name]
        cal = p["calibration"]
        iv = "-" if cal["nominal"] is None else (f"{cal['nominal']:.1f} ({cal['low']:.1f}-{cal['high']:.1f}, "
                                                 f"±{cal['half_width']:.0%})")
        opened = f" (width gate opened: {OPEN_GATE_PCT:g}%)" if p["gate"]["opened"] else ""
        lines.append(f"| {name}{opened} | {cal['how']} ({cal['steps']} steps fitted) | {iv} | "
                     f"{meta['served_config']} | {p['plan'].get('config', '-')} | {p['plan'].get('replicas', '-')} x "
                     f"{p['plan'].get('rate_per_replica', 0):.1f} | {p['plan'].get('max_rate_per_replica', 0):.1f} |")
    lines += ["", "| plan | promise | req/s | predicted | measured P99 ms | not served | verdict |",
              "|---|---|---|---|---|---|---|"]
    for name in ("calibrated", "guessed"):
        p = meta["plans"][name]
        if not p["rows"]:
            lines.append(f"| {name} | - | - | - | - | - | no verify run (see logs/) |")
        for r in p["rows"]:
            lines.append(f"| {name} | {r['promise']} | {r['rate']:.1f} | {r['predicted']} | "
                         f"{'-' if r['p99_ms'] is None else r['p99_ms']} | {r['not_served']} | "
                         f"{'holds' if r['holds'] else '**DOES NOT HOLD**'}: {r['why']} |")
    lines.append("")
    for name in ("calibrated", "guessed"):
        gate = meta["plans"][name]["gate"]
        lines.append(f"- The width gate on the {name} calibration (`planner recommend` without "
                     f"`--max-capacity-spread-pct`): exit {gate['exit']}: {gate['line']}")
    lines += ["", meta["verdict"], ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation" / "verify")
    ap.add_argument("--seed", type=int, default=2712, help="seed of bench/calibrate_validation.py's generator")
    ap.add_argument("--index", type=int, default=6, help="which generated profile")
    ap.add_argument("--qps", type=float, default=1000.0)
    ap.add_argument("--p99-ms", type=float, default=None, help="P99 target (default the generator's for the profile)")
    ap.add_argument("--max-batch-size", type=int, default=None, help="the config calibrate serves: this max batch "
                    "(default the generator's config)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="loadtests calibrate's budget, s")
    ap.add_argument("--calibrate-args", default="", help="more options for loadtests calibrate, one string (e.g. "
                    "'--stability-pct 20')")
    ap.add_argument("--reuse-runs", action="store_true", help="keep runs/ (calibrate's and the guessed run's "
                    "measurements and calibrations); make the plans and verify them again")
    ap.add_argument("--verify-step-s", type=float, default=40.0, help="loadtests verify's --step-duration")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    case = generate(args.index + 1, args.seed)[args.index]
    model, target = case.key, args.p99_ms or case.target_ms
    write_profile(case.profile.model_copy(update={"gpu": GPU}), out / "profile.json")
    log = Log(out)
    cfg = case.config if args.max_batch_size is None else case.config.model_copy(
        update={"max_batch_size": args.max_batch_size})
    b1 = 1000.0 / case.profile.batches[0].p50_ms
    guessed = [round(s * b1) for s in GUESSED_SHARES]
    print(f"{model} ({case.kind}), served {cfg.describe()}, target {target:g} ms; guessed rates {guessed}", flush=True)

    serve = ["serving", "local", "--standin", "profile.json", "--max-batch-size", str(cfg.max_batch_size),
             "--max-queue-delay-us", str(cfg.max_queue_delay_microseconds)]
    measured = ("serve-calibrate", "calibrate", "guessed-run", "guessed-fit")
    if args.reuse_runs:  # the plans and verify runs again, on the measurements and commands already there
        log.commands += [c for c in json.loads((out / "summary.json").read_text())["commands"] if c["tag"] in measured]
    else:
        server = Server(log, "serve-calibrate", serve, env)
        try:
            log.run("calibrate", ["loadtests", "calibrate", "--model", model, "--profile", "profile.json",
                                  "--p99-ms", f"{target:g}", *server.host, "--budget-s", f"{args.budget_s:g}",
                                  *shlex.split(args.calibrate_args), "--out", "runs/"], env)
            log.run("guessed-run", ["loadtests", "run", "--model", model, *server.host, "--rates",
                                    ",".join(map(str, guessed)), "--step-duration", f"{GUESSED_STEP_S:g}",
                                    "--warmup", f"{GUESSED_WARMUP_S:g}", "--out", "runs/", "--name", "guessed"], env)
        finally:
            server.stop()
        log.run("guessed-fit", ["planner", "fit", "runs/guessed.stress.json", "--profile", "profile.json",
                                "--p99-ms", f"{target:g}", "--output", "runs/guessed.calibration.json"], env)
    recommend = ["planner", "recommend", "--qps", f"{args.qps:g}", "--p99-ms", f"{target:g}", "--model", model,
                 "--gpu", GPU, "--profile", "profile.json", "--environment", "development", "--capacity-type",
                 "on-demand"]
    gates = {}
    for name, cal_path in (("calibrated", "runs/calibrate.calibration.json"),
                           ("guessed", "runs/guessed.calibration.json")):
        (out / f"{name}.plan.json").unlink(missing_ok=True)
        # First as the README has it (the width gate at its default); refused, then with the gate opened as the old
        # walkthrough did, so that verify measures what the plan would have promised.
        gate = log.run(f"{name}-recommend", recommend + ["--calibration", cal_path, "--output",
                                                         f"{name}.plan.json"], env)
        gates[name] = {"exit": gate["exit"], "line": log.last_line(f"{name}-recommend"), "opened": False}
        if gate["exit"] != 0:
            log.run(f"{name}-recommend-opened", recommend + [
                "--calibration", cal_path, "--max-capacity-spread-pct", f"{OPEN_GATE_PCT:g}", "--output",
                f"{name}.plan.json"], env)
            gates[name]["opened"] = True
    band = verify.PREDICTION_BAND
    plans = {}
    for name, cal_path in (("calibrated", "runs/calibrate.calibration.json"),
                           ("guessed", "runs/guessed.calibration.json")):
        rec = {"rows": [], "plan": {}, "calibration": {"how": "loadtests calibrate" if name == "calibrated" else
                                                       f"loadtests run --rates {','.join(map(str, guessed))}",
                                                       "nominal": None, "low": None, "high": None,
                                                       "half_width": None, "steps": 0}}
        if (out / cal_path).exists():
            iv = interval_of(read_calibration(out / cal_path))
            rec["calibration"].update(nominal=iv.nominal, low=iv.low, high=iv.high, half_width=iv.half_width,
                                      steps=iv.steps)
        if (out / f"{name}.plan.json").exists():
            server = Server(log, f"serve-{name}", ["serving", "local", "--standin", "profile.json", "--plan",
                                                   f"{name}.plan.json"], env)
            try:
                rec["verify"] = log.run(f"verify-{name}", [
                    "loadtests", "verify", f"{name}.plan.json", *server.host, "--standin", "--step-duration",
                    f"{args.verify_step_s:g}", "--out", f"verify-{name}/"], env)
            finally:
                server.stop()
            rec["rows"], rec["plan"] = verdict_rows(out, name, target, band)
        plans[name] = rec
    for name in plans:
        plans[name]["gate"] = gates[name]
    cal_ok = bool(plans["calibrated"]["rows"]) and all(r["holds"] for r in plans["calibrated"]["rows"])
    guess_fails = [r["promise"] for r in plans["guessed"]["rows"] if not r["holds"]]
    line = (f"Calibrated plan: {'every promise holds' if cal_ok else 'NOT every promise holds'}; guessed plan: "
            + (f"fails at {', '.join(guess_fails)}" if guess_fails else "every promise holds (no failure found)"))
    meta = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "command": shlex.join(["python", "bench/verify_loop.py"] + sys.argv[1:]), "seed": args.seed,
            "index": args.index, "profile": model, "kind": case.kind, "derivation": case.profile.origin.derivation,
            "target_ms": target, "qps": args.qps, "served_config": cfg.describe(), "guessed_rates": guessed,
            "budget_s": args.budget_s, "calibrate_args": args.calibrate_args, "verify_step_s": args.verify_step_s,
            "wall_s": time.monotonic() - started, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "plans": plans, "verdict": line, "commands": log.commands}
    (out / "summary.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    cmds = ["# The commands, as run (in this folder; ports were free loopback ports)", ""]
    for c in log.commands:
        cmds.append(f"- `{c['command']}`" + (f" — exit {c['exit']}, {c['wall_s']:g} s" if c["exit"] is not None
                                              else f" — {c['note']}"))
    (out / "commands.md").write_text("\n".join(cmds) + "\n")
    (out / "table.md").write_text(table(meta))
    print(table(meta))
    return 0 if cal_ok and guess_fails else 1


if __name__ == "__main__":
    sys.exit(main())

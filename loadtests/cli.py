"""``loadtests``: the command line over :func:`loadtests.run.run_stress` (``run``) and the result reader (``show``).

Every bad argument (a rate <= 0, a missing model, an unreachable host) ends as one line on stderr and exit status 2,
before any load is sent.
"""
from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from gpufleet.cli import plural, require_extra, run_app, stdout_console
from gpufleet.tables import Column, print_table
from gpufleet.contracts.io import check_output_file, write_atomic
from loadtests import shapes
from loadtests.calibrate import DEFAULT_BUDGET_S, DEFAULT_FACTOR, DEFAULT_TOLERANCE_PCT, MIN_WINDOW_REQUESTS
from loadtests.errors import LoadTestInputError
from gpufleet.contracts.model import default_of
from gpufleet.contracts.calibration import run_noise_error
from gpufleet.contracts.stress_result import HOST_CPU_SATURATED
from loadtests.settings import StressSettings, build, settings_error
from loadtests.verify import PREDICTION_BAND, STEP_S as VERIFY_STEP_S, WARMUP_S as VERIFY_WARMUP_S

app = typer.Typer(help="Open-loop stress runs against Triton, with Locust.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


class Arrival(str, Enum):
    poisson = "poisson"
    constant = "constant"


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LoadTestInputError(f"{what} {text!r}: expected comma-separated numbers") from None


def _shape(rates, ramp, replay, closed_loop, *, step_duration, warmup, seconds_per_row, rate_scale, duration,
           p99_bound_ms, max_error_share):
    """The load shape the options name (exactly one of them), as plain values the settings validate."""
    given = [x for x in (rates, ramp, replay, closed_loop) if x is not None]
    if len(given) != 1:
        raise LoadTestInputError("give exactly one of --rates, --ramp, --replay, --closed-loop")
    if rates is not None:
        return {"kind": "steps", "rates": _floats(rates, "--rates"), "step_duration": step_duration,
                "warmup": warmup}
    if ramp is not None:
        parts = ramp.split(":")
        if len(parts) != 3:
            raise LoadTestInputError(f"--ramp {ramp!r}: expected START:STOP:FACTOR, e.g. 50:2000:1.5")
        start, stop, factor = _floats(",".join(parts), "--ramp")
        return {"kind": "ramp", "start": start, "stop": stop, "factor": factor, "step_duration": step_duration,
                "warmup": warmup, "p99_bound_ms": p99_bound_ms, "max_error_share": max_error_share}
    if replay is not None:
        try:
            return shapes.Replay.from_csv(replay, seconds_per_row, rate_scale).model_dump()
        except ValidationError as exc:
            raise settings_error(exc) from None
    return {"kind": "closed-loop", "users": closed_loop, "duration": duration}


_S, _STEPS, _RAMP, _REPLAY, _CLOSED = (StressSettings, shapes.Steps, shapes.Ramp, shapes.Replay, shapes.ClosedLoop)


@app.command("run")
def run_cmd(
    model: Annotated[str, typer.Option(help="Model name on the server.")],
    host: Annotated[str, typer.Option(help="KServe v2 HTTP endpoint; load goes only where you point it.")] =
        default_of(_S, "host"),
    rates: Annotated[Optional[str], typer.Option(help="Steps: comma-separated req/s, each held --step-duration.")] = None,
    ramp: Annotated[Optional[str], typer.Option(help="Knee search START:STOP:FACTOR, stopped by --p99-bound-ms / "
                                                     "--max-error-share.")] = None,
    replay: Annotated[Optional[Path], typer.Option(help="Replay a CSV with a 'qps' column, a row per interval.")] = None,
    closed_loop: Annotated[Optional[int], typer.Option(help="Closed loop with this many back-to-back users "
                                                            "(max-throughput search).")] = None,
    step_duration: Annotated[float, typer.Option(help="Seconds per step (steps, ramp).")] =
        default_of(_STEPS, "step_duration"),
    warmup: Annotated[float, typer.Option(help="Seconds of discarded warm-up at the first rate.")] =
        default_of(_STEPS, "warmup"),
    seconds_per_row: Annotated[float, typer.Option(help="Replay: seconds per CSV row.")] =
        default_of(_REPLAY, "seconds_per_row"),
    rate_scale: Annotated[float, typer.Option(help="Replay: multiply the CSV's qps by this.")] = 1.0,
    duration: Annotated[float, typer.Option(help="Closed loop: seconds.")] = default_of(_CLOSED, "duration"),
    p99_bound_ms: Annotated[float, typer.Option(help="Ramp: stop after the first step whose P99 exceeds this.")] =
        default_of(_RAMP, "p99_bound_ms"),
    max_error_share: Annotated[float, typer.Option(help="Ramp: stop after a step with a larger error share.")] =
        default_of(_RAMP, "max_error_share"),
    arrival: Annotated[Arrival, typer.Option(help="Open-loop arrival process.")] = Arrival(default_of(_S, "arrival")),
    seed: Annotated[int, typer.Option(help="Seed of the arrival times.")] = default_of(_S, "seed"),
    users: Annotated[int, typer.Option(help="Open loop: generators sharing the rate (at least one per worker).")] =
        default_of(_S, "users"),
    workers: Annotated[int, typer.Option(help="Locust worker processes under a master on loopback (0: one "
                                              "process). Beyond one machine, see README: distributed runs.")] =
        default_of(_S, "workers"),
    protocol: Annotated[Protocol, typer.Option(help="KServe v2 over HTTP or gRPC.")] =
        Protocol(default_of(_S, "protocol")),
    grpc_url: Annotated[str, typer.Option(help="gRPC endpoint host:port (protocol grpc).")] = default_of(_S, "grpc_url"),
    version: Annotated[str, typer.Option(help="Model version (default: the server's choice).")] =
        default_of(_S, "version"),
    request_batch: Annotated[int, typer.Option(help="Images per request.")] = default_of(_S, "request_batch"),
    metrics_url: Annotated[Optional[str], typer.Option(help="Triton /metrics to scrape per step (default "
                                                            "http://<host>:8002/metrics; '' for none).")] =
        default_of(_S, "metrics_url"),
    late_ms: Annotated[float, typer.Option(help="A send this late or later is counted late.")] =
        default_of(_S, "late_ms"),
    timeout_s: Annotated[float, typer.Option(help="Request timeout, seconds.")] = default_of(_S, "timeout_s"),
    max_in_flight: Annotated[int, typer.Option(help="Per process; beyond it sends are dropped and counted.")] =
        default_of(_S, "max_in_flight"),
    connections: Annotated[int, typer.Option(help="HTTP connections per user.")] = default_of(_S, "connections"),
    out: Annotated[Path, typer.Option(help="Folder for the stress result and Locust's files.")] = default_of(_S, "out"),
    name: Annotated[str, typer.Option(help="File name stem of this run.")] = default_of(_S, "name"),
    emit_k8s: Annotated[Optional[Path], typer.Option(help="Do not run: write Kubernetes manifests (master Job, "
                                                          "--workers worker pods, Service, results PVC) here.")] = None,
    image: Annotated[str, typer.Option(help="With --emit-k8s: an image with gpufleet[loadtests] installed.")] = "",
    namespace: Annotated[str, typer.Option(help="With --emit-k8s: the namespace.")] = "loadtests",
) -> None:
    """Run one stress test and write <out>/<name>.stress.json (plus Locust's CSVs and JSON beside it)."""
    require_extra("loadtests", "loadtests")  # Locust's processes import it; say so here, not in their tracebacks
    from loadtests.run import run_stress

    shape = _shape(rates, ramp, replay, closed_loop, step_duration=step_duration, warmup=warmup,
                   seconds_per_row=seconds_per_row, rate_scale=rate_scale, duration=duration,
                   p99_bound_ms=p99_bound_ms, max_error_share=max_error_share)
    settings = build(model=model, shape=shape, host=host, version=version, protocol=protocol.value,
                     grpc_url=grpc_url, arrival=arrival.value, seed=seed, users=users, workers=workers,
                     request_batch=request_batch, late_ms=late_ms, timeout_s=timeout_s, max_in_flight=max_in_flight,
                     connections=connections, metrics_url=metrics_url, out=out, name=name)
    if emit_k8s is not None:
        from loadtests.k8s import distributed_manifests, to_yaml

        check_output_file(emit_k8s, "Kubernetes manifests", LoadTestInputError)
        write_atomic(emit_k8s, to_yaml(distributed_manifests(settings, image=image, namespace=namespace)))
        print(f"wrote {emit_k8s}: kubectl apply -f {emit_k8s}; the result lands in PVC {name}-results as "
              f"{settings.result_path.name}")
        return

    def echo(command: str) -> None:
        err.print(f"loadtests: {settings.model} at {settings.host}, {settings.shape.describe()}; at most "
                  f"{settings.bound_s():.0f} s. Locust command:\n{command}", highlight=False, soft_wrap=True)

    result = run_stress(settings, echo=echo)
    _show(result)
    print(f"wrote {settings.result_path}")


_STABLE = shapes.Stable


@app.command("calibrate")
def calibrate_cmd(
    model: Annotated[str, typer.Option(help="Model name on the server.")],
    profile: Annotated[Path, typer.Option(help="Latency profile of the model on the server's GPU (as planner fit "
                                               "takes).")],
    p99_ms: Annotated[float, typer.Option(min=0.001, help="P99 target, ms: the capacity pinned is the rate at it.")],
    host: Annotated[str, typer.Option(help="KServe v2 HTTP endpoint; load goes only where you point it.")] =
        default_of(_S, "host"),
    metrics_url: Annotated[Optional[str], typer.Option(help="Triton /metrics to scrape per step (default "
                                                            "http://<host>:8002/metrics; '' for none).")] =
        default_of(_S, "metrics_url"),
    tolerance_pct: Annotated[float, typer.Option(min=0.1, max=100, help="Stop when capacity's interval lies within "
                                                 "± this percent of its estimate.")] = DEFAULT_TOLERANCE_PCT,
    budget_s: Annotated[float, typer.Option(min=1, help="Stop when the next step would not end within this many "
                                            "seconds of the start.")] = DEFAULT_BUDGET_S,
    confidence: Annotated[Optional[float], typer.Option(help="Confidence of the interval (default planner fit's).")]
        = None,
    run_noise_pct: Annotated[Optional[float], typer.Option(help="How far this host's P99 level moves from one run to "
                                                           "the next, percent (planner fit --run-noise-pct; default "
                                                           "planner fit's).")] = None,
    start_rate: Annotated[Optional[float], typer.Option(help="First rate, req/s (default a quarter of what the "
                                                        "served config sustains by the profile).")] = None,
    factor: Annotated[float, typer.Option(help="Bracket: each rate this multiple of the last.")] = DEFAULT_FACTOR,
    window_s: Annotated[float, typer.Option(help="Seconds per measurement window (longer at rates too low for "
                                            f"{MIN_WINDOW_REQUESTS} requests).")] = default_of(_STABLE, "window_s"),
    max_trials: Annotated[int, typer.Option(help="Most windows per step.")] = default_of(_STABLE, "max_trials"),
    stability_pct: Annotated[float, typer.Option(help="A step is stable when its last three windows' P99s lie "
                                                 "within this percent (max/min).")] =
        default_of(_STABLE, "stability_pct"),
    seed: Annotated[int, typer.Option(help="Seed of the first step's arrival times (then one more a step).")] =
        default_of(_S, "seed"),
    out: Annotated[Path, typer.Option(help="Folder for the stress result, the calibration and each step's files.")]
        = default_of(_S, "out"),
    name: Annotated[str, typer.Option(help="File name stem: <name>.stress.json, <name>.calibration.json.")] =
        "calibrate",
) -> None:
    """Choose open-loop steps around the knee until planner fit pins capacity at the P99 target; write the stress
    result and the calibration."""
    require_extra("loadtests", "loadtests")
    import time as _time

    from rich.progress import BarColumn, Progress, TextColumn

    from gpufleet.contracts.profile import read_profile
    from gpufleet.triton import loaded_batching
    from loadtests.calibrate import Plan, Ticker, calibrate, check_config
    from loadtests.run import preflight, run_stress

    for option, value in (("--p99-ms", p99_ms), ("--tolerance-pct", tolerance_pct), ("--budget-s", budget_s),
                          ("--window-s", window_s), ("--stability-pct", stability_pct)):
        if not (math.isfinite(value) and value > 0):
            raise LoadTestInputError(f"{option} {value}: must be a finite number > 0")
    if not (math.isfinite(factor) and factor > 1):
        raise LoadTestInputError(f"--factor {factor}: must be above 1")
    if start_rate is not None and not (math.isfinite(start_rate) and start_rate > 0):
        raise LoadTestInputError(f"--start-rate {start_rate}: must be > 0")
    if confidence is not None and not 0.5 < confidence < 1:
        raise LoadTestInputError(f"--confidence {confidence}: must lie strictly between 0.5 and 1")
    if run_noise_pct is not None and run_noise_error(run_noise_pct):
        raise LoadTestInputError(run_noise_error(run_noise_pct))
    common = dict(model=model, host=host, metrics_url=metrics_url, seed=seed)
    prof = read_profile(profile)
    if prof.model != model:
        raise LoadTestInputError(f"--profile {profile} is of model {prof.model!r}, not {model!r}")
    plan = Plan(settings=common, profile_path=profile, profile=prof, p99_ms=p99_ms, out=out, name=name,
                start_rate=start_rate, factor=factor, tolerance_pct=tolerance_pct, budget_s=budget_s,
                window_s=window_s, max_trials=max_trials, stability_pct=stability_pct, confidence=confidence,
                run_noise_pct=run_noise_pct)
    plan.check_budget()  # at batch 1's rate, the slowest start the served config can give: before any connection
    rate = plan.first_rate()
    first = build(**common, out=plan.steps_dir, shape=dict(kind="stable", rate=rate, window_s=plan.window_for(rate),
                                                          max_trials=max_trials, stability_pct=stability_pct))
    for path, what in ((plan.stress_path, "stress result"), (plan.calibration_path, "calibration")):
        check_output_file(path, what, LoadTestInputError)
    target = preflight(first)
    config = check_config(prof, loaded_batching(target.base_url, model, first.version), model, host)
    plan.config = config
    started = _time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  console=err, transient=False) as progress:
        task = progress.add_task(f"calibrating {model} ({config.describe()}) at P99 {p99_ms:g} ms", total=budget_s)
        progress.console.print(f"loadtests calibrate: {model} at {host}, Triton config {config.describe()}, P99 "
                               f"{p99_ms:g} ms, ±{tolerance_pct:g}% or {budget_s:g} s", highlight=False)
        with Ticker(progress, task, started):
            outcome = calibrate(plan, run_stress, say=lambda line: progress.console.print(line, highlight=False),
                                show=lambda text, elapsed: progress.update(task, description=text))
        progress.update(task, completed=min(_time.monotonic() - started, budget_s))
    _show(outcome.stress, outcome=False)  # the outcome is the line below
    print(outcome.line)
    print(f"wrote {plan.stress_path}" + (f" and {plan.calibration_path}" if outcome.calibration else ""))


@app.command("verify")
def verify_cmd(
    plan: Annotated[Path, typer.Argument(help="Plan JSON (planner recommend --output).")],
    host: Annotated[str, typer.Option(help="KServe v2 HTTP endpoint already serving the plan's Triton config: a "
                                           "staging server, or `serving local --standin PROFILE --plan PLAN`.")] =
        default_of(_S, "host"),
    metrics_url: Annotated[Optional[str], typer.Option(help="Triton /metrics to scrape per step (default "
                                                            "http://<host>:8002/metrics; '' for none).")] =
        default_of(_S, "metrics_url"),
    gpu: Annotated[Optional[str], typer.Option(help="The plan's GPU type the host stands for (needed when the plan "
                                                    "deploys on several).")] = None,
    standin: Annotated[bool, typer.Option("--standin", help="The host is `serving local --standin`: its instances "
                                                            "run on the CPU by design; the instance kind is not "
                                                            "compared with the plan's.")] = False,
    step_duration: Annotated[float, typer.Option(min=0.1, help="Seconds per rate.")] = VERIFY_STEP_S,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of discarded warm-up at the planned rate.")] =
        VERIFY_WARMUP_S,
    band_pct: Annotated[float, typer.Option(min=0, help="How far the measured P99 at the planned rate "
                                                                  "may be from the plan's prediction, percent.")] =
        100 * PREDICTION_BAND,
    arrival: Annotated[Arrival, typer.Option(help="Open-loop arrival process.")] = Arrival(default_of(_S, "arrival")),
    seed: Annotated[int, typer.Option(help="Seed of the arrival times.")] = default_of(_S, "seed"),
    timeout_s: Annotated[float, typer.Option(help="Request timeout, seconds.")] = default_of(_S, "timeout_s"),
    out: Annotated[Path, typer.Option(help="Folder for the stress results (one per model).")] = Path("verify"),
) -> None:
    """Serve-check, then drive each Deployment of PLAN open loop at its planned rate, max_rate and 1.1 x max_rate;
    print whether each promise holds (exit 1 when one fails) and write the runs as stress results for planner fit."""
    from concurrent.futures import ThreadPoolExecutor

    from gpufleet.contracts.io import check_output_dir
    from gpufleet.contracts.plan import read_plan
    from loadtests import verify

    if not math.isfinite(band_pct):
        raise LoadTestInputError(f"--band-pct {band_pct}: give a finite percent")
    band = band_pct / 100
    p = read_plan(plan)
    units = verify.units(p, gpu)
    check_output_dir(out, "verification runs", LoadTestInputError)
    runs = []  # (unit, deployment, target, settings): every one built and its host checked before any load
    for unit in units:
        for d in unit.members:
            settings = build(model=d.model, host=host, metrics_url=metrics_url, arrival=arrival.value, seed=seed,
                             timeout_s=timeout_s, out=out, name=verify.run_name(d),
                             shape={"kind": "steps", "rates": verify.rates(d), "step_duration": step_duration,
                                    "warmup": warmup})
            verify.check_served(host, d, standin)
            runs.append((unit, d, verify.target_ms(p, d), settings))
    require_extra("loadtests", "loadtests")
    from loadtests.run import run_stress

    verdicts, written = [], []
    for unit in units:
        mine = [r for r in runs if r[0] is unit]
        err.print(f"verify: {unit.name} at {host}, " + "; ".join(
            f"{d.model} at {', '.join(f'{r:.1f}' for r in verify.rates(d))} req/s" for _, d, _, _ in mine) +
            f", {step_duration:g} s each after a {warmup:g} s warm-up", highlight=False, soft_wrap=True)
        # A shared Deployment's models share one server: they are driven at once, as they will be served.
        with ThreadPoolExecutor(len(mine)) as pool:
            results = list(pool.map(lambda r: run_stress(r[3]), mine))
        for (_, d, target, settings), result in zip(mine, results):
            written.append(settings.result_path)
            verdicts += verify.judge(unit.name, d, target, result, band)
    _verdicts(verdicts)
    for path in written:
        print(f"wrote {path}")
    print(f"planner fit {' '.join(map(str, written))} --profile PROFILE --p99-ms {p.request.p99_ms:g} --output "
          "CALIBRATION refines the calibration with these runs (with the stress results it was fitted on)")
    failed = [v for v in verdicts if not v.holds]
    if failed:
        print(f"{len(failed)} of {plural(len(verdicts), 'promise')} {'does' if len(failed) == 1 else 'do'} not hold: " + "; ".join(
            f"{v.deployment} ({v.model}) {v.promise}" for v in failed))
        raise typer.Exit(1)
    print(f"every promise holds ({len(verdicts)})")


def _verdicts(verdicts) -> None:
    console = stdout_console()
    columns = [Column("deployment"), Column("model"), Column("promise"), Column("req/s", justify="right"),
               Column("P99 ms", justify="right"), Column("predicted", justify="right"),
               Column("target", justify="right"), Column("not served", justify="right"), Column("verdict"),
               Column("why", prose=True)]
    rows = [[v.deployment, v.model, v.promise, f"{v.rate:.1f}", _fmt(v.step.latency_ms.p99, ".1f"),
             _fmt(v.predicted_ms, ".1f"), f"{v.target_ms:g}",
             f"{v.step.rejected + v.step.errors + v.step.dropped}/{v.step.sent + v.step.dropped}",
             "holds" if v.holds else "DOES NOT HOLD", v.why] for v in verdicts]
    print_table(console, "Promises", columns, rows)


@app.command("show")
def show_cmd(path: Annotated[Path, typer.Argument(help="A stress-result JSON.")]) -> None:
    """Print a stress result as a table."""
    from gpufleet.contracts.stress_result import read_stress_result

    _show(read_stress_result(path))


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


# The table's columns after the step's name: what was offered and what came back, the latencies, Triton's own
# figures. A terminal too narrow for all of them gets as many tables as it needs, each led by the step's name
# (gpufleet.tables), so no name or figure is ever cut.
_COLUMNS = (
    ("offered/s", lambda s: _fmt(s.offered_rate)), ("achieved/s", lambda s: _fmt(s.achieved_rate)),
    ("ok", lambda s: str(s.ok)), ("errors", lambda s: str(s.errors)), ("late", lambda s: str(s.late_sends)),
    ("dropped", lambda s: str(s.dropped)),
    ("P50 ms", lambda s: _fmt(s.latency_ms.p50, ".2f")), ("P90", lambda s: _fmt(s.latency_ms.p90, ".2f")),
    ("P99", lambda s: _fmt(s.latency_ms.p99, ".2f")), ("P99.9", lambda s: _fmt(s.latency_ms.p999, ".2f")),
    ("batch", lambda s: _fmt(s.server.mean_batch_size if s.server else None, ".2f")),
    ("queue µs", lambda s: _fmt(s.server.queue_us_per_request if s.server else None, ".0f")),
    ("infer µs", lambda s: _fmt(s.server.compute_infer_us_per_request if s.server else None, ".0f")),
    ("host CPU %", lambda s: _utilization(s, "cpu") + (" SATURATED" if s.server and s.server.host_cpu_saturated
                                                       else "")),
    ("GPU %", lambda s: _utilization(s, "gpu")),
)


def _utilization(step, which: str) -> str:
    """Mean and max of Triton's utilization gauge over the step, percent: "62 (71)"; "-" where not sampled."""
    mean = getattr(step.server, f"{which}_utilization_mean", None) if step.server else None
    if mean is None:
        return "-"
    return f"{100 * mean:.0f} ({100 * getattr(step.server, f'{which}_utilization_max'):.0f})"


def _heading(result) -> str:
    t = result.target
    if result.mode == "closed-loop":
        how = f"closed loop, {plural(result.users, 'user')}, {sum(s.duration_s for s in result.steps):g} s"
    else:
        how = f"open loop ({result.arrival} arrivals), {result.schedule_kind}"
    return f"{t.model} at {t.host}: {how}"


# A ramp's stop reasons: the bound each names, and what its detail measures.
_BOUNDS = {"p99-bound": ("the P99 bound", "P99"), "error-share": ("the error-share bound", "error share")}


def _outcome(result) -> str | None:
    """How the run ended, in words; for a ramp, where the knee lies."""
    reason, at = result.stopped.get("reason"), result.stopped.get("at_step")
    detail = result.stopped.get("detail")
    reported = result.reported_steps()
    if result.schedule_kind == shapes.Ramp.model_fields["kind"].default and reported:
        if reason == "completed":
            return f"Every step met the bounds: the knee is above {reported[-1].offered_rate:g} req/s."
        if reason in _BOUNDS and at is not None:
            within = [s for s in reported if s.index < at]
            last = next(s for s in result.steps if s.index == at)
            if not within:
                where = (f"no step met {_BOUNDS[reason][0]}: the knee is below {last.offered_rate:g} req/s, the "
                         f"first step's rate")
            else:
                where = (f"the knee is between {within[-1].offered_rate:g} and {last.offered_rate:g} req/s (the "
                         f"last step within the bounds, and the first past them)")
            why = str(detail).split(": ", 1)[-1]
            return f"Stopped after {last.name}, {where}. Why: {_BOUNDS[reason][1]} {why}."
    if reason == "completed":
        return None
    return f"Stopped: {reason}" + (f" ({detail})" if detail else "")


def _show(result, outcome: bool = True) -> None:
    console = stdout_console()
    console.print(_heading(result), highlight=False)
    columns = [Column("step")] + [Column(header, justify="right") for header, _ in _COLUMNS]
    rows = [[s.name + (" (discarded)" if s.warmup else "")] + [get(s) for _, get in _COLUMNS] for s in result.steps]
    print_table(console, "Steps", columns, rows)
    saturated = [s.name for s in result.reported_steps() if s.server and s.server.host_cpu_saturated]
    if saturated:
        console.print(f"Host CPU saturated (Triton's nv_cpu_utilization, all cores, {HOST_CPU_SATURATED:.0%} or more "
                      f"on average) in {', '.join(saturated)}: "
                      "the whole host's CPU, the load generator's too if it shares it.", highlight=False)
    said = _outcome(result) if outcome else None
    if said:
        console.print(said, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one stderr line and exit 2 for bad input, 1 for a failure at run time."""
    return run_app(app, argv, "loadtests")


if __name__ == "__main__":
    sys.exit(main())

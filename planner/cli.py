"""``planner``: the command line over :func:`planner.recommend.recommend`.

Every input error, from Click's parsing or from the library, ends as one line on stderr and exit status 2.
"""
from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer
from rich.console import Console

from gpufleet.cli import run_app, stdout_console
from planner.errors import PlannerInputError
from gpufleet.contracts.plan import write_plan
from gpufleet.contracts.catalog import CapacityType
from gpufleet.contracts.model import default_of
from gpufleet.contracts.plan import Environment, Routing
from planner.day import DEFAULT_PERIOD_S, read_day_curve, recommend_day
from planner.pipeline import DEFAULT_OVERHEAD_MS, PRODUCTION_MIN_REPLICAS_PER_GPU, RecommendRequest
from planner.recommend import recommend
from gpufleet.contracts.calibration import run_noise_error, write_calibration
from planner.uncertainty import DEFAULT_CONFIDENCE, DEFAULT_RUN_NOISE
from planner.render import render_calibration, render_plan
from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.contracts.io import check_output_dir, check_output_file
from gpufleet.contracts.profile import read_profile
from gpufleet.net import check_url
from gpufleet.deployed import DEFAULT_NAMESPACE


app = typer.Typer(help="Capacity planner for GPU inference behind Triton.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


_R = RecommendRequest  # the request model: each option's default and allowed values are its field's


@app.command("recommend")
def recommend_cmd(
    qps: Annotated[Optional[float], typer.Option(help="Requests per second to serve (or --qps-curve).")] = None,
    qps_curve: Annotated[Optional[Path], typer.Option(help="Plan over a day: CSV of req/s with a 'time' column (seconds, HH:MM or ISO) at a regular step, or a 'qps' column alone with --curve-step-min.")] = None,
    curve_step_min: Annotated[Optional[float], typer.Option(help="With --qps-curve: minutes each row stands for (for a CSV without a time column).")] = None,
    period_min: Annotated[float, typer.Option(help="With --qps-curve: the planning period, minutes; the fleet changes at most this often.")] = DEFAULT_PERIOD_S / 60.0,
    mix: Annotated[Optional[Path], typer.Option(help="Several models, one fleet: CSV with columns model,qps,p99_ms, one row per model (instead of --qps, --model, --p99-ms); model,curve,p99_ms plans each model over its own curve (a demand CSV relative to the mix file); an optional calibration column names each model's `planner fit` file.")] = None,
    p99_ms: Annotated[float, typer.Option(help="End-to-end P99 latency target, ms.")] = default_of(_R, "p99_ms"),
    model: Annotated[str, typer.Option(help="Model name in the latency profiles (embedded: yolov8{n,s,m,l,x}-{640,1280x720}, yolov8m-seg-{640,1280x720}, resnet50).")] = default_of(_R, "model"),
    gpu: Annotated[Optional[list[str]], typer.Option(help="GPU types to consider (repeat); default all profiled.")] = default_of(_R, "gpus"),
    catalog: Annotated[Optional[Path], typer.Option(help="Instance catalog JSON; default the embedded us-east-1 one.")] = default_of(_R, "catalog"),
    profile: Annotated[Optional[list[Path]], typer.Option(help="Latency profile JSON (repeat); overrides the embedded one for its model and GPU.")] = default_of(_R, "profiles"),
    capacity_type: Annotated[list[str], typer.Option(help=f"Capacity types allowed (repeat): {', '.join(get_args(CapacityType))}.")] = default_of(_R, "capacity_types"),
    routing: Annotated[Routing, typer.Option(help="Load balancing as deployed: weighted per GPU type, or equal shares.")] = default_of(_R, "routing"),
    max_spot_share: Annotated[float, typer.Option(
        help="Largest share of each GPU type's replicas on spot (each type on spot keeps its own floor).")] = default_of(_R, "max_spot_share"),
    spot_survival: Annotated[bool, typer.Option(help="Require the fleet to hold after losing its largest spot pool.")] = default_of(_R, "spot_survival"),
    survival_p99_ms: Annotated[Optional[float], typer.Option(help="Degraded P99 bound while a spot pool is lost; default the target.")] = default_of(_R, "survival_p99_ms"),
    horizon_months: Annotated[float, typer.Option(help="How long the fleet will run; reserved terms must pay over it.")] = default_of(_R, "horizon_months"),
    overhead_ms: Annotated[Optional[float], typer.Option(help=f"Fixed network and pre/post-processing time per request, ms; default the calibration's, else {DEFAULT_OVERHEAD_MS:g}.")] = default_of(_R, "overhead_ms"),
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration from `planner fit`: overhead, server costs, their uncertainty, scale-up lag.")] = default_of(_R, "calibration"),
    confidence: Annotated[Optional[float], typer.Option(help="With --calibration: size with capacity's lower end at this confidence; default the calibration's.")] = default_of(_R, "confidence"),
    max_capacity_spread_pct: Annotated[float, typer.Option(help="With a calibration: refuse to plan when capacity's interval at the target, at --confidence, for the Triton config the plan would deploy, reaches further than this percent from the fitted estimate (max(estimate - low, high - estimate) / estimate), or has no width (fitted on one step); `loadtests calibrate` narrows it; inf accepts any.")] = default_of(_R, "max_capacity_spread_pct"),
    scale_up_lag_min: Annotated[Optional[float], typer.Option(help=f"Minutes for a new GPU replica to serve; default the calibration's, else {DEFAULT_SCALE_UP_LAG_S / 60:g}.")] = None,
    ramp_pct_per_min: Annotated[Optional[float], typer.Option(help=f"Fastest traffic growth the HPA must absorb, percent per minute; default the calibration's, else {100 * DEFAULT_RAMP_PER_MIN:g}. 0: targets only allow for the HPA's tolerance.")] = None,
    min_replicas: Annotated[int, typer.Option(help="Fewest Triton replicas in the fleet.")] = default_of(_R, "min_replicas"),
    environment: Annotated[Environment, typer.Option(help=f"production: at least {PRODUCTION_MIN_REPLICAS_PER_GPU} replicas of every GPU type that serves; development allows 1.")] = default_of(_R, "environment"),
    max_instances_per_pool: Annotated[Optional[int], typer.Option(help="Cap on instances from any one pool.")] = default_of(_R, "max_instances_per_pool"),
    exhaustive: Annotated[bool, typer.Option(help="Simulate every Triton config instead of pruning.")] = default_of(_R, "exhaustive"),
    mig: Annotated[bool, typer.Option(help="Also consider MIG slices of MIG-capable GPUs (A100) as replicas, with latency derived from the whole GPU's profile as an upper bound (not measured; see planner/mig.py).")] = default_of(_R, "mig"),
    format: Annotated[OutputFormat, typer.Option("--format", help="table for people, json for the plan file.")] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option(help="Also write the plan JSON here.")] = None,
    stack: Annotated[Optional[str], typer.Option(help="Also write the plan where this Pulumi stack reads it (gpufleet:planPath).")] = None,
    project_dir: Annotated[Optional[Path], typer.Option(help="Pulumi project folder for --stack; default the one at or above the current folder.")] = None,
) -> None:
    """The cheapest GPU fleet and Triton config that hold the P99 target at the requested rate."""
    if output is not None:
        check_output_file(output, "plan", PlannerInputError)
    mode = _demand(qps, qps_curve, mix)
    curve = mixed = mixed_day = None
    if mode == "mix":
        from planner.mixday import read_mix
        mixed = read_mix(mix)
        if any(r.curve is not None for r in mixed):  # a curve per model: the mix over the day
            mixed_day = mixed
            if not (math.isfinite(period_min) and period_min > 0):
                raise PlannerInputError(f"--period-min must be a positive number, got {period_min:g}")
    elif mode == "day":
        from planner.day import read_day_curve
        curve = read_day_curve(qps_curve, curve_step_min)
        if not (math.isfinite(period_min) and period_min > 0):
            raise PlannerInputError(f"--period-min must be a positive number, got {period_min:g}")
    # The one place the request is built: the rate the fleet must hold is the curve's peak or the mix's sum.
    req = RecommendRequest(
        qps=float(curve.qps.max()) if curve is not None else sum(r.qps for r in mixed) if mixed else qps,
        p99_ms=p99_ms, model=model, gpus=gpu or None, catalog=catalog, profiles=list(profile),
        capacity_types=list(capacity_type), routing=routing, max_spot_share=max_spot_share,
        spot_survival=spot_survival, survival_p99_ms=survival_p99_ms, horizon_months=horizon_months,
        overhead_ms=overhead_ms, calibration=calibration, confidence=confidence,
        max_capacity_spread_pct=max_capacity_spread_pct,
        scale_up_lag_s=None if scale_up_lag_min is None else scale_up_lag_min * 60.0,
        ramp_per_min=None if ramp_pct_per_min is None else ramp_pct_per_min / 100.0,
        min_replicas=min_replicas, max_instances_per_pool=max_instances_per_pool, exhaustive=exhaustive,
        environment=environment, mig=mig)
    target = None
    if stack is not None:
        from planner.stack import stack_target
        target = stack_target(stack, project_dir)  # an unusable stack is refused before the planning work
        check_output_file(target.plan_path, "plan", PlannerInputError)
    if curve is not None:
        plan = recommend_day(req, curve, period_min * 60.0)
    elif mixed_day is not None:
        from planner.mixday import recommend_mix_day
        plan = recommend_mix_day(req, mixed_day, period_min * 60.0)
    elif mixed is not None:
        from planner.mix import recommend_mix
        plan = recommend_mix(req, mixed)
    else:
        plan = recommend(req)
    if stack is not None:
        from planner.stack import write_stack_plan
        written = write_stack_plan(plan, stack, project_dir)
        sys.stderr.write(f"plan written for stack {stack}: {written}\n")
    if output is not None:
        try:
            write_plan(plan, output)
        except OSError as exc:
            raise PlannerInputError(f"{output}: cannot write plan: {exc.strerror}") from None
    if format is OutputFormat.json:
        sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
    else:
        render_plan(plan, stdout_console())


def _demand(qps: float | None, qps_curve: Path | None, mix: Path | None) -> str:
    """Which demand the options give: "point" (--qps), "day" (--qps-curve) or "mix" (--mix). The one place the
    modes are told apart on the command line; what a mode cannot plan yet is refused by its planner."""
    given = {"point": qps is not None, "day": qps_curve is not None, "mix": mix is not None}
    if sum(given.values()) != 1:
        raise PlannerInputError("give exactly one of --qps, --qps-curve and --mix")
    return next(k for k, v in given.items() if v)


def _non_negative(option: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise PlannerInputError(f"{option} must be a number >= 0, got {value:g}")
    return value


def scaling_spec(scale_up_lag_min: float, ramp_pct_per_min: float) -> AutoscalingSpec:
    """The autoscaling spec from the options in their own units, each checked under its own name."""
    return AutoscalingSpec(scale_up_lag_s=_non_negative("--scale-up-lag-min", scale_up_lag_min) * 60.0,
                           ramp_per_min=_non_negative("--ramp-pct-per-min", ramp_pct_per_min) / 100.0)


def _triton_config(text: str | None) -> BatchingConfig | None:
    if text is None:
        return None
    try:
        batch, delay, instances = (int(v) for v in text.split(":"))
        return BatchingConfig(max_batch_size=batch, max_queue_delay_microseconds=delay, preferred_batch_sizes=(), instance_count=instances)
    except ValueError:
        raise PlannerInputError(f"--triton-config {text!r}: expected MAX_BATCH:QUEUE_DELAY_US:INSTANCES, "
                                "e.g. 8:2000:1") from None


@app.command("fit")
def fit_cmd(
    stress: Annotated[Optional[list[Path]], typer.Argument(help="Stress-result JSON files (loadtests run), one Triton replica each; or --prometheus.", show_default=False)] = None,
    profile: Annotated[Path, typer.Option(help="Latency profile of the model on the GPU the runs used.")] = ...,
    output: Annotated[Path, typer.Option(help="Where to write the calibration JSON (for recommend --calibration).")] = ...,
    p99_ms: Annotated[float, typer.Option(help="P99 target the HPA thresholds are fitted for, ms.")] = default_of(_R, "p99_ms"),
    scale_up_lag_min: Annotated[float, typer.Option(help="Minutes from the HPA's decision to a new GPU replica serving (4-8 typical).")] = DEFAULT_SCALE_UP_LAG_S / 60.0,
    ramp_pct_per_min: Annotated[float, typer.Option(help="Fastest traffic growth to absorb, percent per minute.")] = DEFAULT_RAMP_PER_MIN * 100.0,
    triton_config: Annotated[Optional[str], typer.Option(help="MAX_BATCH:QUEUE_DELAY_US:INSTANCES for runs that did not record it.")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence of the parameter and capacity intervals; thresholds take capacity's lower end at it.")] = DEFAULT_CONFIDENCE,
    run_noise_pct: Annotated[Optional[float], typer.Option(help=f"How far one run's P99 level moves from the next run's at the same rate, percent (one standard deviation of the log ratio): an error all of a run's steps share, which resampling them cannot see. Capacity's interval carries it, divided by the square root of the runs each config was measured in (a run told by its start time); where P99 is flat near the target it dominates. Measure it on your host: run the same rates twice (loadtests run --rates), take the root mean square of the log P99 ratios over sqrt 2; 0 trusts one run. Default {DEFAULT_RUN_NOISE * 100:g} (this project's 2-core test VM) for stress results, 0 with --prometheus (its windows span the range read: a drift of the level over it is in their spread).", show_default=False)] = None,
    prometheus: Annotated[Optional[str], typer.Option(help="Fit on production instead: this Prometheus server's windows of the Deployment's traffic (each window one step). With --plan (its Deployment of the profile's model and GPU) or --selector and --triton-config.")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="With --prometheus: the deployed plan (names the Deployment and its Triton config).")] = None,
    window: Annotated[str, typer.Option(help="With --prometheus: one step per window of this length (Prometheus duration).")] = "5m",
    range_: Annotated[str, typer.Option("--range", help="With --prometheus: how far back to read.")] = "1h",
    end: Annotated[Optional[str], typer.Option(help="With --prometheus: the range's end (ISO 8601 or Unix seconds); default now.")] = None,
    namespace: Annotated[str, typer.Option(help="With --prometheus and --plan: the stack's Kubernetes namespace.")] = DEFAULT_NAMESPACE,
    selector: Annotated[Optional[str], typer.Option(help="With --prometheus: label matchers for the replica's series instead of namespace and the Deployment's Service, e.g. 'job=\"triton\"' (a server scraped directly).")] = None,
    windows_output: Annotated[Optional[Path], typer.Option(help="With --prometheus: where to keep the windows as a stress result; default beside --output as <name>.windows.json.")] = None,
) -> None:
    """Calibrate the latency model on stress runs (or production windows from Prometheus) and fit lag-aware HPA
    thresholds."""
    lag = scaling_spec(scale_up_lag_min, ramp_pct_per_min)
    if run_noise_pct is not None and run_noise_error(run_noise_pct):
        raise PlannerInputError(run_noise_error(run_noise_pct))
    run_noise = (DEFAULT_RUN_NOISE if prometheus is None else 0.0) if run_noise_pct is None else run_noise_pct / 100.0
    check_output_file(output, "calibration", PlannerInputError)
    stress = list(stress or [])
    if (prometheus is None) == (not stress):
        raise PlannerInputError("give stress-result files or --prometheus, not both and not neither")
    if prometheus is None:
        given = [o for o, v in (("--plan", plan), ("--end", end), ("--selector", selector),
                                ("--windows-output", windows_output)) if v is not None]
        if given:
            raise PlannerInputError(f"{given[0]} reads production windows: it goes with --prometheus")
    for path in stress:
        if not path.is_file():
            raise PlannerInputError(f"{path}: stress result not found")
    # Imported here: the fit's modules (least squares, stress results) are no part of a recommend's start-up.
    from planner.fit import fit

    prof = read_profile(profile)
    console = _console()
    if prometheus is not None:
        stress = [_production_windows(prometheus, plan, prof, window, range_, end, namespace, selector,
                                      _triton_config(triton_config), windows_output
                                      or output.with_name(f"{output.stem}.windows.json"), console)]
    with console.status(f"fitting {len(stress)} stress result(s) by simulation"):
        cal = fit(prof, stress, p99_ms, lag, _triton_config(triton_config), confidence=confidence,
                  run_noise=run_noise)
    try:
        write_calibration(cal, output)
    except OSError as exc:
        raise PlannerInputError(f"{output}: cannot write calibration: {exc.strerror}") from None
    render_calibration(cal, console)
    console.print(f"Calibration written to {output}; use it with `planner recommend --calibration {output}`.")


@app.command("report")
def report_cmd(
    plan: Annotated[Path, typer.Argument(help="Plan JSON (recommend --output).")],
    out: Annotated[Path, typer.Option(help="Folder for report.html and its PNGs.")],
    catalog: Annotated[Optional[Path], typer.Option(help="The catalog the plan was made with; default the embedded one.")] = None,
    profile: Annotated[Optional[list[Path]], typer.Option(help="The latency profiles the plan was made with (repeat).")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="The calibration the plan used: its stress steps are plotted.")] = None,
) -> None:
    """HTML report with plots: cost against QPS, P99 against load, the spot-share what-if, and the plan."""
    from gpufleet.contracts.calibration import read_calibration
    from gpufleet.contracts.plan import read_plan
    from planner.report import ReportInputs, write_report

    check_output_dir(out, "report", PlannerInputError)
    inputs = ReportInputs(read_plan(plan), catalog, list(profile or []),
                          read_calibration(calibration) if calibration else None, str(calibration))
    with _console().status("simulating and optimizing the report's curves"):
        path = write_report(inputs, out)
    print(f"wrote {path}")


def _span(window: str, range_: str, end: str | None):
    from gpufleet.contracts.demand import parse_time
    from gpufleet.prometheus import duration_s
    from planner.production import Span

    at = None
    if end is not None:
        at = parse_time(end)
        if at is None or ":" in end and "T" not in end:
            raise PlannerInputError(f"--end {end!r}: expected an ISO 8601 date-time or Unix seconds")
    return Span.of(duration_s(window, "--window"), duration_s(range_, "--range"), at)


def _prometheus(url: str):
    from gpufleet.prometheus import Prometheus

    return Prometheus(check_url(url, "--prometheus"))


def _matchers(selector: str | None) -> str | None:
    from gpufleet.prometheus import matchers

    return None if selector is None else matchers(selector, "--selector")


def _production_windows(prometheus: str, plan_path: Path | None, prof, window: str, range_: str, end: str | None,
                        namespace: str, selector: str | None, cfg: BatchingConfig | None, out: Path, console) -> Path:
    """`fit --prometheus`: the Deployment's windows written as a stress result; its path."""
    from gpufleet.contracts.plan import read_plan
    from gpufleet.contracts.stress_result import write_stress_result
    from planner.production import Telemetry, deployment_matchers, selector as promql_selector, windows_result

    check_output_file(out, "stress result of the windows", PlannerInputError)
    span, prom, base = _span(window, range_, end), _prometheus(prometheus), _matchers(selector)
    if plan_path is not None:
        plan = read_plan(plan_path)
        unit = next((u for u in plan.units() for d in u if (d.model, d.gpu) == (prof.model, prof.gpu)), None)
        if unit is None:
            raise PlannerInputError(f"{plan_path}: no Deployment serves {prof.model} on {prof.gpu} (the profile's)")
        d = next(d for d in unit if d.model == prof.model)
        cfg = cfg or d.triton.latency_shape
        base = base if base is not None else deployment_matchers(plan, unit, namespace)
    elif base is None or cfg is None:
        raise PlannerInputError("--prometheus needs --plan, or --selector and --triton-config")
    with console.status(f"reading {span.count} windows from {prom.url}"):
        windows = Telemetry(prom, span).windows(base, prof.model)
    result = windows_result(windows, prof.model, cfg, prom.url, promql_selector(base, prof.model))
    try:
        write_stress_result(result, out)
    except OSError as exc:
        raise PlannerInputError(f"{out}: cannot write the windows: {exc.strerror}") from None
    console.print(f"{len(result.steps)} production windows written to {out}", highlight=False)
    return out


@app.command("check", epilog="Exit status: 0 every Deployment matches its plan and nothing is to be done; 3 a "
             "finding (drift, over capacity, over-bought, or a Deployment none of whose windows could be judged: "
             "the table says what to do); 1 the check could not run (Prometheus unreachable or failing); 2 bad input.")
def check_cmd(
    prometheus: Annotated[str, typer.Option(help="Prometheus server's URL (a cluster's: kubectl -n monitoring port-forward svc/monitoring-kube-prometheus-prometheus 9090, then http://127.0.0.1:9090).")],
    plan: Annotated[Path, typer.Option(help="The deployed plan (recommend --output).")],
    window: Annotated[str, typer.Option(help="Judge each window of this length (Prometheus duration: 30s, 5m, 1h).")] = "5m",
    range_: Annotated[str, typer.Option("--range", help="How far back to read; the latest window decides a Deployment's verdict.")] = "1h",
    end: Annotated[Optional[str], typer.Option(help="The range's end (ISO 8601 or Unix seconds); default now.")] = None,
    namespace: Annotated[str, typer.Option(help="The stack's Kubernetes namespace.")] = DEFAULT_NAMESPACE,
    selector: Annotated[Optional[str], typer.Option(help="Label matchers for Triton's series instead of namespace and the Deployment's Service, e.g. 'job=\"triton\"' (a server scraped directly); the model label is added.")] = None,
    profile: Annotated[Optional[list[Path]], typer.Option(help="The latency profiles the plan was made with (repeat); default the embedded ones.")] = None,
    calibration: Annotated[Optional[list[Path]], typer.Option(help="The calibrations the plan was made with (repeat; each applies to its model and GPU); default the plan's own, if it names one.")] = None,
) -> None:
    """Compare live Triton telemetry with the plan's prediction at the rate actually seen, per Deployment: matches,
    slower or faster; over capacity or over-bought; and what to do."""
    from gpufleet.contracts.calibration import read_calibration
    from gpufleet.contracts.plan import read_plan
    from planner.production import EXIT_FINDING, Telemetry, check_plan, render_check
    from planner.profiles import load_profiles

    span, prom, base = _span(window, range_, end), _prometheus(prometheus), _matchers(selector)
    the_plan = read_plan(plan)
    paths = list(calibration or [])
    if not paths:
        named = [the_plan.request.calibration] + [m.calibration for m in (the_plan.mix.models if the_plan.mix else [])]
        for name in dict.fromkeys(n for n in named if n):
            found = next((p for p in (Path(name), plan.parent / name) if p.is_file()), None)
            if found is None:
                raise PlannerInputError(f"{plan}: planned with calibration {name}, which is not here; pass it with "
                                        "--calibration")
            paths.append(found)
    profiles = load_profiles(list(profile or []))
    cals = [read_calibration(p) for p in paths]
    if base is not None and len(the_plan.units()) > 1:
        raise PlannerInputError("--selector names one Deployment's series; this plan has "
                                f"{len(the_plan.units())}: check them against the cluster's labels (--namespace)")
    console = _console()
    with console.status(f"reading {span.count} windows per Deployment from {prom.url} and simulating"):
        findings = check_plan(the_plan, Telemetry(prom, span), profiles, cals, namespace, base)
    render_check(findings, span, console)
    if any(f.acts for f in findings):
        raise typer.Exit(EXIT_FINDING)


@app.command("demand")
def demand_cmd(
    prometheus: Annotated[str, typer.Option(help="Prometheus server's URL.")],
    model: Annotated[str, typer.Option(help="The model whose traffic to read (Triton's model label).")],
    output: Annotated[Path, typer.Option(help="Demand curve CSV to write (for recommend --qps-curve).")],
    window: Annotated[str, typer.Option(help="One row per window of this length.")] = "5m",
    range_: Annotated[str, typer.Option("--range", help="How far back to read.")] = "24h",
    end: Annotated[Optional[str], typer.Option(help="The range's end (ISO 8601 or Unix seconds); default now.")] = None,
    namespace: Annotated[str, typer.Option(help="The stack's Kubernetes namespace (every Deployment of the model in it).")] = DEFAULT_NAMESPACE,
    selector: Annotated[Optional[str], typer.Option(help="Label matchers instead of the namespace, e.g. 'job=\"triton\"'.")] = None,
) -> None:
    """Write the observed traffic of a model (served plus failed, all replicas) as the demand curve `planner
    recommend --qps-curve` plans from."""
    from planner.production import Telemetry, write_demand

    check_output_file(output, "demand curve", PlannerInputError)
    span, prom, base = _span(window, range_, end), _prometheus(prometheus), _matchers(selector)
    base = base if base is not None else f'namespace="{namespace}"'
    rows = Telemetry(prom, span).demand(base, model)
    if not any(q > 0 for _, q in rows):
        raise PlannerInputError(f"no traffic for model {model!r} matching {{{base}}} in the range: check --model, "
                                "--namespace or --selector")
    try:
        write_demand(rows, output)
    except OSError as exc:
        raise PlannerInputError(f"{output}: cannot write the demand curve: {exc.strerror}") from None
    peak = max(q for _, q in rows)
    _console().print(f"{len(rows)} rows of {span.window_s:g} s, peak {peak:,.1f} req/s; wrote {output}; plan with "
                     f"`planner recommend --qps-curve {output} --model {model}`", highlight=False)


catalog_app = typer.Typer(help="The instance catalog: GPU instance types and their prices.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("refresh")
def catalog_refresh_cmd(
    output: Annotated[Path, typer.Option(help="Catalog JSON to write (for recommend --catalog).")],
    region: Annotated[str, typer.Option(help="AWS region to price.")] = "us-east-1",
    family: Annotated[Optional[list[str]], typer.Option(help="Instance families (repeat); default g4dn g5 g6 g6e p4d p5.")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="EC2 endpoint (e.g. a moto_server for tests).")] = None,
    pricing_endpoint_url: Annotated[Optional[str], typer.Option(help="Price List endpoint.")] = None,
) -> None:
    """Read GPU instance facts, spot prices per AZ and list prices from the AWS APIs into a dated catalog."""
    from gpufleet.contracts.catalog import write_catalog
    from planner.refresh import DEFAULT_FAMILIES, clients, refresh_catalog

    check_output_file(output, "catalog", PlannerInputError)
    for option, url in (("--endpoint-url", endpoint_url), ("--pricing-endpoint-url", pricing_endpoint_url)):
        if url is not None:
            check_url(url, option)
    ec2, pricing = clients(region, endpoint_url, pricing_endpoint_url)
    console = _console()
    with console.status(f"reading EC2 and the Price List for {region}"):
        catalog, skipped = refresh_catalog(ec2, pricing, region, family or DEFAULT_FAMILIES)
    try:
        write_catalog(catalog, output)
    except OSError as exc:
        raise PlannerInputError(f"{output}: cannot write catalog: {exc.strerror}") from None
    for line in skipped:
        console.print(f"skipped {line}", highlight=False)
    console.print(f"{len(catalog.instances)} instance types priced on {catalog.as_of}; wrote {output}")


def _console() -> Console:
    return stdout_console()


@app.callback()
def _root() -> None:
    """Capacity planner for GPU inference behind Triton."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one stderr line and exit 2 for bad input, 1 for a failure at run time."""
    return run_app(app, argv, "planner")


if __name__ == "__main__":
    sys.exit(main())

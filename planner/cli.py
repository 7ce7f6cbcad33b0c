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
from gpufleet.contracts.calibration import write_calibration
from planner.uncertainty import DEFAULT_CONFIDENCE
from planner.render import render_calibration, render_plan
from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.contracts.io import check_output_dir, check_output_file
from gpufleet.contracts.profile import read_profile
from gpufleet.net import check_url


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
    max_capacity_spread_pct: Annotated[float, typer.Option(help="With a calibration: refuse to plan when capacity's interval at the target, at --confidence, for the Triton config the plan would deploy, reaches further than this percent from the fitted estimate (max(estimate - low, high - estimate) / estimate); `loadtests calibrate` narrows it.")] = default_of(_R, "max_capacity_spread_pct"),
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
    stress: Annotated[list[Path], typer.Argument(help="Stress-result JSON files (loadtests run), one Triton replica each.")],
    profile: Annotated[Path, typer.Option(help="Latency profile of the model on the GPU the runs used.")],
    output: Annotated[Path, typer.Option(help="Where to write the calibration JSON (for recommend --calibration).")],
    p99_ms: Annotated[float, typer.Option(help="P99 target the HPA thresholds are fitted for, ms.")] = default_of(_R, "p99_ms"),
    scale_up_lag_min: Annotated[float, typer.Option(help="Minutes from the HPA's decision to a new GPU replica serving (4-8 typical).")] = DEFAULT_SCALE_UP_LAG_S / 60.0,
    ramp_pct_per_min: Annotated[float, typer.Option(help="Fastest traffic growth to absorb, percent per minute.")] = DEFAULT_RAMP_PER_MIN * 100.0,
    triton_config: Annotated[Optional[str], typer.Option(help="MAX_BATCH:QUEUE_DELAY_US:INSTANCES for runs that did not record it.")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence of the parameter and capacity intervals; thresholds take capacity's lower end at it.")] = DEFAULT_CONFIDENCE,
) -> None:
    """Calibrate the latency model on stress runs and fit lag-aware HPA thresholds."""
    lag = scaling_spec(scale_up_lag_min, ramp_pct_per_min)
    check_output_file(output, "calibration", PlannerInputError)
    for path in stress:
        if not path.is_file():
            raise PlannerInputError(f"{path}: stress result not found")
    # Imported here: the fit's modules (least squares, stress results) are no part of a recommend's start-up.
    from planner.fit import fit

    prof = read_profile(profile)
    console = _console()
    with console.status(f"fitting {len(stress)} stress result(s) by simulation"):
        cal = fit(prof, stress, p99_ms, lag, _triton_config(triton_config), confidence=confidence)
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

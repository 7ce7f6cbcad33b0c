"""The plan for people: rich tables and the one-paragraph why."""
from __future__ import annotations

import math

from rich.console import Console

from gpufleet.cli import plural
from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.plan import Plan
from gpufleet.tables import Column, print_table


def _columns(headers, left=()) -> list[Column]:
    """Figures right-aligned, names and words (the ``left`` headers) left."""
    return [Column(h, "left" if h in left else "right") for h in headers]


def render_plan(plan: Plan, console: Console) -> None:
    r = plan.request
    if plan.mix is not None:
        each = "; ".join(f"[bold]{m.model}[/] {m.qps:,.0f} req/s at P99 <= {m.p99_ms:g} ms" for m in plan.mix.models)
        console.print(f"{each} ({r.region}, catalog {r.catalog_as_of}, routing {r.routing})")
    else:
        console.print(f"[bold]{r.model}[/] at [bold]{r.qps:,.0f} req/s[/], P99 <= [bold]{r.p99_ms:g} ms[/] "
                      f"({r.region}, catalog {r.catalog_as_of}, routing {r.routing})")

    print_table(console, "Buy", _columns(("instance type", "GPU", "capacity", "count", "replicas", "$/h each", "$/h"),
                                         left=("instance type", "GPU", "capacity")),
                [[p.instance_type, p.gpu, p.capacity_type, str(p.count), str(p.replicas),
                  f"{p.usd_per_hour_per_instance:.4f}", f"{p.usd_per_hour:.2f}"] for p in plan.pools], keys=3)

    mixed = plan.mix is not None
    # A narrow terminal gets the columns in more than one table; each repeats the ones that say which row it is.
    keys = ("model", "GPU", "Deployment") if mixed else ("GPU",)
    rows = []
    for d in plan.deployments:
        t = d.triton
        rows.append([*([d.model, d.gpu, d.shared or "own"] if mixed else [d.gpu]), str(d.replicas),
                     f"{d.routing_weight:.3f}", f"{d.rate_per_replica:,.0f}", str(t.max_batch_size),
                     f"{t.max_queue_delay_microseconds} us", str(t.instance_count),
                     f"{t.max_queue_size or '-'} / {t.queue_timeout_microseconds / 1000:g} ms",
                     f"{d.predicted.p50_ms:.2f}", f"{d.predicted.p99_ms:.2f}", f"{d.predicted.utilization:.0%}",
                     f"{d.autoscaling.target_rate_per_replica:,.0f}"])
    print_table(console, "Triton deployments",
                _columns(keys + ("replicas", "weight", "req/s each", "max batch", "queue delay", "instances",
                                 "queue bound", "P50 ms", "P99 ms", "util", "HPA target req/s"), left=keys),
                rows, keys=2 if mixed else 1)

    c, s = plan.cost, plan.solver
    if mixed:
        m = plan.mix
        console.print(f"Mix: ${c.usd_per_hour:,.2f}/h against ${m.separate_usd_per_hour:,.2f}/h for one Deployment "
                      f"per model: [bold]{m.saving:.1%} saved[/]; every model's P99 simulated at its planned rate")
        for name, how in sorted(m.gpu_sharing.items()):
            console.print(f"  {name}: GPU shared between models, {how}")
    else:
        console.print(f"Fleet: P50 {plan.predicted.p50_ms:.2f} ms, P99 [bold]{plan.predicted.p99_ms:.2f} ms[/] "
                      f"(simulated), utilization {plan.predicted.utilization:.0%}")
    console.print(f"Cost: [bold]${c.usd_per_hour:,.2f}/h[/], ${c.usd_per_month:,.0f}/month, "
                  f"${c.usd_per_million_inferences:.4f} per million inferences")
    lp = "n/a" if s.lp_gap is None else f"{s.lp_gap:.2%}"
    console.print(f"Solver: {s.solver}, {s.status}, MIP gap {s.mip_gap:.2%}, LP-relaxation gap {lp}")
    a = plan.autoscaling
    basis = (f"lag-aware targets: scale-up lag {a.scale_up_lag_s / 60:g} min, ramp {a.ramp_per_min:.0%}/min"
             if a.lag_aware else "targets at the planned rates (give --scale-up-lag-min/--ramp-pct-per-min for "
             "lag-aware ones)")
    console.print(f"Autoscaling: HPA on {a.metric} (rate of {a.source_series} over {a.promql_window()}, scraped "
                  f"every {a.scrape_interval()}); {basis}")
    if plan.survival is not None:
        sv = plan.survival
        verdict = "[green]holds[/]" if sv.holds else "[red]misses[/]"
        after = "-" if sv.p99_ms_after_replacement is None else f"{sv.p99_ms_after_replacement:.2f} ms"
        window = "no replicas left" if sv.p99_ms_cold_start is None or sv.p99_ms_cold_start == float("inf") \
            else f"{sv.p99_ms_cold_start:.2f} ms"
        console.print(f"Spot loss: without {sv.lost_pool} ({plural(sv.replicas_lost, 'replica')}), P99 is "
                      f"{window} for the {(sv.cold_start_s or 0) / 60:g} min until replacements "
                      f"serve, {after} after; bound {sv.bound_ms:g} ms: {verdict} "
                      f"(survival constraint {'met' if sv.constraint_holds else 'not met'}"
                      f"{'' if plan.request.spot_survival else ', not required: --spot-survival'})")
    if plan.day is not None:
        render_day(plan, console)
    console.print(f"Why: {plan.why}")


def _p99(p99_ms: float | None) -> str:
    """A simulated or replayed P99; null in a plan means a replica was past saturation (the queue grew without bound)."""
    return "overloaded" if p99_ms is None else f"{p99_ms:.1f}"


def _verdict(holds: bool | None) -> str:
    return "-" if holds is None else "[green]holds[/]" if holds else "[red]misses[/]"


def render_day(plan: Plan, console: Console) -> None:
    d = plan.day
    # A mix over a day records each model's P99 per period against its own target (MixPlan.models[].period_p99_ms);
    # the period's own p99_ms is only the model closest to its target, so a column headed by one target misreads it.
    models = plan.mix.models if plan.mix is not None and all(
        m.period_p99_ms is not None for m in plan.mix.models) else None
    hours = []
    for p in d.periods:
        hours.append([_clock(p.start_s), f"{p.qps:,.0f}", f"{p.mean_qps:,.0f}", str(p.replicas.get("reserved", 0)),
                      str(p.replicas.get("on-demand", 0)), str(p.replicas.get("spot", 0)), f"{p.usd:,.2f}",
                      *([] if models else [_p99(p.p99_ms), _verdict(p.holds_target)])])
    target = plan.request.p99_ms if d.p99_target_ms is None else d.p99_target_ms
    print_table(console, f"Over the day ({d.curve_source}, {d.span_hours:g} h)",
                _columns(("from", "peak req/s", "mean req/s", "reserved", "on-demand", "spot", "$")
                         + (() if models else ("replayed P99 ms", f"P99 <= {target:g} ms"))), hours)
    if models:
        _render_model_periods(plan, models, console)
    if d.saving_vs_peak_held_usd_per_day is not None:
        # A mix's models peak in different periods: its figure is each model's own point plan at its own peak, held
        # all day, summed (planner.mixday), not one plan at one peak.
        held = ("each model's own peak held all day, summed (its point plan at its curve's peak)"
                if plan.mix is not None else "the point plan at the peak held all day")
        console.print(f"${d.saving_vs_peak_held_usd_per_day:,.2f}/day saved against {held} "
                      f"(${d.peak_held_usd_per_day:,.2f}/day): {d.saving_vs_peak_held:.1%}")
    if models:
        # Each model against its own target: the figure is the model closest to it, named.
        p99, worst = max(((p, m) for m in models for p in m.period_p99_ms),
                         key=lambda pm: math.inf if pm[0] is None else pm[0] / pm[1].p99_ms)
        own = f"{_p99(p99)} of {worst.p99_ms:g} ({worst.model})"
    else:
        own = _p99(d.worst_period_p99_ms)
    ways = [["this day plan", f"{d.usd_per_day:,.2f}", f"{d.usd_per_month:,.0f}", own, _verdict(d.holds_target)]]
    for c in d.comparisons:
        # A mix's alternatives are one fleet per model, each replayed in its own day plan (planner/mixday.py): the
        # figure is the model closest to its target, named in the description; null is past saturation, as in a day.
        figure = _p99(c.worst_period_p99_ms)
        ways.append([f"{c.name}: {c.description}" + (f" ({', '.join(c.pools)})" if c.pools else ""),
                     f"{c.usd_per_day:,.2f}", f"{c.usd_per_month:,.0f}", figure,
                     "[green]holds[/]" if c.holds_target else
                     "[red]misses[/]" if c.holds_peak_at_sizing_rate else
                     "[red]misses[/]: the peak exceeds its replicas' HPA target rate"])
    worst_head = "worst-period P99 ms of its target (model)" if models else "worst-hour P99 ms"
    print_table(console, "Against", [Column("way to buy", prose=True)]  # a description: it may wrap
                + _columns(("$/day", "$/month", worst_head, "target")), ways)
    r = d.ramp
    console.print(f"Fastest ramp: {100 * r.fastest_ramp_per_min:.2f}%/min from {r.at_s / 3600:.2f} h; P99 through "
                  f"the HPA's reaction {'overloaded' if r.p99_ms is None else f'{r.p99_ms:.1f} ms'}: "
                  f"{'[green]holds[/]' if r.holds else '[red]misses[/]'}. HPA replay: ${d.replay_usd_per_day:,.2f}/day "
                  f"of replica-hours against the plan's ${d.usd_per_day:,.2f}.")
    for t in d.reserved_thresholds:
        where = ("never pays over the horizon (dearer per hour than on-demand)" if t.demand_at_break_even_qps is None
                 else f"pays for capacity under {t.demand_at_break_even_qps:,.0f} req/s (held that long)")
        console.print(f"Reserved {t.pool}: busy >= {t.break_even_hours_per_day:.1f} h/day to beat on-demand; {where}; "
                      f"bought {t.bought}")
    s = d.solver
    lp = "n/a" if s.lp_gap is None else f"{s.lp_gap:.2%}"
    console.print(f"Day solver: {s.solver}, {s.status}, MIP gap {s.mip_gap:.2%}, LP-relaxation gap {lp}, "
                  f"{s.wall_s:.2f} s")


def _clock(start_s: float) -> str:
    h, m = divmod(int(start_s // 60), 60)
    return f"{h:02d}:{m:02d}"


def _render_model_periods(plan: Plan, models, console: Console) -> None:
    """A mix over a day: each model's simulated P99 in each period, judged against its own target."""
    rows = []
    for t, p in enumerate(plan.day.periods):
        missed = [m.model for m in models if m.period_p99_ms[t] is None or m.period_p99_ms[t] > m.p99_ms]
        rows.append([_clock(p.start_s)]
                    + [f"{_p99(m.period_p99_ms[t])} {_verdict(m.model not in missed)}" for m in models]
                    + ["[green]holds[/]" if not missed else f"[red]misses[/]: {', '.join(missed)}"])
    print_table(console, "P99 per period, each model against its own target (simulated at the period's rates)",
                _columns(("from", *(f"{m.model} P99 ms (<= {m.p99_ms:g} ms)" for m in models), "every model"),
                         left=("every model",)), rows)


def render_calibration(cal: Calibration, console: Console) -> None:
    console.print(f"[bold]{cal.model}[/] on [bold]{cal.gpu}[/] ({cal.profile_origin}): "
                  f"{cal.describe_parameters()}; {cal.fit.evaluations} evaluations", highlight=False)
    for w in cal.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    steps = []
    for s in cal.steps:
        c = s.config
        steps.append([s.source.rsplit("/", 1)[-1], s.step,
                      f"{c.max_batch_size}/{c.max_queue_delay_microseconds}us/x{c.instance_count}",
                      f"{s.offered_rate:,.1f}", f"{s.measured_ms['p50']:.2f}", f"{s.predicted_ms['p50']:.2f}",
                      f"{s.measured_ms['p99']:.2f}", f"{s.predicted_ms['p99']:.2f}", f"{s.p99_error:+.1%}",
                      "-" if s.measured_mean_batch is None else f"{s.measured_mean_batch:.2f}",
                      f"{s.predicted_mean_batch:.2f}"])
    print_table(console, "Fit per step (latency ms, end to end)",
                _columns(("run", "step", "config", "req/s", "P50 meas", "P50 pred", "P99 meas", "P99 pred",
                          "P99 err", "batch meas", "batch pred"), left=("run", "step", "config")), steps, keys=2)
    console.print(f"P99 error: median {cal.fit.median_abs_p99_error:.1%}, worst {cal.fit.worst_abs_p99_error:.1%}")
    for e in cal.fit.excluded:
        console.print(f"  left out: {e.source.rsplit('/', 1)[-1]} {e.step}: {e.reason}")
    sc = cal.scaling
    rows = []
    for t in cal.thresholds:
        c = t.config
        rows.append([f"{c.max_batch_size}/{c.max_queue_delay_microseconds}us/x{c.instance_count}", f"{t.p99_ms:g}",
                     f"{t.max_rate_per_replica:,.1f}",
                     f"{t.max_rate_interval[0]:,.1f}-{t.max_rate_interval[1]:,.1f} "
                     f"(est. {t.nominal_max_rate_per_replica:,.1f})",
                     "-" if t.latency_max_rate is None else f"{t.latency_max_rate:,.1f}",
                     f"{t.hpa_target_rate_per_replica:,.1f}",
                     "-" if t.predicted_queue_us_at_target is None else f"{t.predicted_queue_us_at_target:,.0f}"])
    print_table(console, f"HPA thresholds (scale-up lag {sc.scale_up_lag_s / 60:g} min, "
                         f"ramp {(sc.ramp_per_min or 0.0):.0%}/min)",
                _columns(("config", "P99 target ms", "planned req/s per replica",
                          f"{cal.uncertainty.confidence:.0%} interval", "P99 limit req/s", "HPA target req/s",
                          "queue us at target"),
                         left=("config",)), rows)

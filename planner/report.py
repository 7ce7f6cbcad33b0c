"""``report``: one HTML page with PNG plots that explains a plan.

* cost against QPS for each GPU type alone and for the mix the planner may choose;
* P99 against load per deployment (the simulated curve, calibrated where a calibration is given), with the
  measured stress steps as points;
* a what-if of the spot share: fleet cost with and without the survival requirement, and whether the fleet
  survives losing its largest spot pool;
* the plan itself.

The curves re-run the planner's own pieces: per-replica capacity by simulation (once per GPU type), then the
MILP at each QPS or spot share. Curve points are not re-verified by simulation as a plan is; the report says so.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gpufleet.cli import plural
from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.io import write_atomic
from gpufleet.contracts.plan import Plan
from planner.capacity import CapacitySearch, ReplicaModel
from planner.catalog import read_catalog
from planner.errors import PlannerInputError
from planner.mig import slice_profiles, slices
from planner.optimize import Infeasible, Problem, solve
from planner.profiles import Pairing, load_profiles
from planner.sizing import GpuSizing, constraints_of, fleet_pools, fleet_problem, replica_model

QPS_REACH = 3.0  # the cost curves run to this many times the plan's rate or what its fleet holds
QPS_POINTS = 20
COST_TABLE_ROWS = 10
COST_MARKERS = "osD^vP<>Xh"  # one per GPU type: two types at the same cost are still told apart
SPOT_SHARES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
LOAD_FRACTIONS = tuple(np.linspace(0.1, 0.97, 14))
PNG_DPI = 110
CHECK_SPAN = 4.0  # the calibration check's y axis spans at least this ratio


@dataclass
class ReportInputs:
    plan: Plan
    catalog: Path | None = None
    profiles: list[Path] | None = None
    calibration: Calibration | None = None
    calibration_source: str = "the calibration"  # its file, for messages


def check_pairing(inputs: ReportInputs) -> None:
    """The profiles and calibration given are for the plan's model(s) and GPU types: one for another would be left
    unused (the plan's own figures drawn instead, its stress steps plotted nowhere) while the page names it."""
    plan, r = inputs.plan, inputs.plan.request
    models = [m.model for m in plan.mix.models] if plan.mix is not None else [r.model]
    gpus = {s.gpu for s in plan.sizing} | {d.gpu for d in plan.deployments}
    if r.mig:  # a sliced GPU's profiles are derived from the whole GPU's
        gpus |= {s.gpu for s in slices() if s.gpu_type in gpus}
    planned = f"the plan is for {', '.join(repr(m) for m in models)}"
    load_profiles(inputs.profiles, Pairing(models, gpus, planned, f"the plan sized {', '.join(sorted(gpus))}"))
    cal = inputs.calibration
    if cal is not None and cal.model not in models:
        raise PlannerInputError(f"{inputs.calibration_source}: calibrated for model '{cal.model}', but {planned}")
    if cal is not None and cal.gpu not in gpus:
        raise PlannerInputError(f"{inputs.calibration_source}: calibrated on GPU '{cal.gpu}', but the plan sized "
                                f"{', '.join(sorted(gpus))}")


@dataclass
class Plot:
    """One of the report's figures, and the numbers behind it that the page tabulates."""

    figure: Figure
    rows: list[dict] = field(default_factory=list)


class FleetModel:
    """The plan's fleet, re-solvable at any QPS or spot share: the same pools and per-replica rates the plan was
    sized with (:mod:`planner.sizing`, the rates the plan records), so the cost at the plan's own QPS is the plan's."""

    def __init__(self, inputs: ReportInputs):
        plan = inputs.plan
        r = plan.request
        self.request = r
        self.catalog = read_catalog(inputs.catalog)
        if self.catalog.region != r.region or self.catalog.as_of != r.catalog_as_of:
            raise PlannerInputError(f"the plan was priced with the {r.region} catalog of {r.catalog_as_of}, not "
                                    f"{self.catalog.region} of {self.catalog.as_of}; pass the --catalog it was made with")
        profiles = load_profiles(inputs.profiles)
        if r.mig:
            profiles.update(slice_profiles(profiles))
        self.models: dict[str, ReplicaModel] = {}
        for d in plan.deployments:
            if (r.model, d.gpu) not in profiles:
                raise PlannerInputError(f"no latency profile for model '{r.model}' on {d.gpu}; pass the --profile "
                                        "the plan was made with")
            self.models[d.gpu] = replica_model(profiles[(r.model, d.gpu)], inputs.calibration)
        self.sizing = {s.gpu: GpuSizing.from_record(s) for s in plan.sizing}
        self.config = {g: s.config for g, s in self.sizing.items()}
        self.capacity = {g: s.sizing_rate for g, s in self.sizing.items()}
        self.constraints = constraints_of(r)
        self.pools = fleet_pools(self.catalog, set(self.sizing), self.constraints)

    def problem(self, qps: float, gpus: list[str], **override) -> Problem:
        return fleet_problem(tuple(p for p in self.pools if p.gpu in gpus),
                             {g: self.sizing[g] for g in gpus if g in self.sizing}, qps, self.constraints, **override)

    def cost(self, qps: float, gpus: list[str], max_spot_share: float | None = None,
             spot_survival: bool | None = None) -> float | None:
        override = {}
        if max_spot_share is not None:
            override["max_spot_share"] = max_spot_share
        if spot_survival is not None:
            override["spot_survival"] = spot_survival
        problem = self.problem(qps, gpus, **override)
        if not problem.pools:
            return None
        try:
            return solve(problem).usd_per_hour
        except Infeasible:
            return None


def _figure(width: float, height: float) -> Figure:
    # Constrained layout makes room for legends placed outside the axes (where they cannot cover data).
    return Figure(figsize=(width, height), layout="constrained")


def _legend_outside(ax, **kw) -> None:
    """The legend to the right of the axes: beside the data, never over it."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7, **kw)


def _plain_log_y(ax, fmt: str = "{:g}") -> None:
    """A log y axis labelled in plain numbers ($2, $5, $20; 20 ms), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def plain(v, _):
        return fmt.format(float(f"{v:.3g}"))

    def minor(v, _):
        # Within one decade (a small model's dollars, a calibration check's milliseconds) the 1-2-5 ticks may
        # leave one label or none: then every minor tick is labelled too.
        lo, hi = ax.get_ylim()
        return plain(v, _) if 0 < lo and hi / lo < 10 else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.yaxis.set_major_formatter(FuncFormatter(plain))


def cost_grid(fm: FleetModel, plan: Plan) -> list[float]:
    """The rates the cost curves are solved at: up to QPS_REACH times the plan's rate or what its fleet holds,
    whichever is more. A small model's floor of replicas holds many times its rate; a range that stops short of
    that shows a flat line and hides what growth costs."""
    held = sum(d.replicas * fm.capacity[d.gpu] for d in plan.deployments)
    top = QPS_REACH * max(plan.request.qps, held)
    grid = np.linspace(top / QPS_POINTS, top, QPS_POINTS)
    return sorted({float(q) for q in grid} | {plan.request.qps})


def _plot_cost(fm: FleetModel, plan: Plan) -> Plot:
    grid = cost_grid(fm, plan)
    rows = []
    fig = _figure(8.2, 4.4)
    ax = fig.subplots()
    # The mix is a wide pale band beneath the types: where it is one type alone, that type's line shows on it.
    mix = [fm.cost(q, sorted(fm.capacity)) for q in grid]
    rows_mix = [{"series": "mix", "qps": q, "usd_per_hour": c} for q, c in zip(grid, mix)]
    ax.plot(grid, [np.nan if c is None else c for c in mix], "-", color="0.55", lw=8, alpha=0.45,
            solid_capstyle="round", zorder=1, label="cheapest mix (any types)")
    for g, marker in zip(sorted(fm.capacity), COST_MARKERS):
        costs = [fm.cost(q, [g]) for q in grid]
        rows += [{"series": g, "qps": q, "usd_per_hour": c} for q, c in zip(grid, costs)]
        ax.plot(grid, [np.nan if c is None else c for c in costs], "-", marker=marker, ms=4, lw=1.5, zorder=2,
                label=f"{g} alone")
    rows += rows_mix
    ax.plot([plan.request.qps], [plan.cost.usd_per_hour], "*", color="red", mec="black", mew=0.6, ms=14, zorder=3,
            label=f"this plan: {plan.request.qps:,.0f} req/s, ${plan.cost.usd_per_hour:,.2f}/h")
    # Log $: a type ten times dearer does not press the others into a sliver, and equal ratios look equal.
    _plain_log_y(ax, "${:g}")
    ax.set_xlim(0, grid[-1] * 1.02)
    ax.xaxis.set_major_formatter("{x:,.0f}")
    ax.set_xlabel("requests/s")
    ax.set_ylabel("$/hour (log scale)")
    ax.set_title(f"Cheapest fleet at P99 <= {plan.request.p99_ms:g} ms")
    ax.grid(alpha=0.3, which="both")
    _legend_outside(ax)
    return Plot(fig, rows)


def _p99_curve(fm: FleetModel, gpu: str, cfg, rates, overhead_ms: float) -> list[float]:
    search = CapacitySearch(fm.models[gpu])
    return [search.simulate(r, cfg).quantile_ms(0.99) + overhead_ms for r in rates]


def _plot_latency(fm: FleetModel, plan: Plan, cal: Calibration | None) -> Plot:
    """Left: each deployment's P99 against load with the config it is planned with. Right, with a calibration:
    the check of the model against the stress steps, each config's predicted curve over its own measured rates.
    The steps ran their own configs, often at light load; on the planned config's axis they would sit at x~0
    against a curve they say nothing about directly."""
    overhead = plan.request.overhead_ms
    checked = cal is not None and cal.steps and cal.gpu in fm.models
    fig = _figure(11.5 if checked else 8.2, 4.6)
    axes = fig.subplots(1, 2 if checked else 1, squeeze=False)[0]
    ax = axes[0]
    for i, d in enumerate(plan.deployments):
        m, cfg = fm.models[d.gpu], fm.config[d.gpu]
        rates = [f * m.saturation_rate(cfg) for f in LOAD_FRACTIONS]
        color = f"C{i}"
        ax.plot(rates, _p99_curve(fm, d.gpu, cfg, rates, overhead), "-", color=color,
                label=f"{d.gpu} predicted ({cfg.describe()})")
        ax.axvline(d.rate_per_replica, ls=":", lw=1.2, color=color,
                   label=f"{d.gpu} planned: {d.rate_per_replica:,.0f} req/s per replica")
    ax.axhline(plan.request.p99_ms, color="r", lw=1, label=f"P99 target {plan.request.p99_ms:g} ms")
    ax.set_title("The plan's configuration")
    if checked:
        _plot_calibration_check(axes[1], fm, cal, overhead)
    for a in axes:
        _plain_log_y(a)
        a.set_xlim(left=0)
        a.xaxis.set_major_formatter("{x:,.0f}")
        a.set_xlabel("requests/s per replica")
        a.set_ylabel("P99 ms, end to end (log scale)")
        a.grid(alpha=0.3, which="both")
        a.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), borderaxespad=0.0, fontsize=7)
    return Plot(fig)


def _plot_calibration_check(ax, fm: FleetModel, cal: Calibration, overhead_ms: float) -> None:
    """Each config the stress steps ran: the calibrated model's P99 across the measured rates, and the steps."""
    by_config: dict = {}
    ys: list[float] = []
    for s in cal.steps:
        by_config.setdefault(s.config, []).append(s)
    m = fm.models[cal.gpu]
    for i, (cfg, steps) in enumerate(sorted(by_config.items(), key=lambda kv: kv[0].sort_key())):
        measured = [s.offered_rate for s in steps]
        lo, hi = min(measured), max(measured)
        # From a little under the lightest step to a little over the heaviest, never past saturation's 97%
        # unless a step itself went there.
        top = max(hi, min(hi * 1.1, 0.97 * m.saturation_rate(cfg)))
        rates = list(np.linspace(0.8 * lo, top, 12))
        color = f"C{i + 4}"  # past C3, the target's red
        predicted = _p99_curve(fm, cal.gpu, cfg, rates, overhead_ms)
        ax.plot(rates, predicted, "-", color=color, label=f"predicted ({cfg.describe()})")
        ax.plot(measured, [s.measured_ms["p99"] for s in steps], "o", color=color, mec="black", mew=0.5,
                label=f"measured ({cfg.describe()})")
        ys += predicted + [s.measured_ms["p99"] for s in steps]
    # At least a factor CHECK_SPAN from bottom to top: a 1% error must look like one, not fill the panel.
    mid, span = math.sqrt(min(ys) * max(ys)), max(math.sqrt(max(ys) / min(ys)) * 1.15, math.sqrt(CHECK_SPAN))
    ax.set_ylim(mid / span, mid * span)
    ax.set_title(f"Calibration check: {cal.gpu}, the stress runs' own configs")


def _survives(fm: FleetModel, qps: float, share: float) -> tuple[float | None, bool | None]:
    """Cost without the survival requirement, and whether that fleet still holds the traffic at the target
    after losing its largest spot pool (the planner's survival inequality)."""
    gpus = sorted(fm.capacity)
    problem = fm.problem(qps, gpus, max_spot_share=share, spot_survival=False)
    try:
        sol = solve(problem)
    except Infeasible:
        return None, None
    counts = tuple(sol.counts[p.name] for p in problem.pools)
    holdable = fm.problem(qps, gpus, max_spot_share=share, spot_survival=True).holdable(counts)
    return sol.usd_per_hour, sum(holdable.values()) >= qps * (1 - 1e-9)


def _plot_spot(fm: FleetModel, plan: Plan) -> Plot:
    own = plan.request.max_spot_share
    rows = []
    for share in sorted(set(SPOT_SHARES) | {own}):  # the plan's own share is always one of the points
        cost, survives = _survives(fm, plan.request.qps, share)
        with_survival = fm.cost(plan.request.qps, sorted(fm.capacity), share, True)
        rows.append({"max_spot_share": share, "usd_per_hour": cost, "survives_spot_loss": survives,
                     "usd_per_hour_with_survival": with_survival, "this_plan": share == own})
    fig = _figure(8.6, 4.4)
    ax = fig.subplots()
    xs = [r["max_spot_share"] for r in rows]
    ax.plot(xs, [np.nan if r["usd_per_hour"] is None else r["usd_per_hour"] for r in rows], "-", color="tab:blue",
            label="cheapest fleet")
    for r in rows:
        if r["usd_per_hour"] is not None:  # above the plan's star, so its own verdict shows inside it
            ax.plot(r["max_spot_share"], r["usd_per_hour"], "o", ms=5, zorder=4,
                    color="tab:green" if r["survives_spot_loss"] else "tab:red")
    ax.plot(xs, [np.nan if r["usd_per_hour_with_survival"] is None else r["usd_per_hour_with_survival"]
                 for r in rows], "--", color="tab:purple", label="cheapest fleet that survives spot loss")
    ax.plot([], [], "o", color="tab:green", label="survives losing its largest spot pool")
    ax.plot([], [], "o", color="tab:red", label="does not")
    survival = "sized to survive spot loss" if plan.request.spot_survival else "not sized to survive spot loss"
    ax.plot([own], [plan.cost.usd_per_hour], "*", color="gold", mec="black", mew=0.8, ms=16, zorder=3,
            label=f"this plan: at most {own:.0%} on spot,\n${plan.cost.usd_per_hour:,.2f}/h ({survival})")
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.yaxis.set_major_formatter("${x:,.2f}")
    ax.set_xlabel("largest share of replicas on spot")
    ax.set_ylabel("$/hour")
    ax.set_title(f"Spot share what-if at {plan.request.qps:,.0f} req/s")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return Plot(fig, rows)


def _plot_day(plan: Plan) -> Plot:
    """The day plan: the curve against the fleet's capacity, the fleet stacked by capacity type, P99 per period."""
    from matplotlib.ticker import MaxNLocator

    d = plan.day
    starts = [p.start_s / 3600.0 for p in d.periods]
    widths = [p.hours for p in d.periods]
    fig = _figure(9.5, 8)
    ax_q, ax_f, ax_p = fig.subplots(3, 1, sharex=True)
    ax_q.step(starts + [starts[-1] + widths[-1]], [p.qps for p in d.periods] + [d.periods[-1].qps], where="post",
              label="peak in the period (sized for)")
    ax_q.step(starts + [starts[-1] + widths[-1]], [p.mean_qps for p in d.periods] + [d.periods[-1].mean_qps],
              where="post", label="mean in the period")
    # What the period's fleet holds at the P99 target: every replica at the rate it was sized for.
    rate = {s.gpu: s.sizing_rate_per_replica for s in plan.sizing}
    pools = {f"{p.instance_type}/{p.capacity_type}": p for p in plan.pools}
    held = [sum(n * pools[k].gpus_per_instance * (pools[k].mig_slices_per_gpu or 1) * rate[pools[k].gpu]
                for k, n in p.instances.items()) for p in d.periods]
    ax_q.step(starts + [starts[-1] + widths[-1]], held + [held[-1]], where="post", color="black",
              label="the fleet's capacity\nat the P99 target")
    ax_q.set_ylabel("req/s")
    ax_q.yaxis.set_major_formatter("{x:,.0f}")
    ax_q.set_ylim(bottom=0)
    bottom = [0.0] * len(d.periods)
    for cap, color in (("reserved", "tab:green"), ("on-demand", "tab:blue"), ("spot", "tab:orange")):
        heights = [p.replicas.get(cap, 0) for p in d.periods]
        if not any(heights):
            continue  # no legend entry for a capacity type the day never buys
        ax_f.bar(starts, heights, width=widths, bottom=bottom, align="edge", color=color, label=cap)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax_f.plot([s + w / 2 for s, w in zip(starts, widths)], [p.replicas_serving for p in d.periods], "k.",
              label="serving in the HPA replay\n(mean over the period)")
    ax_f.set_ylabel("replicas")
    ax_f.yaxis.set_major_locator(MaxNLocator(integer=True))  # replicas come whole
    ax_p.bar(starts, [p.p99_ms or 0.0 for p in d.periods], width=widths, align="edge", color="tab:gray",
             label="replayed P99")
    ax_p.axhline(plan.request.p99_ms, color="tab:red", ls="--", lw=1, label=f"P99 target {plan.request.p99_ms:g} ms")
    ax_p.set_ylabel("replayed P99, ms")
    ax_p.set_xlabel("hours from the curve's start")
    ax_p.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 3, 6]))
    for ax in (ax_q, ax_f, ax_p):
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return Plot(fig)


def _day_section(plan: Plan) -> str:
    d = plan.day
    if d is None:
        return ""
    rows = [["this day plan", f"${d.usd_per_day:,.2f}", f"${d.usd_per_month:,.0f}",
             "overloaded" if d.worst_period_p99_ms is None else f"{d.worst_period_p99_ms:.1f}"]]
    rows += [[f"{c.name}: {c.description}", f"${c.usd_per_day:,.2f}", f"${c.usd_per_month:,.0f}",
              "overloaded" if c.worst_period_p99_ms is None else f"{c.worst_period_p99_ms:.1f}"]
             for c in d.comparisons]
    compare = _table(["way to buy", "per day", "per month", "worst-period P99 ms"], rows)
    target = plan.request.p99_ms if d.p99_target_ms is None else d.p99_target_ms
    per_period = _table(
        ["from", "peak req/s", "replicas", "$", "replayed P99 ms", f"P99 <= {target:g} ms"],
        [[f"{int(p.start_s // 3600):02d}:{int(p.start_s % 3600 // 60):02d}", f"{p.qps:,.0f}",
          sum(p.replicas.values()), f"{p.usd:,.2f}", "overloaded" if p.p99_ms is None else f"{p.p99_ms:.1f}",
          "holds" if (p.p99_ms is not None and p.p99_ms <= target) else "misses"] for p in d.periods])
    saving = "" if d.saving_vs_peak_held_usd_per_day is None else (
        f"<p>${d.saving_vs_peak_held_usd_per_day:,.2f}/day saved against the point plan at the peak held all day "
        f"(${d.peak_held_usd_per_day:,.2f}/day): {d.saving_vs_peak_held:.1%}.</p>")
    thresholds = _table(["reserved pool", "$/h", "on-demand $/h", "break-even h/day", "pays under req/s", "bought"],
                        [[t.pool, f"{t.usd_per_hour:.4f}", f"{t.on_demand_usd_per_hour:.4f}",
                          f"{t.break_even_hours_per_day:.1f}",
                          "never" if t.demand_at_break_even_qps is None else f"{t.demand_at_break_even_qps:,.0f}",
                          t.bought] for t in d.reserved_thresholds])
    r = d.ramp
    return (f"<h2>Over the day</h2><img src=\"day.png\" alt=\"the day plan\">{per_period}{saving}{compare}"
            f"<p>Fastest ramp {100 * r.fastest_ramp_per_min:.2f}%/min from hour {r.at_s / 3600:.2f}: replayed P99 "
            f"{'overloaded' if r.p99_ms is None else f'{r.p99_ms:.1f} ms'} through the HPA's reaction "
            f"({'holds' if r.holds else 'misses'}). The HPA replay's replica-hours cost ${d.replay_usd_per_day:,.2f}"
            f" a day against the plan's ${d.usd_per_day:,.2f}.</p>{thresholds}"
            f"<p>Day solver: MIP gap {d.solver.mip_gap:.2%}, LP-relaxation gap "
            f"{'n/a' if d.solver.lp_gap is None else f'{d.solver.lp_gap:.2%}'}.</p>")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _money(v: float | None) -> str:
    return "infeasible" if v is None or (isinstance(v, float) and math.isnan(v)) else f"${v:,.2f}/h"


def _plot_mix(plan: Plan) -> Plot:
    """Each model's simulated P99 on each Deployment serving it against its own target; and what the fleet costs
    against one Deployment per model."""
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    fig = Figure(figsize=(10, 4))
    ax_p, ax_c = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    labels = [f"{d.model}\non {d.gpu}\n{'shared Deployment' if d.shared else 'own Deployment'}"
              for d in plan.deployments]
    x = np.arange(len(plan.deployments))
    ax_p.bar(x - 0.2, [d.predicted.p99_ms for d in plan.deployments], 0.4, label="simulated P99 at the planned rate")
    ax_p.bar(x + 0.2, [targets[d.model] for d in plan.deployments], 0.4, color="tab:red", alpha=0.4,
             label="the model's target")
    ax_p.set_xticks(x, labels, fontsize=7)
    ax_p.set_ylabel("ms")
    ax_p.legend(fontsize=8)
    ax_c.bar(["this plan", "one per model"], [plan.cost.usd_per_hour, plan.mix.separate_usd_per_hour],
             color=["tab:green", "tab:gray"])
    ax_c.set_ylabel("$/h")
    ax_c.set_title(f"{plan.mix.saving:.1%} saved", fontsize=10)
    fig.tight_layout()
    return Plot(fig)


def _write_mix_report(plan: Plan, out_dir: Path) -> Path:
    """A mix plan: the partition, every model's P99 against its target, the saving. Its cost and load curves need a
    re-plan per point (co-located shares are simulated per set), so this page shows the plan as made."""
    m, r = plan.mix, plan.request
    targets = {x.model: x.p99_ms for x in m.models}
    models = _table(["model", "req/s", "P99 target ms"], [[x.model, f"{x.qps:,.0f}", f"{x.p99_ms:g}"]
                                                           for x in m.models])
    pools = _table(["instance type", "GPU", "capacity", "count", "replicas", "$/h"],
                   [[p.instance_type, p.gpu, p.capacity_type, p.count, p.replicas, f"{p.usd_per_hour:.2f}"]
                    for p in plan.pools])
    deps = _table(["Deployment", "model", "GPU", "replicas", "weight", "req/s each", "max batch", "queue delay us",
                   "P99 ms", "target ms", "HPA target req/s"],
                  [[d.shared or "own", d.model, d.gpu, d.replicas, f"{d.routing_weight:.3f}",
                    f"{d.rate_per_replica:,.1f}", d.triton.max_batch_size, d.triton.max_queue_delay_microseconds,
                    f"{d.predicted.p99_ms:.2f}", f"{targets[d.model]:g}", f"{d.autoscaling.target_rate_per_replica:,.1f}"]
                   for d in plan.deployments])
    sharing = _table(["shared Deployment", "how its models share the GPU"], [[k, v] for k, v in
                                                                             sorted(m.gpu_sharing.items())])
    s = plan.solver
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gpufleet mix plan: {len(m.models)} models</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{len(m.models)} models, one fleet</h1>{models}
<p>{html.escape(r.region)}, catalog {html.escape(r.catalog_as_of)}, plan made {html.escape(plan.created_at)} by
gpufleet {html.escape(plan.gpufleet_version)}. Cost {_money(plan.cost.usd_per_hour)} (${plan.cost.usd_per_month:,.0f}
/month) against {_money(m.separate_usd_per_hour)} for one Deployment per model: {m.saving:.1%} saved.
{m.partitions_evaluated} set-partitioning MILPs solved, {m.bundles_evaluated} model sets x GPU types simulated; MIP gap
{s.mip_gap:.2%}, LP-relaxation gap {'n/a' if s.lp_gap is None else f'{s.lp_gap:.2%}'}.</p>
<p>{html.escape(plan.why)}</p>
<h2>The plan</h2><img src="mix.png" alt="each model's P99 against its target; the saving">{pools}{deps}{sharing}
{_mix_day_section(plan)}</body></html>
"""
    path = out_dir / "report.html"
    write_atomic(path, page)
    return path


def _mix_day_section(plan: Plan) -> str:
    """A mix over a day: each model's simulated P99 per period against its own target (MixPlan.models[].
    period_p99_ms; null: past saturation), and what the day costs against the other ways of buying it."""
    d, models = plan.day, plan.mix.models
    if d is None or any(m.period_p99_ms is None for m in models):
        return ""

    def cell(p99: float | None, target: float) -> str:
        return "overloaded misses" if p99 is None else f"{p99:.1f} {'holds' if p99 <= target else 'misses'}"

    rows = []
    for t, p in enumerate(d.periods):
        missed = [m.model for m in models if m.period_p99_ms[t] is None or m.period_p99_ms[t] > m.p99_ms]
        rows.append([f"{int(p.start_s // 3600):02d}:{int(p.start_s % 3600 // 60):02d}", f"{p.qps:,.0f}",
                     f"{p.usd:,.2f}", *(cell(m.period_p99_ms[t], m.p99_ms) for m in models),
                     "holds" if not missed else f"misses: {', '.join(missed)}"])
    per_period = _table(["from", "peak req/s", "$", *(f"{m.model} P99 ms (<= {m.p99_ms:g} ms)" for m in models),
                         "every model"], rows)
    # A mix's alternatives are one fleet per model, each replayed in its own day plan: the figure is the model closest
    # to its target (named in the description); null, as in a day plan, is a replica past saturation.
    ways = _table(["way to buy", "per day", "per month", "worst-period P99 ms", "target"],
                  [["this day plan", f"${d.usd_per_day:,.2f}", f"${d.usd_per_month:,.0f}", "per model above",
                    "holds" if d.holds_target else "misses"]]
                  + [[f"{c.name}: {c.description}", f"${c.usd_per_day:,.2f}", f"${c.usd_per_month:,.0f}",
                      "overloaded" if c.worst_period_p99_ms is None else f"{c.worst_period_p99_ms:.1f}",
                      "holds" if c.holds_target else "misses"] for c in d.comparisons])
    return (f"<h2>Over the day</h2><p>Each model's P99 per period, simulated at the period's rates, against its own "
            f"target.</p>{per_period}{ways}")


def report_plots(inputs: ReportInputs) -> dict[str, Plot]:
    """The report's figures by the PNG file each is written to, with the numbers the page tabulates."""
    plan = inputs.plan
    if plan.mix is not None:
        return {"mix.png": _plot_mix(plan)}
    fm = FleetModel(inputs)
    plots = {"cost_vs_qps.png": _plot_cost(fm, plan),
             "p99_vs_load.png": _plot_latency(fm, plan, inputs.calibration),
             "spot_share.png": _plot_spot(fm, plan)}
    if plan.day is not None:
        plots["day.png"] = _plot_day(plan)
    return plots


def write_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir``; return the HTML path."""
    plan, r = inputs.plan, inputs.plan.request
    check_pairing(inputs)
    plots = report_plots(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, plot in plots.items():
        plot.figure.savefig(out_dir / name, dpi=PNG_DPI)
    if plan.mix is not None:
        return _write_mix_report(plan, out_dir)
    cost_rows, spot_rows = plots["cost_vs_qps.png"].rows, plots["spot_share.png"].rows
    pools = _table(["instance type", "GPU", "capacity", "count", "replicas", "$/h"],
                   [[p.instance_type, p.gpu, p.capacity_type, p.count, p.replicas, f"{p.usd_per_hour:.2f}"]
                    for p in plan.pools])
    deps = _table(["GPU", "replicas", "weight", "req/s each", "max batch", "queue delay us", "instances",
                   "P99 ms", "HPA target req/s", "max req/s"],
                  [[d.gpu, d.replicas, f"{d.routing_weight:.3f}", f"{d.rate_per_replica:,.1f}",
                    d.triton.max_batch_size, d.triton.max_queue_delay_microseconds, d.triton.instance_count,
                    f"{d.predicted.p99_ms:.2f}", f"{d.autoscaling.target_rate_per_replica:,.1f}",
                    f"{d.autoscaling.max_rate_per_replica:,.1f}"] for d in plan.deployments])
    spot = _table(["max spot share", "cheapest $/h", "survives spot loss", "cheapest surviving $/h"],
                  [[f"{s['max_spot_share']:.0%}" + (" (this plan)" if s["this_plan"] else ""),
                    _money(s["usd_per_hour"]),
                    {True: "yes", False: "no", None: "-"}[s["survives_spot_loss"]],
                    _money(s["usd_per_hour_with_survival"])] for s in spot_rows])
    mix_rows = [c for c in cost_rows if c["series"] == "mix"]
    every = math.ceil(len(mix_rows) / COST_TABLE_ROWS)  # the plot has them all; the table, a readable few
    shown = [c for i, c in enumerate(mix_rows) if i % every == every - 1 or c["qps"] == r.qps]
    cost_tab = _table(["req/s", "mix $/h"], [[f"{c['qps']:,.0f}" + (" (this plan)" if c["qps"] == r.qps else ""),
                                              _money(c["usd_per_hour"])] for c in shown])
    sv = plan.survival
    survival = "<p>No spot pools in this plan.</p>" if sv is None else (
        f"<p>Losing {html.escape(sv.lost_pool)} ({plural(sv.replicas_lost, 'replica')}): P99 {sv.p99_ms_cold_start} ms over "
        f"the {sv.cold_start_s} s until replacements serve, {sv.p99_ms_after_replacement} ms after; bound "
        f"{sv.bound_ms:g} ms: {'holds' if sv.holds else 'misses'}. Survival constraint "
        f"{'met' if sv.constraint_holds else 'not met'}.</p>")
    cal = inputs.calibration
    cal_text = "<p>No calibration: latency from the profiles as published, overhead " \
               f"{r.overhead_ms:g} ms ({html.escape(r.overhead_source)}).</p>" if cal is None else (
        f"<p>Calibrated on {len(cal.steps)} stress steps ({cal.gpu}): {html.escape(cal.describe_parameters())}; "
        f"P99 fit error median {cal.fit.median_abs_p99_error:.1%}, worst {cal.fit.worst_abs_p99_error:.1%}.</p>"
        + "".join(f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in cal.warnings))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gpufleet plan: {html.escape(r.model)} at {r.qps:,.0f} req/s</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(r.model)} at {r.qps:,.0f} req/s, P99 &le; {r.p99_ms:g} ms</h1>
<p>{html.escape(r.region)}, catalog {html.escape(r.catalog_as_of)}, routing {r.routing}, plan made
{html.escape(plan.created_at)} by gpufleet {html.escape(plan.gpufleet_version)}.
Cost {_money(plan.cost.usd_per_hour)} (${plan.cost.usd_per_month:,.0f}/month); simulated fleet P99
{plan.predicted.p99_ms:.2f} ms.</p>
<p>{html.escape(plan.why)}</p>
<h2>The plan</h2>{pools}{deps}{survival}{cal_text}{_day_section(plan)}
<h2>Cost against QPS</h2><img src="cost_vs_qps.png" alt="cost against QPS">{cost_tab}
<p>Each curve is the cheapest fleet of that GPU type alone (grey band: any mix) at the plan's P99 target, from the
per-replica capacities the plan used; points off the plan are optimized but not re-verified by simulation.</p>
<h2>P99 against load</h2><img src="p99_vs_load.png" alt="P99 against load">
<h2>Spot share what-if</h2><img src="spot_share.png" alt="spot share what-if">{spot}
</body></html>
"""
    path = out_dir / "report.html"
    write_atomic(path, page)
    return path

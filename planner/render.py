"""The plan for people: rich tables and the one-paragraph why."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from planner.plan import Plan


def render_plan(plan: Plan, console: Console) -> None:
    r = plan.request
    console.print(f"[bold]{r.model}[/] at [bold]{r.qps:,.0f} req/s[/], P99 <= [bold]{r.p99_ms:g} ms[/] "
                  f"({r.region}, catalog {r.catalog_as_of}, routing {r.routing})")

    pools = Table(title="Buy", title_justify="left")
    for col in ("instance type", "GPU", "capacity", "count", "replicas", "$/h each", "$/h"):
        pools.add_column(col, justify="right" if col in ("count", "replicas", "$/h each", "$/h") else "left")
    for p in plan.pools:
        pools.add_row(p.instance_type, p.gpu, p.capacity_type, str(p.count), str(p.replicas),
                      f"{p.usd_per_hour_per_instance:.4f}", f"{p.usd_per_hour:.2f}")
    console.print(pools)

    deps = Table(title="Triton deployments", title_justify="left")
    for col in ("GPU", "replicas", "weight", "req/s each", "max batch", "queue delay", "instances",
                "P50 ms", "P99 ms", "util", "HPA target req/s"):
        deps.add_column(col, justify="left" if col == "GPU" else "right")
    for d in plan.deployments:
        t = d.triton
        deps.add_row(d.gpu, str(d.replicas), f"{d.routing_weight:.3f}", f"{d.rate_per_replica:,.0f}",
                     str(t.max_batch_size), f"{t.max_queue_delay_microseconds} us", str(t.instance_count),
                     f"{d.predicted.p50_ms:.2f}", f"{d.predicted.p99_ms:.2f}", f"{d.predicted.utilization:.0%}",
                     f"{d.autoscaling.target_rate_per_replica:,.0f}")
    console.print(deps)

    c, s = plan.cost, plan.solver
    console.print(f"Fleet: P50 {plan.predicted.p50_ms:.2f} ms, P99 [bold]{plan.predicted.p99_ms:.2f} ms[/] "
                  f"(simulated), utilization {plan.predicted.utilization:.0%}")
    console.print(f"Cost: [bold]${c.usd_per_hour:,.2f}/h[/], ${c.usd_per_month:,.0f}/month, "
                  f"${c.usd_per_million_inferences:.4f} per million inferences")
    lp = "n/a" if s.lp_gap is None else f"{s.lp_gap:.2%}"
    console.print(f"Solver: {s.solver}, {s.status}, MIP gap {s.mip_gap:.2%}, LP-relaxation gap {lp}")
    if plan.survival is not None:
        sv = plan.survival
        verdict = "[green]holds[/]" if sv.holds else "[red]misses[/]"
        console.print(f"Spot loss: without {sv.lost_pool} ({sv.replicas_lost} replicas) P99 is "
                      f"{sv.p99_ms_after_loss:.2f} ms against {sv.bound_ms:g} ms: {verdict}")
    console.print(f"Why: {plan.why}")

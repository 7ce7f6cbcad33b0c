"""``planner``: the command line over :func:`planner.recommend.recommend`.

Every input error, from Click's parsing or from the library, ends as one line on stderr and exit status 2.
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gpufleet.cli import run_app
from planner.errors import PlannerInputError
from planner.plan import write_plan
from planner.recommend import (
    ALL_CAPACITY_TYPES,
    DEFAULT_OVERHEAD_MS,
    RecommendRequest,
    recommend,
)
from planner.render import render_plan

app = typer.Typer(help="Capacity planner for GPU inference behind Triton.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class RoutingMode(str, Enum):
    weighted = "weighted"
    equal = "equal"


@app.command("recommend")
def recommend_cmd(
    qps: Annotated[float, typer.Option(help="Requests per second to serve.")],
    p99_ms: Annotated[float, typer.Option(help="End-to-end P99 latency target, ms.")] = 100.0,
    model: Annotated[str, typer.Option(help="Model name in the latency profiles.")] = "resnet50",
    gpu: Annotated[Optional[list[str]], typer.Option(help="GPU types to consider (repeat); default all profiled.")] = None,
    catalog: Annotated[Optional[Path], typer.Option(help="Instance catalog JSON; default the embedded us-east-1 one.")] = None,
    profile: Annotated[Optional[list[Path]], typer.Option(help="Latency profile JSON (repeat); overrides the embedded one for its model and GPU.")] = None,
    capacity_type: Annotated[Optional[list[str]], typer.Option(help=f"Capacity types allowed (repeat): {', '.join(ALL_CAPACITY_TYPES)}.")] = None,
    routing: Annotated[RoutingMode, typer.Option(help="Load balancing as deployed: weighted per GPU type, or equal shares.")] = RoutingMode.weighted,
    max_spot_share: Annotated[float, typer.Option(help="Largest share of replicas on spot.")] = 0.7,
    spot_survival: Annotated[bool, typer.Option(help="Require the fleet to hold after losing its largest spot pool.")] = False,
    survival_p99_ms: Annotated[Optional[float], typer.Option(help="Degraded P99 bound while a spot pool is lost; default the target.")] = None,
    horizon_months: Annotated[float, typer.Option(help="How long the fleet will run; reserved terms must pay over it.")] = 12.0,
    overhead_ms: Annotated[float, typer.Option(help="Fixed network and pre/post-processing time per request, ms.")] = DEFAULT_OVERHEAD_MS,
    min_replicas: Annotated[int, typer.Option(help="Fewest Triton replicas in the fleet.")] = 1,
    max_instances_per_pool: Annotated[Optional[int], typer.Option(help="Cap on instances from any one pool.")] = None,
    exhaustive: Annotated[bool, typer.Option(help="Simulate every Triton config instead of pruning.")] = False,
    format: Annotated[OutputFormat, typer.Option("--format", help="table for people, json for the plan file.")] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option(help="Also write the plan JSON here.")] = None,
) -> None:
    """The cheapest GPU fleet and Triton config that hold the P99 target at the requested rate."""
    req = RecommendRequest(
        qps=qps, p99_ms=p99_ms, model=model, gpus=gpu or None, catalog=catalog, profiles=list(profile or []),
        capacity_types=list(capacity_type) if capacity_type else list(ALL_CAPACITY_TYPES), routing=routing.value,
        max_spot_share=max_spot_share, spot_survival=spot_survival, survival_p99_ms=survival_p99_ms,
        horizon_months=horizon_months, overhead_ms=overhead_ms, min_replicas=min_replicas,
        max_instances_per_pool=max_instances_per_pool, exhaustive=exhaustive)
    plan = recommend(req)
    if output is not None:
        try:
            write_plan(plan, output)
        except OSError as exc:
            raise PlannerInputError(f"{output}: cannot write plan: {exc.strerror}") from None
    if format is OutputFormat.json:
        sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
    else:
        render_plan(plan, Console() if sys.stdout.isatty() else Console(width=132))


@app.callback()
def _root() -> None:
    """Capacity planner for GPU inference behind Triton."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: every input error becomes one stderr line and exit status 2."""
    return run_app(app, argv, "planner", (PlannerInputError,))


if __name__ == "__main__":
    sys.exit(main())

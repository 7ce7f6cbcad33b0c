"""Plan → stack: write a plan where a Pulumi stack reads it (``gpufleet:planPath`` in ``Pulumi.<stack>.yaml``).

The stack refuses a plan made for another region or model when ``pulumi up`` runs; this module refuses it before
writing, so a wrong plan never replaces a good one.
"""
from __future__ import annotations

from pathlib import Path

from gpufleet.contracts.stack import PROJECT_ROOT, StackPlanTarget, stack_plan_target
from gpufleet.errors import InputError
from planner.errors import PlannerInputError
from gpufleet.contracts.plan import Plan, write_plan


def find_project_dir(start: Path | None = None) -> Path:
    """The Pulumi project (the folder with ``Pulumi.yaml``) at or above ``start``; else gpufleet's own checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    if (PROJECT_ROOT / "Pulumi.yaml").is_file():
        return PROJECT_ROOT
    raise PlannerInputError(f"no Pulumi.yaml at or above {here}; run from the gpufleet project or pass --project-dir")


def stack_target(stack: str, project_dir: Path | None = None) -> StackPlanTarget:
    project = Path(project_dir) if project_dir else find_project_dir()
    try:
        return stack_plan_target(stack, project)
    except InputError as exc:
        raise PlannerInputError(f"--stack {stack}: {exc}") from None


def check_stack_target(target: StackPlanTarget, stack: str, region: str, model: str) -> None:
    """Refuse, before any work, a plan the stack could not use."""
    if region != target.region:
        raise PlannerInputError(f"--stack {stack}: the stack is in {target.region}, the plan is priced for "
                                f"{region}; pass --catalog for {target.region}")
    if target.model is not None and model != target.model:
        raise PlannerInputError(f"--stack {stack}: the stack serves model '{target.model}' "
                                f"(gpufleet:modelName), the plan is for '{model}'")


def write_stack_plan(plan: Plan, stack: str, project_dir: Path | None = None) -> Path:
    """Write ``plan`` to the stack's ``planPath`` after checking that the stack can use it; return the path."""
    target = stack_target(stack, project_dir)
    check_stack_target(target, stack, plan.request.region, plan.request.model)
    path = target.plan_path
    try:
        write_plan(plan, path)
    except OSError as exc:
        raise PlannerInputError(f"{path}: cannot write plan: {exc.strerror}") from None
    return path

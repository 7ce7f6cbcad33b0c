"""Plan → stack: write a plan where a Pulumi stack reads it (``gpufleet:planPath`` in ``Pulumi.<stack>.yaml``).

The stack refuses a plan made for another region or model when ``pulumi up`` runs; this module refuses it before
writing, so a wrong plan never replaces a good one.
"""
from __future__ import annotations

from pathlib import Path

from planner.errors import PlannerInputError
from planner.plan import Plan, write_plan


def find_project_dir(start: Path | None = None) -> Path:
    """The Pulumi project (the folder with ``Pulumi.yaml``) at or above ``start``; else gpufleet's own checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    from infra.settings import ROOT
    if (ROOT / "Pulumi.yaml").is_file():
        return ROOT
    raise PlannerInputError(f"no Pulumi.yaml at or above {here}; run from the gpufleet project or pass --project-dir")


def write_stack_plan(plan: Plan, stack: str, project_dir: Path | None = None) -> Path:
    """Write ``plan`` to the stack's ``planPath`` after checking that the stack can use it; return the path."""
    from infra.settings import InfraInputError, settings_from_config, stack_file_config

    project = Path(project_dir) if project_dir else find_project_dir()
    try:
        settings = settings_from_config(stack_file_config(stack, project), f"Pulumi.{stack}.yaml")
    except InfraInputError as exc:
        raise PlannerInputError(f"--stack {stack}: {exc}") from None
    if plan.request.region != settings.region:
        raise PlannerInputError(f"--stack {stack}: the stack is in {settings.region}, the plan was priced for "
                                f"{plan.request.region}; pass --catalog for {settings.region}")
    if plan.request.model != settings.model_name:
        raise PlannerInputError(f"--stack {stack}: the stack serves model '{settings.model_name}' "
                                f"(gpufleet:modelName), the plan is for '{plan.request.model}'")
    path = Path(settings.plan_path)
    path = path if path.is_absolute() else project / path
    try:
        write_plan(plan, path)
    except OSError as exc:
        raise PlannerInputError(f"{path}: cannot write plan: {exc.strerror}") from None
    return path

"""A Pulumi stack's file (``Pulumi.<stack>.yaml``), as far as the planner and infra both read it.

``infra`` builds the stack from its whole config (:mod:`infra.settings`); ``planner recommend --stack`` needs only
where the stack reads its plan and what the plan must match (region, model). Both read the file here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import InputError

# The gpufleet checkout (where Pulumi.yaml sits beside the packages), the default Pulumi project.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "gpufleet"


def stack_file_config(stack: str, project_dir: Path = PROJECT_ROOT, error: type[Exception] = InputError
                      ) -> dict[str, str]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml`` as Pulumi would pass it (``namespace:key`` → string)."""
    import yaml

    path = Path(project_dir) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise error(f"no stack file {path.name} in {Path(project_dir)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config") or {}, dict):
        raise error(f"{path}: expected a mapping with a config: mapping")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (raw.get("config") or {}).items()}


@dataclass(frozen=True)
class StackPlanTarget:
    """Where a stack reads its plan, and what the plan must have been made for."""

    plan_path: Path
    region: str
    model: str | None  # None: the stack serves whichever model its plan is for


def stack_plan_target(stack: str, project_dir: Path = PROJECT_ROOT) -> StackPlanTarget:
    config = stack_file_config(stack, project_dir)
    missing = [k for k in ("planPath",) if f"{NAMESPACE}:{k}" not in config]
    region = config.get(f"{NAMESPACE}:region") or config.get("aws:region")
    if missing or not region:
        raise InputError(f"Pulumi.{stack}.yaml: missing {', '.join(f'{NAMESPACE}:{k}' for k in missing) or 'region'}")
    path = Path(config[f"{NAMESPACE}:planPath"])
    return StackPlanTarget(path if path.is_absolute() else Path(project_dir) / path, region,
                           config.get(f"{NAMESPACE}:modelName"))

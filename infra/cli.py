"""``infra render``: the stack under mocks, written out: Kubernetes manifests (validated strictly), Helm releases, a
summary of AWS resources and the policy pack's verdict. A preview with no Pulumi CLI and no cloud."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpufleet.cli import run_app
from gpufleet.contracts.io import check_output_dir
from gpufleet.kubernetes import K8S_VERSION, validate_manifest

app = typer.Typer(help="Pulumi stacks for gpufleet: render a stack without the Pulumi CLI.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _root() -> None:
    """Pulumi stacks for gpufleet."""


def _summary(records, stack: str) -> str:
    lines = [f"# AWS resources of stack `{stack}` (rendered under mocks)", "", "| type | count |", "|---|---|"]
    for t, n in sorted(Counter(r.type for r in records if r.type.startswith("aws:")).items()):
        lines.append(f"| `{t}` | {n} |")
    lines += ["", "## Node groups", "", "| name | capacity | instance types | min / desired / max | labels |",
              "|---|---|---|---|---|"]
    for r in records:
        if r.type == "aws:eks/nodeGroup:NodeGroup":
            sc = r.inputs.get("scalingConfig") or {}
            lines.append(f"| {r.name} | {r.inputs.get('capacityType')} | {', '.join(r.inputs.get('instanceTypes') or [])}"
                         f" | {int(sc.get('minSize', 0))} / {int(sc.get('desiredSize', 0))} / {int(sc.get('maxSize', 0))}"
                         f" | {', '.join(f'{k}={v}' for k, v in (r.inputs.get('labels') or {}).items())} |")
    lines += ["", "## Capacity reservations", "", "| name | instance type | AZ | count |", "|---|---|---|---|"]
    for r in records:
        if r.type == "aws:ec2/capacityReservation:CapacityReservation":
            lines.append(f"| {r.name} | {r.inputs['instanceType']} | {r.inputs['availabilityZone']} | "
                         f"{int(r.inputs['instanceCount'])} |")
    return "\n".join(lines) + "\n"


@app.command("render")
def render_cmd(
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    plan: Annotated[Optional[Path], typer.Option(help="Plan JSON (default: the stack's gpufleet:planPath).")] = None,
    out: Annotated[Path, typer.Option(help="Folder to write <stack>/ into.")] = Path("rendered"),
) -> None:
    """Write <out>/<stack>/{manifests.yaml, helm-releases.yaml, aws-resources.md, iam-policies.json,
    bucket-objects.json}; fail on invalid manifests or policy violations."""
    import json

    import yaml

    from infra.cfn import check_aws_inputs
    from infra.policy.rules import Resource, check
    from infra.preview import bucket_objects, iam_policies, manifests, preview, releases
    from infra.program import load_plan
    from infra.settings import InfraInputError, settings_from_config, stack_file_config

    check_output_dir(out / stack, "rendered stack", InfraInputError)
    config = stack_file_config(stack)
    if plan is not None:
        config["gpufleet:planPath"] = str(plan.resolve())
    settings = settings_from_config(config, f"Pulumi.{stack}.yaml")
    records = preview(settings, load_plan(settings))
    objs = manifests(records)
    verdicts = [(m, validate_manifest(m)) for m in objs]
    folder = out / stack
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifests.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    (folder / "helm-releases.yaml").write_text(yaml.safe_dump_all(releases(records), sort_keys=False))
    (folder / "aws-resources.md").write_text(_summary(records, stack))
    (folder / "iam-policies.json").write_text(json.dumps(iam_policies(records), indent=2) + "\n")
    (folder / "bucket-objects.json").write_text(json.dumps(bucket_objects(records), indent=2) + "\n")
    violations = check([Resource(r.type, r.name, r.inputs) for r in records])
    aws_problems, aws_unchecked = check_aws_inputs(records, settings.region)
    crds = sorted({m["kind"] for m, v in verdicts if v == "crd"})
    invalid = [(m, v) for m, v in verdicts if v not in (None, "crd")]
    print(f"{stack}: {len(records)} resources; {len(objs)} Kubernetes objects, "
          f"{len(objs) - len(invalid) - sum(1 for _, v in verdicts if v == 'crd')} valid against {K8S_VERSION} "
          f"(strict), CRDs not schema-checked: {', '.join(crds) or 'none'}; AWS inputs against CloudFormation's "
          f"schemas: {len(aws_problems)} problems ({len(aws_unchecked)} types without a counterpart); "
          f"policy violations: {len(violations)}; wrote {folder}")
    for m, v in invalid:
        print(f"  {m['kind']} {m.get('metadata', {}).get('name')}: {v}", file=sys.stderr)
    for problem in aws_problems:
        print(f"  aws {problem}", file=sys.stderr)
    for rule, message in violations:
        print(f"  policy {rule}: {message}", file=sys.stderr)
    if invalid or violations or aws_problems:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one stderr line and exit 2 for bad input; exit 1 when render finds a problem."""
    return run_app(app, argv, "infra")


if __name__ == "__main__":
    sys.exit(main())

"""`infra render` is a gate: through its console entry, it exits non-zero on a policy violation and on an invalid
manifest; and the stack is built from the plan alone.

The gate's cases call the console's ``main(argv)`` in-process (tests/cli_run.py), the faults injected with
monkeypatch and undone after; a good stack renders through the installed ``infra`` script as a user types it."""
import json
import shutil
import subprocess

from gpufleet.contracts.plan import read_plan, write_plan
from infra.preview import manifests, preview
from infra.program import load_plan
from infra.settings import ROOT, settings_from_config, stack_file_config
from tests.cli_run import run_cli

from .conftest import console


def test_render_exits_1_on_a_policy_violation(tmp_path):
    plan = tmp_path / "allspot.json"
    made = run_cli("planner", ["recommend", "--qps", "20000", "--p99-ms", "100", "--max-spot-share", "1.0",
                               "--format", "json", "--output", str(plan)])
    assert made.returncode == 0, made.stderr
    assert {p.capacity_type for p in read_plan(plan).pools} == {"spot"}
    run = run_cli("infra", ["render", "--stack", "dev", "--plan", str(plan), "--out", str(tmp_path / "r")], cwd=ROOT)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "policy on-demand-floor" in run.stderr and "Traceback" not in run.stderr


def test_render_exits_1_on_an_invalid_manifest(tmp_path):
    # Fault injection: a container port that is not an integer, which Kubernetes' schema refuses. PORTS is one list
    # that every manifest reads, so it is changed in place, and put back whatever happens.
    import infra.triton as t

    saved = t.PORTS[0]
    t.PORTS[0] = {"name": "http", "containerPort": "eight-thousand"}
    try:
        run = run_cli("infra", ["render", "--stack", "dev", "--out", str(tmp_path / "r")], cwd=ROOT)
    finally:
        t.PORTS[0] = saved
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Deployment" in run.stderr and "invalid" in run.stderr and "Traceback" not in run.stderr


def test_render_exits_1_on_an_aws_input_aws_refuses(tmp_path, monkeypatch):
    # Fault injection: an IMDS setting EC2 does not take (CloudFormation's schema lists the two).
    import pulumi_aws as aws

    orig = aws.ec2.LaunchTemplate.__init__
    monkeypatch.setattr(aws.ec2.LaunchTemplate, "__init__", lambda self, n, *a, **k: orig(self, n, *a, **{
        **k, "metadata_options": {**k["metadata_options"], "http_tokens": "sometimes"}}))
    run = run_cli("infra", ["render", "--stack", "dev", "--out", str(tmp_path / "r")], cwd=ROOT)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "aws " in run.stderr and "sometimes" in run.stderr and "Traceback" not in run.stderr


def test_render_exits_0_on_a_good_stack(tmp_path):
    run = subprocess.run([console("infra"), "render", "--stack", "dev", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "r" / "dev" / "manifests.yaml").is_file()
    # What a reviewer reads: every policy document pulumi up would send, and every object it would put in a bucket.
    policies = json.loads((tmp_path / "r" / "dev" / "iam-policies.json").read_text())
    kinds = {p["kind"] for p in policies}
    assert {"inline", "trust", "attached"} <= kinds, kinds
    assert all(p["document"]["Statement"] for p in policies if "document" in p)
    assert isinstance(json.loads((tmp_path / "r" / "dev" / "bucket-objects.json").read_text()), list)


def test_the_stack_needs_no_catalog_entry_for_a_planned_type(tmp_path):
    """A plan made from a refreshed catalog may name a type the embedded catalog lacks (here a renamed g6): the
    stack takes every instance fact from the plan."""
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = load_plan(settings)
    data = json.loads(plan.model_dump_json())
    for p in data["pools"]:
        p["instance_type"] = p["instance_type"].replace("g", "gx", 1)
        p["spot_instance_types"] = [t.replace("g", "gx", 1) for t in p["spot_instance_types"]]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    moved = read_plan(path)
    records = preview(settings, moved)
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup" and "gx" in str(r.inputs["instanceTypes"])]
    assert groups and all(t.startswith("gx") for g in groups for t in g.inputs["instanceTypes"])
    assert manifests(records)


def test_arm64_pools_get_the_arm_nvidia_ami(tmp_path):
    settings = settings_from_config(stack_file_config("dev"), "dev")
    data = json.loads(load_plan(settings).model_dump_json())
    for p in data["pools"]:
        p["architecture"] = "arm64"
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(data))
    records = preview(settings, read_plan(path))
    amis = {r.inputs["amiType"] for r in records if r.type == "aws:eks/nodeGroup:NodeGroup"
            and "gpufleet.io/gpu" in (r.inputs.get("labels") or {})}
    assert amis == {"AL2023_ARM_64_NVIDIA"}


def test_a_plan_assuming_another_hpa_tolerance_is_refused(tmp_path, capsys):
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = load_plan(settings)
    changed = plan.model_copy(update={"autoscaling": plan.autoscaling.model_copy(update={"tolerance": 0.05})})
    write_plan(changed, tmp_path / "p.json")
    from infra.cli import main
    assert main(["render", "--stack", "dev", "--plan", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]) == 2
    assert "HPA tolerance 0.05" in capsys.readouterr().err


def test_the_dev_stack_serves_the_model_its_plan_is_for_and_prod_pins_one(tmp_path):
    """The README's closed loop (`recommend --model detector ... --stack dev`): dev takes the plan's model; prod, with
    gpufleet:modelName, refuses a plan for another model before writing it."""
    project = tmp_path / "project"
    project.mkdir()
    for f in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(ROOT / f, project / f)
    (project / "infra" / "plans").mkdir(parents=True)
    profile = ROOT / "planner" / "data" / "profiles" / "resnet50-L4.json"
    other = json.loads(profile.read_text())
    other["model"] = "detector"
    prof = tmp_path / "detector-L4.json"
    prof.write_text(json.dumps(other))
    base = ["recommend", "--qps", "500", "--p99-ms", "100", "--model", "detector", "--profile", str(prof), "--gpu",
            "L4", "--project-dir", str(project)]
    ok = run_cli("planner", base + ["--stack", "dev"])
    assert ok.returncode == 0, ok.stderr
    settings = settings_from_config(stack_file_config("dev", project), "dev")
    plan = load_plan(settings, project)
    assert {d.model for d in plan.deployments} == {"detector"}
    names = {r.name for r in preview(settings, plan) if r.type == "kubernetes:apps/v1:Deployment"}
    assert any(n.startswith("gpufleet-dev-detector") or "triton-detector" in n for n in names), names
    refused = run_cli("planner", base + ["--stack", "prod"])
    assert refused.returncode == 2 and "serves model 'resnet50'" in refused.stderr
    assert not (project / "infra" / "plans" / "prod.plan.json").exists()

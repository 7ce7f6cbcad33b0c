"""The README's first-deploy walkthrough runs as written wherever it can run here (issue 24, defect 11).

The commands are read from README.md's section (its code spans and blocks), never retyped. Every one that needs no
AWS account runs through the console entries, in a copy of the Pulumi project; the rest are listed below, each with
the reason it cannot run here, and the test fails when the README's commands and that list drift apart. The only
changes to a command are the substitutions below, for things that cannot exist here.
"""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gpufleet.contracts.plan import read_plan
from infra.preview import manifests, preview
from infra.program import load_plan
from infra.settings import ROOT, settings_from_config, stack_file_config
from serving.triton_config import parse_config

from .conftest import fresh_bucket
from .conftest import console

SECTION = "### A first deploy, from an empty account"
CONSOLE = ("planner", "serving", "infra", "loadtests")
EXECUTABLES = CONSOLE + ("pulumi", "aws", "kubectl", "curl")
# Commands of the walkthrough that cannot run here, and why.
NOT_HERE = {
    "serving build-engine model.onnx model.plan": "TensorRT and a GPU of the pool's type (an engine is built for the "
                                                  "GPU it runs on)",
    "serving build-engine model-v2.onnx model-v2.plan": "TensorRT and a GPU of the pool's type",
    "pulumi stack select dev && pulumi up": "the Pulumi CLI and an AWS account",
    "aws eks update-kubeconfig --name $(pulumi stack output cluster_name) --region us-east-1":
        "an AWS account and the stack's cluster",
    "kubectl -n inference get pods": "the stack's cluster",
    "kubectl -n inference rollout status deployment/triton-resnet50-t4": "the stack's cluster",
    "curl $(pulumi stack output endpoint)/v2/models/resnet50/ready": "the deployed endpoint",
    "pulumi up": "the Pulumi CLI and an AWS account",
    "pulumi preview": "the Pulumi CLI and an AWS account",
    "aws eks get-token": "AWS credentials (kubectl runs it through the kubeconfig)",
}
# What cannot exist here, replaced in the commands that run: the TensorRT engines (ONNX files from `serving
# demo-model` instead: `serving repo` lays both out alike, only the config's platform differs) and the stack's
# models bucket (the bucket the previewed Deployment reads, made in a moto_server, which the uploads are pointed at).
ENGINES = {"model.plan": "model.onnx", "model-v2.plan": "model-v2.onnx"}
BUCKET_OUTPUT = "$(pulumi stack output models_bucket)"


def walkthrough_commands(readme: str) -> list[str]:
    """The section's commands, in order: code spans and lines of code blocks that start with a program's name."""
    start = readme.index(SECTION) + len(SECTION)
    end = re.search(r"^#{2,3} ", readme[start:], re.M)
    text = readme[start:start + end.start() if end else None]
    pieces = []
    for block in re.split(r"^```.*$", text, flags=re.M)[1::2]:
        pieces += [line.split(" #")[0].strip() for line in block.splitlines()]
    inline = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    pieces += re.findall(r"`([^`]+)`", re.sub(r"\n\s*", " ", inline))
    # A program's name alone (`kubectl` among the prerequisites) names the tool; a command has arguments.
    return [p for p in pieces if p.split(" ", 1)[0] in EXECUTABLES and " " in p]


def test_the_not_runnable_list_is_exactly_the_walkthroughs_other_commands():
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    assert commands, f"no commands found under {SECTION!r}"
    foreign = [c for c in commands if c.split(" ", 1)[0] not in CONSOLE]
    unlisted = set(foreign) - set(NOT_HERE)
    assert not unlisted, f"commands that need something else, not listed: {unlisted}"
    assert set(NOT_HERE) <= set(commands), f"listed but no longer in the README: {set(NOT_HERE) - set(commands)}"


@pytest.fixture
def project(tmp_path):
    """A copy of the Pulumi project (stack files and plans), where the walkthrough runs."""
    for f in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    shutil.copytree(ROOT / "infra" / "plans", tmp_path / "infra" / "plans")
    return tmp_path


def _model_repository(project: Path, gpu: str) -> str:
    """The s3:// model repository the stack's Deployment for ``gpu`` reads, from its previewed container args."""
    settings = settings_from_config(stack_file_config("dev", project), "dev")
    objs = manifests(preview(settings, load_plan(settings, project)))
    args = [a for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(f"-{gpu.lower()}")
            for c in d["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
    (repo,) = [a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")]
    return repo


def test_the_walkthrough_runs_as_written(project, moto_endpoint, aws_env):
    import boto3

    commands = [c for c in walkthrough_commands((ROOT / "README.md").read_text())
                if c not in NOT_HERE and c.split(" ", 1)[0] in CONSOLE]
    for engine, onnx in ENGINES.items():
        seed = "1" if "v2" in onnx else "0"
        made = subprocess.run([console("serving"), "demo-model", "tiny", onnx, "--seed", seed], cwd=project,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
    failures, bucket = [], None
    for command in commands:
        line, extra = command, []
        if BUCKET_OUTPUT in line:
            if bucket is None:  # the plan is written by now: the bucket its Deployment reads
                bucket = _model_repository(project, "T4").removeprefix("s3://").split("/", 1)[0]
                fresh_bucket(moto_endpoint, bucket)  # as `pulumi up` leaves it, whatever other tests put there
            line, extra = line.replace(BUCKET_OUTPUT, bucket), ["--endpoint-url", moto_endpoint]
        argv = [ENGINES.get(a, a) for a in shlex.split(line)] + extra
        if any("$(" in a or "<" in a for a in argv):
            failures.append(f"{command}: a substitution or placeholder this test cannot fill")
            continue
        run = subprocess.run([console(argv[0]), *argv[1:]], cwd=project, capture_output=True, text=True,
                             timeout=300)
        if run.returncode != 0:
            failures.append(f"{command} -> exit {run.returncode}: {run.stderr.strip()[-300:]}")
    assert not failures, "\n".join(failures)

    # The repository holds the plan's model under the plan's name: the folder the pods load, and the name
    # /v2/models/<model>/... answers to.
    plan = read_plan(project / "infra" / "plans" / "dev.plan.json")
    (model,) = {d.model for d in plan.deployments if d.gpu == "T4"}
    repo = project / "repo-t4"
    assert [p.name for p in repo.iterdir()] == [model]
    assert parse_config((repo / model / "config.pbtxt").read_text()).name == model
    # ...uploaded where the stack's Deployment reads it: each version of that model under its --model-repository.
    prefix = _model_repository(project, "T4").removeprefix(f"s3://{bucket}/")
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(
        Bucket=bucket)["Contents"]}
    want = {f"{prefix}/{model}/config.pbtxt", f"{prefix}/{model}/1/model.onnx", f"{prefix}/{model}/2/model.onnx"}
    assert want <= keys, keys
    assert all(k.startswith(f"{prefix}/{model}/") for k in keys), keys


def test_the_deployment_the_walkthrough_watches_is_one_the_stack_makes(project):
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    watched = [c.rsplit("deployment/", 1)[1] for c in commands if " rollout status deployment/" in c]
    settings = settings_from_config(stack_file_config("dev", project), "dev")
    made = {d["metadata"]["name"] for d in manifests(preview(settings, load_plan(settings, project)))
            if d["kind"] == "Deployment" and d["metadata"].get("namespace") == settings.namespace}
    assert watched and set(watched) <= made, (watched, made)

"""A MIG plan rolled out: partitioned node groups (slices made at boot, advertised by the device plugin's mixed
strategy), Triton pods that each take one slice and fit on the node together; every object valid, the pack
passing."""
import base64
import subprocess
import sys
from email import message_from_string
from pathlib import Path

import pytest

import pulumi  # noqa: F401 (a [test] dependency: a broken install fails here, never skips)

from gpufleet.kubernetes import validate_manifest
from infra.cli import main as infra_main
from infra.gpu_pools import GPU_LABEL, MIG_CONFIG_LABEL
from infra.policy.rules import Resource, check
from infra.preview import manifests, preview
from infra.program import load_plan
from infra.settings import settings_from_config, stack_file_config

PLANNER = str(Path(sys.executable).with_name("planner"))
SLICE = "A100-MIG-1g.5gb"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    out = tmp_path_factory.mktemp("mig") / "plan.json"
    run = subprocess.run([PLANNER, "recommend", "--model", "yolov8n-640", "--qps", "3000", "--p99-ms", "100",
                          "--mig", "--gpu", SLICE, "--output", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(update={"plan_path": str(out)})
    plan = load_plan(settings)
    assert any(p.mig_partition for p in plan.pools), "the plan must buy slices for these tests to mean anything"
    return out, plan, preview(settings, plan)


def test_partitioned_groups_make_their_slices_at_boot(stack):
    _, plan, records = stack
    sliced = [p for p in plan.pools if p.mig_partition]
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup" and r.inputs.get("labels", {}).get(GPU_LABEL) == SLICE]
    assert groups
    templates = {r.name: r for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"}
    for g in groups:
        assert g.inputs["labels"][MIG_CONFIG_LABEL] == "all-1g.5gb"
        tags = g.inputs["tags"]
        assert tags["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/mig-1g.5gb"] == str(
            sliced[0].gpus_per_instance)
        assert "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu" not in tags
    scripts = []
    for lt in templates.values():
        if "userData" not in lt.inputs:
            continue
        mime = message_from_string(base64.b64decode(lt.inputs["userData"]).decode())
        assert mime.is_multipart()  # EKS merges only MIME multi-part user data with its bootstrap
        (part,) = mime.get_payload()
        assert part.get_content_type() == "text/x-shellscript"
        scripts.append(part.get_payload())
    assert scripts
    for script in scripts:
        assert "nvidia-smi -mig 1" in script
        assert "-cgi " + ",".join(["1g.5gb"] * 7) + " -C" in script  # 7 slices on each of the node's GPUs


def test_the_device_plugin_advertises_slices(stack):
    _, _, records = stack
    (plugin,) = [m for m in manifests(records) if m["kind"] == "DaemonSet"
                 and m["metadata"]["name"] == "nvidia-device-plugin"]
    env = {e["name"]: e["value"] for e in plugin["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MIG_STRATEGY"] == "mixed"


def test_a_pod_takes_one_slice_and_a_nodes_pods_fit_on_it(stack):
    _, plan, records = stack
    deps = [m for m in manifests(records) if m["kind"] == "Deployment"
            and m["spec"]["template"]["spec"].get("nodeSelector", {}).get(GPU_LABEL) == SLICE]
    assert deps
    pool = next(p for p in plan.pools if p.gpu == SLICE)
    for d in deps:
        res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/mig-1g.5gb"] == "1" and "nvidia.com/gpu" not in res["limits"]
        cpu_m = int(res["requests"]["cpu"].removesuffix("m"))
        assert cpu_m * pool.gpus_per_instance <= (pool.vcpu - 1) * 1000  # every slice's pod fits, with room left


def test_every_object_validates_the_pack_passes_and_render_succeeds(stack, tmp_path):
    out, _, records = stack
    verdicts = {(m["kind"], m["metadata"]["name"]): validate_manifest(m) for m in manifests(records)}
    assert all(v is None for (kind, _), v in verdicts.items() if kind not in ("HTTPRoute", "ServiceMonitor")), \
        {k: v for k, v in verdicts.items() if v}
    assert check([Resource(r.type, r.name, r.inputs) for r in records]) == []
    assert infra_main(["render", "--stack", "dev", "--plan", str(out), "--out", str(tmp_path / "r")]) == 0


def test_a_pod_without_a_gpu_or_slice_limit_is_caught():
    pod = Resource("kubernetes:apps/v1:Deployment", "d", {"spec": {"template": {"spec": {
        "nodeSelector": {GPU_LABEL: SLICE}, "tolerations": [{"key": "nvidia.com/gpu"}],
        "containers": [{"name": "c", "resources": {"limits": {"memory": "8Gi"}}}]}}}})
    assert any(rule == "gpu-pods-limits-tolerations" for rule, _ in check([pod]))
    pod.props["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.5gb"] = "1"
    assert not any(rule == "gpu-pods-limits-tolerations" for rule, _ in check([pod]))


def test_a_canary_on_a_sliced_gpu_takes_a_slice_too(stack):
    out, plan, _ = stack
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(update={
        "plan_path": str(out), "canary_image": "nvcr.io/nvidia/tritonserver:25.01-py3", "canary_weight": 5})
    records = preview(settings, load_plan(settings))
    (canary,) = [m for m in manifests(records) if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-canary")]
    limits = canary["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/mig-1g.5gb") == "1" and "nvidia.com/gpu" not in limits

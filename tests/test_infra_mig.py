"""A MIG plan rolled out: partitioned node groups (slices made at boot, advertised by the device plugin's mixed
strategy), Triton pods that each take one slice and fit on the node together; every object valid, the pack
passing."""
import base64
import json
import os
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
from tests.cli_run import run_cli

SLICE = "A100-MIG-1g.5gb"
STUBS = Path(__file__).with_name("mig_stubs.py")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    out = tmp_path_factory.mktemp("mig") / "plan.json"
    run = run_cli("planner", ["recommend", "--model", "yolov8n-640", "--qps", "3000", "--p99-ms", "100", "--mig",
                              "--gpu", SLICE, "--output", str(out)])
    assert run.returncode == 0, run.stderr
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(update={"plan_path": str(out)})
    plan = load_plan(settings)
    assert any(p.mig_partition for p in plan.pools), "the plan must buy slices for these tests to mean anything"
    return out, plan, preview(settings, plan)


def test_partitioned_groups_make_their_slices_at_boot(stack, tmp_path_factory):
    _, plan, records = stack
    sliced = [p for p in plan.pools if p.mig_partition]
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup" and r.inputs.get("labels", {}).get(GPU_LABEL) == SLICE]
    assert groups
    for g in groups:
        assert g.inputs["labels"][MIG_CONFIG_LABEL] == "all-1g.5gb"
        tags = g.inputs["tags"]
        assert tags["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/mig-1g.5gb"] == str(
            sliced[0].gpus_per_instance)
        assert "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu" not in tags
    scripts = [installed(part, tmp_path_factory)["script"] for part in user_data_parts(records)]
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
    assert all(v is None for (kind, _), v in verdicts.items()
               if kind not in ("HTTPRoute", "ServiceMonitor", "PrometheusRule")), \
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


# --- #6: Cluster Autoscaler 1.35 and partitioned nodes -------------------------------------------------------------
# kubernetes/autoscaler@cluster-autoscaler-1.35.0:
#  cluster-autoscaler/cloudprovider/aws/aws_cloud_provider.go: GPULabel = "k8s.amazonaws.com/accelerator"
#  cluster-autoscaler/utils/gpu/gpu.go: NodeHasGpuAllocatable: some GPUVendorResourceNames entry (nvidia.com/gpu,
#    habana.ai/gaudi, gpu.intel.com/xe, amd.com/gpu, microsoft.com/directx) is allocatable and non-zero
#  cluster-autoscaler/processors/customresources/gpu_processor.go: FilterOutNodesWithUnreadyResources: a node with the
#    GPU label and no GPU allocatable is replaced by an unready copy (GPU exposed through DRA excepted; not here)
#  cluster-autoscaler/cloudprovider/aws/aws_manager.go: buildNodeFromTemplate: a template node's labels are the ASG's
#    k8s.io/cluster-autoscaler/node-template/label/* tags and the managed node group's labels
CA_GPU_LABEL = "k8s.amazonaws.com/accelerator"
CA_GPU_RESOURCES = ("nvidia.com/gpu", "habana.ai/gaudi", "gpu.intel.com/xe", "amd.com/gpu", "microsoft.com/directx")
CA_LABEL_TAG = "k8s.io/cluster-autoscaler/node-template/label/"
CA_RESOURCE_TAG = "k8s.io/cluster-autoscaler/node-template/resources/"


def ca_marks_unready(labels: dict, allocatable: dict) -> bool:
    """gpu_processor.go's rule: the GPU label without any non-zero GPU allocatable is an unready node."""
    has_gpu_allocatable = any(int(allocatable.get(r, 0)) > 0 for r in CA_GPU_RESOURCES)
    return CA_GPU_LABEL in labels and not has_gpu_allocatable


def test_the_autoscaler_counts_a_ready_partitioned_node_ready(stack):
    """A partitioned node advertises only its slices (k8s-device-plugin v0.17.0 internal/rm/device_map.go: a
    MIG-enabled GPU is skipped from nvidia.com/gpu under any strategy but none), so what the autoscaler sees of it, the
    node's labels and the template's, must not make it an unready node forever."""
    _, _, records = stack
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup"
              and MIG_CONFIG_LABEL in (r.inputs.get("labels") or {})]
    assert groups
    for g in groups:
        tags = g.inputs["tags"]
        labels = {**g.inputs["labels"], **{k.removeprefix(CA_LABEL_TAG): v for k, v in tags.items()
                                            if k.startswith(CA_LABEL_TAG)}}
        slices = {k.removeprefix(CA_RESOURCE_TAG): v for k, v in tags.items() if k.startswith(CA_RESOURCE_TAG)
                  and k.removeprefix(CA_RESOURCE_TAG).startswith("nvidia.com/mig-")}
        assert slices, "the autoscaler must still be told the slices a new node brings"
        assert not ca_marks_unready(labels, slices), (g.name, CA_GPU_LABEL, labels.get(CA_GPU_LABEL))


# --- #7: the device plugin's MIG settings, as NVIDIA's chart renders them -------------------------------------------
# NVIDIA/k8s-device-plugin@v0.17.0, deployments/helm/nvidia-device-plugin/templates/:
#  _helpers.tpl 91-105 (securityContext): values.securityContext if set; else privileged if compatWithCPUManager; else
#    {capabilities: {add: [SYS_ADMIN]}} if requiresCapSysAdmin; else {allowPrivilegeEscalation: false,
#    capabilities: {drop: [ALL]}}
#  _helpers.tpl 127-159: requiresCapSysAdmin when a migStrategy other than none is set (or volume-mounts device lists)
#  _helpers.tpl 266-270 + daemonset-device-plugin.yml 184-187: NVIDIA_MIG_MONITOR_DEVICES=all under the same condition
#  daemonset-device-plugin.yml 140-147: MIG_STRATEGY and FAIL_ON_INIT_ERROR from the values when set
#  cmd/nvidia-device-plugin/main.go 68-72: fail-on-init-error defaults to true ("otherwise block indefinitely")
def chart_plugin(mig_strategy: str | None) -> tuple[dict, dict]:
    """(securityContext, the MIG environment) the chart renders for this migStrategy and default values."""
    mig = bool(mig_strategy) and mig_strategy != "none"
    security = {"capabilities": {"add": ["SYS_ADMIN"]}} if mig else {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    env = {**({"MIG_STRATEGY": mig_strategy} if mig_strategy else {}),
           **({"NVIDIA_MIG_MONITOR_DEVICES": "all"} if mig else {})}
    return security, env


@pytest.fixture(scope="module")
def plain():
    settings = settings_from_config(stack_file_config("dev"), "dev")
    return preview(settings, load_plan(settings))


def plugin_container(records) -> dict:
    (plugin,) = [m for m in manifests(records) if m["kind"] == "DaemonSet"
                 and m["metadata"]["name"] == "nvidia-device-plugin"]
    return plugin["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("which", ["mig", "whole GPUs"])
def test_the_device_plugin_runs_with_the_charts_security_for_its_mig_strategy(stack, plain, which):
    c = plugin_container(stack[2] if which == "mig" else plain)
    env = {e["name"]: e["value"] for e in c["env"]}
    security, _ = chart_plugin(env.get("MIG_STRATEGY"))
    assert c["securityContext"] == security


@pytest.mark.parametrize("which", ["mig", "whole GPUs"])
def test_the_device_plugin_monitors_mig_devices_as_the_chart_does(stack, plain, which):
    c = plugin_container(stack[2] if which == "mig" else plain)
    env = {e["name"]: e["value"] for e in c["env"]}
    _, mig_env = chart_plugin(env.get("MIG_STRATEGY"))
    assert {k: env.get(k) for k in ("MIG_STRATEGY", "NVIDIA_MIG_MONITOR_DEVICES")} == \
        {k: mig_env.get(k) for k in ("MIG_STRATEGY", "NVIDIA_MIG_MONITOR_DEVICES")}


def test_a_device_plugin_that_cannot_see_the_slices_fails_instead_of_advertising_nothing(stack):
    env = {e["name"]: e["value"] for e in plugin_container(stack[2])["env"]}
    assert env.get("FAIL_ON_INIT_ERROR", "true") == "true"  # the plugin's own default (main.go) when unset


# --- #8: the slices are made on every boot, before the node joins, or it does not join -----------------------------
# canonical/cloud-init@22.2.2 (AL2023's major): cloudinit/handlers/boot_hook.py: a text/cloud-boothook part runs
#  PER_ALWAYS (every boot) in the init stage, and a failing boothook is only logged; handlers/shell_script.py: a
#  text/x-shellscript part runs once per instance in cloud-final. systemd/cloud-init.service.tmpl: Before=
#  network-online.target. awslabs/amazon-eks-ami@81fec2e8 templates/al2023/runtime/rootfs/etc/systemd/system/:
#  nodeadm-config.service Before=cloud-init.service; nodeadm-run.service (which starts kubelet)
#  After=cloud-final.service with no Requires= on it, so a failed user-data script never stops the join;
#  templates/al2023/runtime/gpu/nvidia-kmod-load.service After=network-online.target, Before=nvidia-persistenced
#  and nvidia-fabricmanager: the driver is not loaded while a boothook runs.
#  systemd.unit(5): a unit with Requires= and After= on a oneshot unit starts only
#  once that unit's process exited 0; its start job fails ("dependency") otherwise.
def user_data_parts(records) -> list:
    parts = []
    for lt in records:
        if lt.type == "aws:ec2/launchTemplate:LaunchTemplate" and "userData" in lt.inputs:
            mime = message_from_string(base64.b64decode(lt.inputs["userData"]).decode())
            assert mime.is_multipart()  # EKS merges only MIME multi-part user data with its bootstrap
            parts += mime.get_payload()
    return parts


def installed(part, tmp_path_factory) -> dict:
    """What a boot does with the user-data part: a boothook is run (under a scratch root, systemctl stubbed) and
    returns what it installed; a plain shell script is the script itself."""
    if part.get_content_type() != "text/cloud-boothook":
        return {"script": part.get_payload(), "units": {}, "calls": []}
    root = tmp_path_factory.mktemp("root")
    bin_dir, log = stub_bin(root)
    run = subprocess.run(["bash", "-c", part.get_payload()], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GPUFLEET_ROOT": str(root),
                              "STUB_STATE": str(root / "state.json"), "STUB_LOG": str(log)})
    assert run.returncode == 0, run.stderr
    units = {str(p.relative_to(root / "etc/systemd/system")): p.read_text()
             for p in (root / "etc/systemd/system").rglob("*") if p.is_file()}
    (script,) = [p for p in root.rglob("*") if p.is_file() and os.access(p, os.X_OK) and p.parent != bin_dir]
    return {"script": script.read_text(), "units": units, "calls": log.read_text().splitlines()}


def stub_bin(root: Path) -> tuple[Path, Path]:
    bin_dir = root / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("nvidia-smi", "systemctl"):
        (bin_dir / name).write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(STUBS.parent)!r})\n"
                                    f"from mig_stubs import main\nmain({name!r})\n")
        (bin_dir / name).chmod(0o755)
    log = root / "calls.log"
    log.touch()
    return bin_dir, log


def boot(script: str, state: dict, tmp_path, fail: str = "") -> tuple[subprocess.CompletedProcess, dict, list[str]]:
    """Runs the partition script as its unit would, on a node emulated by stub nvidia-smi/systemctl (tests/
    mig_stubs.py: MIG mode cannot change while a holder service runs: nvidia-smi's "In use by another client")."""
    bin_dir, log = stub_bin(tmp_path)
    log.write_text("")
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "script.sh").write_text(script)
    run = subprocess.run(["bash", str(tmp_path / "script.sh")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_FAIL": fail,
                              "STUB_STATE": str(tmp_path / "state.json"), "STUB_LOG": str(log)})
    return run, json.loads((tmp_path / "state.json").read_text()), log.read_text().splitlines()


HOLDERS = ["nvidia-persistenced.service", "nvidia-fabricmanager.service"]
FRESH = {"gpus": [{"mode": "Disabled", "instances": []} for _ in range(2)], "running": HOLDERS}


def test_the_partition_runs_as_a_boothook_on_every_boot(stack):
    parts = user_data_parts(stack[2])
    assert parts and {p.get_content_type() for p in parts} == {"text/cloud-boothook"}


def test_the_gpu_holders_are_stopped_before_mig_mode_changes_and_started_again(stack, tmp_path_factory, tmp_path):
    (part, *_) = user_data_parts(stack[2])
    run, state, calls = boot(installed(part, tmp_path_factory)["script"], FRESH, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(g["mode"] == "Enabled" and g["instances"] == ["1g.5gb"] * 7 for g in state["gpus"]), state
    assert sorted(state["running"]) == sorted(HOLDERS)
    first_mig = next(i for i, c in enumerate(calls) if c.startswith("nvidia-smi") and "-mig 1" in c)
    stops = [i for i, c in enumerate(calls) if c.startswith("systemctl stop")]
    assert len(stops) == len(HOLDERS) and max(stops) < first_mig


def test_the_partition_unit_starts_after_every_unit_it_stops(stack, tmp_path_factory, tmp_path):
    # systemd starts units with no ordering between them in parallel: a unit the partition stops but is not After=
    # (set-nvidia-clocks is only After= nvidia-persistenced on the AMI) could still be starting, holding the GPUs,
    # and would not be seen as running, so not started again (review of issue 24).
    (part, *_) = user_data_parts(stack[2])
    setup = installed(part, tmp_path_factory)
    (unit,) = [text for path, text in setup["units"].items() if path.endswith(".service") and "/" not in path]
    after = {u for line in unit.splitlines() if line.startswith("After=") for u in line[len("After="):].split()}
    running = HOLDERS + ["set-nvidia-clocks.service"]
    run, _, calls = boot(setup["script"], {**FRESH, "running": running}, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    stopped = {c.split()[-1] for c in calls if c.startswith("systemctl stop")}
    assert stopped >= set(running) and stopped <= after, (stopped, after)


def test_the_partition_is_idempotent_over_reboots_and_reruns(stack, tmp_path_factory, tmp_path):
    (part, *_) = user_data_parts(stack[2])
    script = installed(part, tmp_path_factory)["script"]
    _, state, _ = boot(script, FRESH, tmp_path)
    rerun, again, calls = boot(script, state, tmp_path)  # run again on the same boot
    assert rerun.returncode == 0 and again == state, rerun.stderr
    # A reboot keeps MIG mode and loses the instances (NVIDIA MIG user guide): made again, mode left alone.
    reboot, after, calls = boot(script, {**state, "gpus": [{**g, "instances": []} for g in state["gpus"]]}, tmp_path)
    assert reboot.returncode == 0 and after == state, reboot.stderr
    assert not any("-mig 1" in c for c in calls)


def test_a_failed_partition_keeps_the_node_from_joining(stack, tmp_path_factory, tmp_path):
    (part, *_) = user_data_parts(stack[2])
    setup = installed(part, tmp_path_factory)
    run, state, _ = boot(setup["script"], FRESH, tmp_path, fail="-cgi")
    assert run.returncode != 0  # the unit fails ...
    assert sorted(state["running"]) == sorted(HOLDERS)  # ... with the GPU services back
    units = setup["units"]
    mine = [n for n in units if n.endswith(".service") and "/" not in n]
    assert len(mine) == 1, units
    unit = mine[0]
    assert "Type=oneshot" in units[unit].splitlines()
    # ... and nothing that starts kubelet runs after a failure (systemd.unit(5): Requires= + After=).
    for joiner in ("nodeadm-run.service", "kubelet.service"):
        lines = [ln for n, text in units.items() if n.startswith(f"{joiner}.d/") for ln in text.splitlines()]
        assert f"Requires={unit}" in lines and f"After={unit}" in lines, (joiner, units)
    # The driver is loaded by nvidia-kmod-load.service, after the boothook (amazon-eks-ami).
    after = [ln.split("=", 1)[1].split() for ln in units[unit].splitlines() if ln.startswith("After=")]
    assert "nvidia-kmod-load.service" in [u for a in after for u in a]


def test_the_boothook_queues_the_partition_on_the_first_boot(stack, tmp_path_factory):
    """On the first boot multi-user.target's jobs are already queued, so enabling the unit is not enough; and a blocking
    start would wait on nvidia-kmod-load, which waits on network-online.target, which waits on the running boothook."""
    (part, *_) = user_data_parts(stack[2])
    setup = installed(part, tmp_path_factory)
    unit = next(n for n in setup["units"] if n.endswith(".service") and "/" not in n)
    calls = setup["calls"]
    assert f"systemctl start --no-block {unit}" in calls
    assert calls.index("systemctl daemon-reload") < calls.index(f"systemctl start --no-block {unit}")

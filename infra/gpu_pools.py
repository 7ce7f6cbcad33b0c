"""GPU node groups from the plan: spot diversified over the instance types of one GPU class, on-demand, and reserved
capacity as open on-demand capacity reservations (priced as planned under the Savings Plans :func:`commitments`
names); plus the NVIDIA device plugin and the Cluster Autoscaler.

Each group is labelled ``gpufleet.io/gpu`` and ``gpufleet.io/capacity``, tainted ``nvidia.com/gpu=true:NoSchedule``
and runs the EKS NVIDIA AMI. Sizes come from the plan: what it buys is the minimum and desired size, and the
headroom to the HPA's maximum replicas goes on the cheapest elastic group of that GPU (spot if the plan uses spot,
else on-demand). Spot groups are EKS managed node groups, so Capacity Rebalancing and draining on a rebalance
recommendation or interruption notice come with them (no separate termination handler).
"""
from __future__ import annotations

import base64

import json
import math
from collections import defaultdict
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cluster import Cluster, launch_template, nodegroup_name
from infra.iam import irsa_trust, role
from infra.network import Network
from infra.settings import StackSettings
from infra.versions import calendar
from gpufleet.contracts.plan import Plan

GPU_LABEL = "gpufleet.io/gpu"
CAPACITY_LABEL = "gpufleet.io/capacity"
# Cluster Autoscaler's AWS provider knows a GPU node by this label (its GPULabel): without it, a node still waiting
# for the device plugin looks like one without GPUs, and the autoscaler adds more. Whole-GPU groups only: CA 1.35
# (kubernetes/autoscaler@cluster-autoscaler-1.35.0, processors/customresources/gpu_processor.go,
# FilterOutNodesWithUnreadyResources, with utils/gpu/gpu.go NodeHasGpuAllocatable) holds a node with this label and no
# non-zero nvidia.com/gpu (or other vendor GPU) allocatable as unready, for ever; a partitioned node advertises only
# nvidia.com/mig-* (k8s-device-plugin v0.17.0 internal/rm/device_map.go skips MIG-enabled GPUs), and past
# --max-total-unready-percentage the autoscaler stops scaling the whole cluster. Partitioned groups tell it their
# slices through node-template resources tags instead.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# A spot group that cannot get capacity is given up for the next priority after this (the default is 15 min).
MAX_NODE_PROVISION_TIME = "5m"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
# The EKS-optimized AL2023 AMI with NVIDIA drivers, per CPU architecture (EKS AMI types).
NVIDIA_AMI = {"x86_64": "AL2023_x86_64_NVIDIA", "arm64": "AL2023_ARM_64_NVIDIA"}
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
# The node label the GPU Operator's MIG manager reads (mig-parted's configuration name); set on partitioned groups.
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIME_BOUNDARY = "==GPUFLEET=="
# The MIG boot: a cloud-init boothook (run on every boot, in cloud-init's init stage: canonical/cloud-init 22.2.2
# cloudinit/handlers/boot_hook.py, PER_ALWAYS) installs a oneshot unit that partitions the GPUs once the driver is
# loaded, and makes nodeadm-run (which starts kubelet) and kubelet require it: a failed partition keeps the node out of
# the cluster instead of joining with no slices. The boothook cannot partition by itself: on the AL2023 NVIDIA AMI
# (awslabs/amazon-eks-ami@81fec2e8, templates/al2023/runtime/gpu/nvidia-kmod-load.service) the driver is loaded after
# network-online.target, which cloud-init's init stage precedes; and a failing boothook is only logged. A
# text/x-shellscript part would run once per instance in cloud-final, and nodeadm-run.service is only After=
# cloud-final.service (no Requires=), so kubelet joined even when it failed.
MIG_UNIT = "gpufleet-mig.service"
MIG_SCRIPT = "/usr/local/sbin/gpufleet-mig"
# Services that hold the GPUs open, so MIG mode cannot change under them (nvidia-smi: "In use by another client"); on
# the AMI (templates/al2023/provisioners/install-nvidia-driver.sh enables both). NVIDIA mig-parted's systemd unit
# (NVIDIA/mig-parted deployments/systemd/nvidia-mig-manager.service) likewise runs After= them and stops them first.
MIG_HOLDERS = ("nvidia-persistenced.service", "nvidia-fabricmanager.service")
# Requires= nvidia-persistenced (templates/al2023/runtime/gpu/set-nvidia-clocks.service): stopping the daemon stops it,
# so it is stopped first and started again with the holders.
MIG_DEPENDENTS = ("set-nvidia-clocks.service",)
# What starts kubelet on AL2023 (nodeadm-run.service: nodeadm init restarts kubelet.service; kubelet is not enabled).
NODE_JOINERS = ("nodeadm-run.service", "kubelet.service")


# EC2 Instance Savings Plans, the commitment that prices a reserved pool as the catalog does (its reserved figures are
# no-upfront estimates); terms in seconds as DescribeSavingsPlansOfferings states them.
SAVINGS_PLAN_TERM_S = {"reserved-1yr": 31_536_000, "reserved-3yr": 94_608_000}
SAVINGS_PLAN_PAYMENT = "No Upfront"
CANARY_REPLICAS = 1


def capacity_group(capacity_type: str) -> str:
    return "reserved" if capacity_type.startswith("reserved") else capacity_type


@dataclass(frozen=True)
class Commitment:
    """An EC2 Instance Savings Plan that gives a plan's reserved pools the price the planner assumed: one per
    instance family and term, committing the pools' $/h at the reserved rate. Without it the stack's capacity
    reservations bill at the on-demand rate."""

    instance_family: str
    term: str
    region: str
    usd_per_hour: float

    def offering_query(self) -> dict:
        """DescribeSavingsPlansOfferings parameters that find this plan's offering."""
        return {"productType": "EC2", "planTypes": ["EC2Instance"], "paymentOptions": [SAVINGS_PLAN_PAYMENT],
                "durations": [SAVINGS_PLAN_TERM_S[self.term]], "currencies": ["USD"],
                "filters": [{"name": "region", "values": [self.region]},
                            {"name": "instanceFamily", "values": [self.instance_family]}]}


def gpu_resource(pool) -> str:
    """The extended resource one replica of this pool takes: a whole GPU, or its MIG slice."""
    return f"nvidia.com/mig-{pool.mig_profile}" if pool.mig_partition else "nvidia.com/gpu"


def mig_script(pool) -> str:
    """The partition, run by MIG_UNIT on every boot: stop the GPU holders, enable MIG mode where it is not (it survives
    a reboot; a GPU left pending is reset), make the plan's instances afresh (they do not survive one), start the
    holders again whatever happened, and exit non-zero on any failure. Idempotent: a rerun ends in the same state."""
    profiles = ",".join([pool.mig_profile] * pool.mig_slices_per_gpu)
    return "\n".join([
        "#!/bin/bash",
        f"# {pool.mig_partition}: {pool.mig_slices_per_gpu} x {pool.mig_profile} on every GPU (gpufleet plan)",
        "set -euo pipefail",
        "stopped=()",
        'restart() { for s in "${stopped[@]}"; do systemctl start "$s" || echo "gpufleet-mig: $s did not start" >&2;'
        " done; }",
        "trap restart EXIT",
        f"for s in {' '.join(MIG_DEPENDENTS + MIG_HOLDERS)}; do",
        '  if systemctl is-active --quiet "$s"; then systemctl stop "$s"; stopped+=("$s"); fi',
        "done",
        "gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader)",
        '[ -n "$gpus" ] || { echo "gpufleet-mig: no GPUs found" >&2; exit 1; }',
        'mode() { nvidia-smi -i "$1" --query-gpu=mig.mode.current --format=csv,noheader; }',
        'off=""',
        'for gpu in $gpus; do [ "$(mode "$gpu")" = Enabled ] || off="$off $gpu"; done',
        'if [ -n "$off" ]; then',
        "  nvidia-smi -mig 1",
        "  for gpu in $off; do",
        '    [ "$(mode "$gpu")" = Enabled ] || nvidia-smi -r -i "$gpu"',
        '    [ "$(mode "$gpu")" = Enabled ] || { echo "gpufleet-mig: MIG mode not enabled on GPU $gpu" >&2; exit 1; }',
        "  done",
        "fi",
        "for gpu in $gpus; do",
        '  nvidia-smi mig -i "$gpu" -dci >/dev/null 2>&1 || true',
        '  nvidia-smi mig -i "$gpu" -dgi >/dev/null 2>&1 || true',
        f'  nvidia-smi mig -i "$gpu" -cgi {profiles} -C',
        "done",
        f'echo "gpufleet-mig: {pool.mig_partition} made on GPUs" $gpus', ""])


def mig_boot(pool) -> dict:
    """Launch-template arguments that partition every GPU of a node on every boot, before kubelet starts, so the device
    plugin finds the slices, or keep the node from joining (None or an unpartitioned pool: nothing). EKS merges a MIME
    multi-part user data with its own bootstrap (on AL2023, its NodeConfig part for nodeadm). nvidia-smi is on the EKS
    NVIDIA AMIs; the partition is mig-parted's ``all-<profile>`` done with it. See MIG_UNIT for the order of boot."""
    if pool is None or not pool.mig_partition:
        return {}
    unit = "\n".join([
        "[Unit]",
        f"Description=gpufleet: MIG {pool.mig_partition} on every GPU before the node joins",
        "Wants=nvidia-kmod-load.service",
        # After every unit the script stops: set-nvidia-clocks is only After= nvidia-persistenced upstream, so it would
        # otherwise run beside the partition (its nvidia-smi calls hold the GPUs; stopped while still activating, it
        # would not be started again).
        f"After=nvidia-kmod-load.service {' '.join(MIG_HOLDERS + MIG_DEPENDENTS)}",
        f"Before={' '.join(NODE_JOINERS)}",
        "[Service]",
        # oneshot: the unit counts as started only once the script exited 0, which is what Requires= waits on;
        # RemainAfterExit: a later kubelet restart does not partition again under running pods.
        "Type=oneshot", "RemainAfterExit=yes", "TimeoutStartSec=600", f"ExecStart={MIG_SCRIPT}",
        "StandardOutput=journal+console", "StandardError=journal+console",
        "[Install]", "WantedBy=multi-user.target", ""])
    gate = f"[Unit]\nRequires={MIG_UNIT}\nAfter={MIG_UNIT}\n"
    files = [(MIG_SCRIPT, mig_script(pool)), (f"/etc/systemd/system/{MIG_UNIT}", unit)] + [
        (f"/etc/systemd/system/{j}.d/50-gpufleet-mig.conf", gate) for j in NODE_JOINERS]
    lines = ["#!/bin/bash", "# gpufleet: install the MIG partition unit (every boot; rewriting the same files)",
             "set -euo pipefail", 'root="${GPUFLEET_ROOT:-}"  # an install root for tests; empty on a node']
    for path, text in files:
        lines += [f'mkdir -p "$root{path.rsplit("/", 1)[0]}"', f"cat > \"$root{path}\" <<'GPUFLEET_EOF'",
                  text.rstrip("\n"), "GPUFLEET_EOF"]
    lines += [f'chmod 0755 "$root{MIG_SCRIPT}"', "systemctl daemon-reload", f"systemctl enable {MIG_UNIT}",
              # The first boot's jobs are already queued, so enabling is not enough; --no-block, as the unit waits on
              # nvidia-kmod-load, which waits on network-online.target, which waits on this boothook's stage.
              f"systemctl start --no-block {MIG_UNIT}", ""]
    boothook = "\n".join(lines)
    mime = (f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n\n--{MIME_BOUNDARY}\n'
            f'Content-Type: text/cloud-boothook; charset="us-ascii"\n\n{boothook}\n--{MIME_BOUNDARY}--\n')
    return {"user_data": base64.b64encode(mime.encode()).decode()}


def canary_gpu(plan: Plan) -> str:
    """The GPU type the canary Deployment (infra.triton) runs on: that of the most-routed deployment."""
    return max(plan.deployments, key=lambda d: d.routing_weight).gpu


def canary_replicas(settings: StackSettings) -> int:
    """The canary's pods: fixed (no HPA), beside the HPAs' maximum, so the node groups' headroom counts them."""
    return CANARY_REPLICAS if settings.canary_image and settings.canary_weight else 0


def commitments(plan: Plan, region: str) -> list[Commitment]:
    usd: dict[tuple[str, str], float] = defaultdict(float)
    for p in plan.pools:
        if p.count > 0 and p.capacity_type in SAVINGS_PLAN_TERM_S:
            usd[(p.instance_type.split(".")[0], p.capacity_type)] += p.usd_per_hour
    return [Commitment(family, term, region, round(v, 3)) for (family, term), v in sorted(usd.items())]


def _only_offering(found, c: Commitment) -> str:
    if not found:
        raise pulumi.RunError(f"no EC2 Instance Savings Plan offering for {c.instance_family} {c.term} "
                              f"({SAVINGS_PLAN_PAYMENT}) in {c.region}: buy the commitment by hand or unset "
                              "gpufleet:purchaseCommitments")
    return found[0].offering_id


class GpuNodePools(pulumi.ComponentResource):
    """``groups``: {(gpu, capacity group, pool): NodeGroup}, pool being the instance type and term of a reserved
    group and '' otherwise; ``labels``: the (gpu, capacity) label pairs that exist."""

    def __init__(self, name: str, settings: StackSettings, cluster: Cluster, network: Network, plan: Plan,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:gpu:GpuNodePools", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        by_type = {(p.instance_type, p.mig_partition): p for p in plan.pools}
        partition_of = {p.gpu: p for p in plan.pools if p.mig_partition}  # a slice type has one partition
        subnets = [s.id for s in network.private_subnets]
        asg_tags = {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{settings.name}": "owned"}
        self.groups: dict[tuple[str, str, str], aws.eks.NodeGroup] = {}
        self.labels: set[tuple[str, str]] = set()
        self.reservations: list[aws.ec2.CapacityReservation] = []

        # A day plan (planner recommend --qps-curve): each pool's node group runs from the day's fewest instances
        # to its most; the plan's counts are the peak hour's. A point plan holds its counts all day.
        # Keyed with the MIG partition too: a day plan may hold one instance type whole and partitioned.
        day = {(d.instance_type, d.capacity_type, d.mig_partition): (d.min_count, d.max_count)
               for d in plan.day.pools} if plan.day is not None else {}

        def low(p) -> int:
            return day.get((p.instance_type, p.capacity_type, p.mig_partition), (p.count, p.count))[0]

        def high(p) -> int:
            return day.get((p.instance_type, p.capacity_type, p.mig_partition), (p.count, p.count))[1]

        pools = defaultdict(list)
        for p in plan.pools:
            if high(p) > 0:
                pools[(p.gpu, capacity_group(p.capacity_type))].append(p)
        headroom = {}
        most = defaultdict(int)  # GPU type -> the HPAs' maximum replicas, a shared Deployment's once
        for unit in plan.units():
            most[unit[0].gpu] += unit[0].autoscaling.max_replicas
        if canary_replicas(settings):  # a GPU (or slice) each, at the HPAs' maximum too
            most[canary_gpu(plan)] += canary_replicas(settings)
        for gpu, top in most.items():
            committed = sum(high(p) * p.gpus_per_instance for (g, _), ps in pools.items() if g == gpu for p in ps)
            gpus_per = next(p.gpus_per_instance for (g, _), ps in pools.items() if g == gpu for p in ps)
            headroom[gpu] = max(0, math.ceil((top - committed) / gpus_per))

        def group(gpu: str, cap: str, instance_types: list[str], size: int, max_size: int, subnet_ids, lt,
                  suffix: str = ""):
            sliced = partition_of.get(gpu)
            first = by_type[(instance_types[0], sliced.mig_partition if sliced else None)]
            gpus = first.gpus_per_instance
            labels = {GPU_LABEL: gpu, CAPACITY_LABEL: cap, "nvidia.com/gpu.present": "true"}
            if sliced:
                labels[MIG_CONFIG_LABEL] = sliced.mig_partition
            else:  # never on a partitioned node (see ACCELERATOR_LABEL): the autoscaler would hold it unready
                labels[ACCELERATOR_LABEL] = f"nvidia-{gpu.lower()}"
            template_tags = {f"k8s.io/cluster-autoscaler/node-template/label/{k}": v for k, v in labels.items()}
            template_tags["k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"] = "true:NoSchedule"
            # What a new node offers, so the autoscaler knows a pending pod would fit: GPUs, or slices.
            template_tags[f"k8s.io/cluster-autoscaler/node-template/resources/{gpu_resource(first)}"] = str(gpus)
            logical = f"{name}-{gpu.lower()}-{cap}{suffix}"
            ng = aws.eks.NodeGroup(
                logical, node_group_name=nodegroup_name(logical), cluster_name=cluster.eks.name,
                node_role_arn=cluster.node_role.arn, subnet_ids=subnet_ids,
                capacity_type="SPOT" if cap == "spot" else "ON_DEMAND", instance_types=instance_types,
                ami_type=NVIDIA_AMI[first.architecture], labels=labels, taints=[GPU_TAINT],
                launch_template={"id": lt.id, "version": lt.latest_version.apply(str)},
                scaling_config={"min_size": size, "desired_size": size, "max_size": max(max_size, 1)},
                update_config={"max_unavailable": 1}, tags={**asg_tags, **template_tags},
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["scalingConfig.desiredSize"]))
            self.labels.add((gpu, cap))
            return ng

        for gpu in sorted({g for g, _ in pools}):
            elastic = "spot" if (gpu, "spot") in pools else "on-demand"
            for cap in ("reserved", "on-demand", "spot"):
                ps = pools.get((gpu, cap), [])
                if not ps and (cap != elastic or headroom.get(gpu, 0) == 0):
                    continue  # (an elastic group with nothing bought still exists, at min 0, for the headroom)
                extra = headroom.get(gpu, 0) if cap == elastic else 0
                if cap == "reserved":
                    for p in ps:
                        az = settings.availability_zones[0]
                        # One reservation per type and term: a plan may hold 1-yr and 3-yr of one type.
                        pool = f"{p.instance_type}-{p.capacity_type}" + (f"-{p.mig_profile}".replace(".", "-")
                                                                          if p.mig_partition else "")
                        # Open: the group's instances run in it while it has room, and the extra nodes EKS
                        # launches for a rolling update start as plain on-demand instead of being refused.
                        cr = aws.ec2.CapacityReservation(
                            f"{name}-{pool}-reservation", instance_type=p.instance_type,
                            instance_platform="Linux/UNIX", availability_zone=az, instance_count=p.count,
                            instance_match_criteria="open", end_date_type="unlimited",
                            tags={"gpufleet:term": p.capacity_type}, opts=child)
                        self.reservations.append(cr)
                        lt = launch_template(f"{name}-{pool}", 200, child,
                                             capacity_reservation_specification={
                                                 "capacity_reservation_preference": "open"}, **mig_boot(p))
                        # A reservation lives in one AZ, so its node group does too.
                        self.groups[(gpu, cap, pool)] = group(gpu, cap, [p.instance_type], p.count, p.count,
                                                              [network.private_subnets[0].id], lt,
                                                              f"-{pool.removeprefix(p.instance_type + '-reserved-')}"
                                                              f"-{p.instance_type}")
                    continue
                planned = sorted({p.instance_type for p in ps}) or sorted(
                    {p.instance_type for (g, _), qs in pools.items() if g == gpu for p in qs})
                if cap == "spot":
                    # Diversify over the catalog's types with this GPU and GPU count (the plan lists them): more
                    # spot pools to draw from. The planned type goes first, as the template's facts come from it.
                    others = [t for p in ps for t in p.spot_instance_types if t not in planned]
                    types = planned + sorted(set(others), key=others.index)
                else:
                    types = planned
                lt = launch_template(f"{name}-{gpu.lower()}-{cap}", 200, child, **mig_boot(partition_of.get(gpu)))
                self.groups[(gpu, cap, "")] = group(gpu, cap, types, sum(low(p) for p in ps),
                                                    sum(high(p) for p in ps) + extra, subnets, lt)

        self.commitments = commitments(plan, settings.region)
        if settings.purchase_commitments:
            self._savings_plans(name)
        elif self.commitments:
            pulumi.log.warn("the plan prices its reserved pools under Savings Plans this stack does not buy (set "
                            "gpufleet:purchaseCommitments, or buy them): " + "; ".join(
                                f"{c.instance_family} {c.term} ${c.usd_per_hour:g}/h" for c in self.commitments))
        self._device_plugin(name, cluster, mig=bool(partition_of))
        self._cluster_autoscaler(name, settings, cluster)
        self.register_outputs({})

    def _savings_plans(self, name: str) -> None:
        """Buy each commitment. A Savings Plan cannot be cancelled once active, so Pulumi never deletes one: it is
        protected and retained if the stack goes."""
        for c in self.commitments:
            q = c.offering_query()
            offering = aws.savingsplans.get_offerings_output(
                product_type=q["productType"], plan_types=q["planTypes"], payment_options=q["paymentOptions"],
                durations=q["durations"], currencies=q["currencies"], filters=q["filters"],
                opts=pulumi.InvokeOptions(parent=self))
            aws.savingsplans.SavingsPlan(
                f"{name}-{c.instance_family}-{c.term}", commitment=f"{c.usd_per_hour:.3f}",
                savings_plan_offering_id=offering.offerings.apply(lambda found, c=c: _only_offering(found, c)),
                opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True))

    def _device_plugin(self, name: str, cluster: Cluster, mig: bool = False) -> None:
        """The NVIDIA device plugin DaemonSet, on GPU nodes only. With MIG pools, the mixed strategy: each slice is
        advertised as nvidia.com/mig-<profile>, whole GPUs as nvidia.com/gpu; and what NVIDIA's chart sets whenever
        migStrategy is not none (NVIDIA/k8s-device-plugin@v0.17.0 deployments/helm/nvidia-device-plugin/templates/
        _helpers.tpl 91-105 and 127-159: capabilities add SYS_ADMIN instead of drop ALL, and no
        allowPrivilegeEscalation: false, which protects nothing once a process holds CAP_SYS_ADMIN; daemonset-device-plugin.yml 184-187 with _helpers.tpl 269:
        NVIDIA_MIG_MONITOR_DEVICES=all, the container runtime's cue to mount the MIG monitor capability). Without
        them the plugin cannot enumerate the slices. With MIG it also fails on an init error (the plugin's own
        default, cmd/nvidia-device-plugin/main.go) instead of blocking: a partitioned node carries no GPU label the
        autoscaler would flag (see ACCELERATOR_LABEL), so a crash-looping plugin pod is the signal left. One DaemonSet
        serves every GPU node, so in a stack with a partitioned pool its whole-GPU nodes run these settings too (the
        mixed strategy advertises their GPUs as nvidia.com/gpu); a stack without one keeps the static manifest's
        false (the autoscaler holds a whole-GPU node unready while it has no GPUs)."""
        opts = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = {"app.kubernetes.io/name": "nvidia-device-plugin"}
        k8s.apps.v1.DaemonSet(f"{name}-nvidia-device-plugin", metadata={
            "name": "nvidia-device-plugin", "namespace": "kube-system", "labels": labels}, spec={
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": labels}, "spec": {
                "priorityClassName": "system-node-critical",
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{
                    "name": "nvidia-device-plugin", "image": DEVICE_PLUGIN_IMAGE,
                    "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "true" if mig else "false"}]
                    + ([{"name": "MIG_STRATEGY", "value": "mixed"},
                        {"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"}] if mig else []),
                    "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}} if mig else
                    {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                    "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}]}],
                "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}]}}},
            opts=opts)

    def _cluster_autoscaler(self, name: str, settings: StackSettings, cluster: Cluster) -> None:
        """Cluster Autoscaler over the managed node groups (auto-discovered by tag), priority expander: spot first
        for scale-out, on-demand next; reserved groups are fixed-size."""
        opts = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        ns, sa = "kube-system", "cluster-autoscaler"
        ca_role = role(f"{name}-cluster-autoscaler", irsa_trust(cluster.oidc, ns, sa), [],
                       pulumi.ResourceOptions(parent=self))
        aws.iam.RolePolicy(f"{name}-cluster-autoscaler", role=ca_role.id, policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Resource": "*", "Action": [
                    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup"]},
                {"Effect": "Allow", "Resource": "*",
                 "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                 "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{settings.name}":
                                                "owned"}}}]}),
            opts=pulumi.ResourceOptions(parent=self))
        labels = {"app.kubernetes.io/name": "cluster-autoscaler"}
        k8s.core.v1.ServiceAccount(f"{name}-ca-sa", metadata={
            "name": sa, "namespace": ns, "labels": labels,
            "annotations": {"eks.amazonaws.com/role-arn": ca_role.arn}}, opts=opts)
        k8s.rbac.v1.ClusterRole(f"{name}-ca", metadata={"name": "cluster-autoscaler", "labels": labels}, rules=[
            {"apiGroups": [""], "resources": ["events", "endpoints"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["watch", "list", "get", "update"]},
            {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "replicationcontrollers",
                                               "persistentvolumeclaims", "persistentvolumes"],
             "verbs": ["watch", "list", "get"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets", "replicasets", "statefulsets"],
             "verbs": ["watch", "list", "get"]},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["watch", "list", "get"]},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["watch", "list"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csinodes", "csidrivers",
                                                             "csistoragecapacities", "volumeattachments"],
             "verbs": ["watch", "list", "get"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["watch", "list", "get", "create"]},
            # its status report, cluster-autoscaler-status, rewritten every loop
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-autoscaler-status"],
             "verbs": ["update", "patch", "delete"]}], opts=opts)
        k8s.rbac.v1.ClusterRoleBinding(f"{name}-ca", metadata={"name": "cluster-autoscaler", "labels": labels},
                                       role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                 "name": "cluster-autoscaler"},
                                       subjects=[{"kind": "ServiceAccount", "name": sa, "namespace": ns}], opts=opts)
        k8s.core.v1.ConfigMap(f"{name}-ca-priority", metadata={
            "name": "cluster-autoscaler-priority-expander", "namespace": ns, "labels": labels}, data={
            "priorities": "30:\n  - .*-spot.*\n20:\n  - .*-on-demand.*\n10:\n  - .*\n"}, opts=opts)
        k8s.apps.v1.Deployment(f"{name}-cluster-autoscaler", metadata={
            "name": "cluster-autoscaler", "namespace": ns, "labels": labels}, spec={
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": sa, "priorityClassName": "system-cluster-critical",
                "nodeSelector": {"gpufleet.io/pool": "system"},
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    # Its minor matches the cluster's (the autoscaler's compatibility rule).
                    "name": "cluster-autoscaler",
                    "image": calendar()[settings.kubernetes_version].cluster_autoscaler_image,
                    "command": ["./cluster-autoscaler", "--cloud-provider=aws", "--expander=priority",
                                "--balance-similar-node-groups", "--skip-nodes-with-system-pods=false",
                                f"--max-node-provision-time={MAX_NODE_PROVISION_TIME}",
                                "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
                                f"k8s.io/cluster-autoscaler/{settings.name}"],
                    "resources": {"requests": {"cpu": "100m", "memory": "300Mi"}, "limits": {"memory": "600Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}}]}}},
            # Pulumi awaits a Deployment until its pod is Ready (10 min, pulumi-kubernetes await/deployment.go): the
            # pod runs on the system nodes and needs the CNI, so the clock starts once they exist, not with the
            # cluster (tests/test_infra_awaits.py).
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=cluster.ready))

"""Policy rules, written against the shape of ``pulumi_policy``'s validation arguments.

A resource rule gets ``args`` with ``resource_type``, ``name`` and ``props`` (the provider's camelCase inputs) and a
``report(message)`` callable; a stack rule gets ``args.resources``, a list of such resources. They import nothing
from ``pulumi_policy``, so they are unit-tested directly (``pulumi_policy`` pins a protobuf this project's Triton
client cannot load); ``infra/policy/__main__.py`` wraps them into the pack the Pulumi CLI runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"  # a MIG slice, as the device plugin's mixed strategy advertises it
LB_ROLE_TAG = ("gpufleet:role", "load-balancer")
# The bucket ALB access logs go to (and its companions, named alike): the one bucket allowed SSE-S3 instead of
# SSE-KMS, because ELB delivers access logs to no other ("The only server-side encryption option that's supported is
# Amazon S3-managed keys (SSE-S3)": ELB user guide, "Enable access logs for your Application Load Balancer").
ACCESS_LOGS_BUCKET_SUFFIX = "-alb-logs"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet")


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    validate: Callable
    stack: bool = False  # a stack rule sees every resource at once


def _pod_spec(props: dict) -> dict:
    return ((props.get("spec") or {}).get("template") or {}).get("spec") or {}


def _is_gpu(resource: str) -> bool:
    return resource == GPU_RESOURCE or resource.startswith(MIG_RESOURCE_PREFIX)


def _wants_gpu(pod: dict) -> bool:
    if any(k.startswith("gpufleet.io/gpu") for k in (pod.get("nodeSelector") or {})):
        return True
    for c in pod.get("containers") or []:
        res = c.get("resources") or {}
        if any(_is_gpu(k) for k in [*(res.get("requests") or {}), *(res.get("limits") or {})]):
            return True
    return False


# --- resource rules ----------------------------------------------------------------------------------------------

def encryption_at_rest(args, report) -> None:
    t, p = args.resource_type, args.props
    if t == "aws:ec2/launchTemplate:LaunchTemplate":
        for bd in p.get("blockDeviceMappings") or []:
            if str((bd.get("ebs") or {}).get("encrypted")).lower() != "true":
                report(f"{args.name}: EBS volume {bd.get('deviceName')} is not encrypted")
    elif t == "aws:ebs/volume:Volume" and not p.get("encrypted"):
        report(f"{args.name}: EBS volume is not encrypted")
    elif t == "aws:eks/cluster:Cluster":
        cfg = p.get("encryptionConfig") or {}
        if "secrets" not in (cfg.get("resources") or []) or not (cfg.get("provider") or {}).get("keyArn"):
            report(f"{args.name}: Kubernetes secrets are not encrypted with a KMS key")
    elif t == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        for rule in p.get("rules") or []:
            sse = rule.get("applyServerSideEncryptionByDefault") or {}
            if sse.get("sseAlgorithm") == "AES256" and args.name.endswith(ACCESS_LOGS_BUCKET_SUFFIX):
                continue
            if sse.get("sseAlgorithm") not in ("aws:kms", "aws:kms:dsse"):
                report(f"{args.name}: bucket encryption is {sse.get('sseAlgorithm')}, not SSE-KMS")
    elif t == "kubernetes:storage.k8s.io/v1:StorageClass" and p.get("provisioner") == "ebs.csi.aws.com":
        if str((p.get("parameters") or {}).get("encrypted")).lower() != "true":
            report(f"{args.name}: EBS StorageClass does not encrypt its volumes")


def imdsv2_required(args, report) -> None:
    if args.resource_type == "aws:ec2/launchTemplate:LaunchTemplate":
        meta = args.props.get("metadataOptions") or {}
        if meta.get("httpTokens") != "required":
            report(f"{args.name}: instance metadata allows IMDSv1 (httpTokens must be 'required')")
    elif args.resource_type == "aws:ec2/instance:Instance":
        if (args.props.get("metadataOptions") or {}).get("httpTokens") != "required":
            report(f"{args.name}: instance metadata allows IMDSv1")


def no_open_ingress(args, report) -> None:
    """0.0.0.0/0 (or ::/0) ingress only on security groups tagged as the load balancer's."""
    t, p = args.resource_type, args.props
    tags = p.get("tags") or {}
    is_lb = tags.get(LB_ROLE_TAG[0]) == LB_ROLE_TAG[1]
    rules = []
    if t == "aws:ec2/securityGroup:SecurityGroup":
        rules = p.get("ingress") or []
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule" and p.get("type") == "ingress":
        rules = [p]
    elif t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        rules = [{"cidrBlocks": [p.get("cidrIpv4")], "ipv6CidrBlocks": [p.get("cidrIpv6")]}]
    for r in rules:
        if ("0.0.0.0/0" in (r.get("cidrBlocks") or []) or "::/0" in (r.get("ipv6CidrBlocks") or [])) and not is_lb:
            report(f"{args.name}: ingress from anywhere on a security group that is not the load balancer's")


def gpu_pods_have_limits_and_tolerations(args, report) -> None:
    if args.resource_type not in WORKLOADS:
        return
    pod = _pod_spec(args.props)
    if not _wants_gpu(pod) or args.resource_type == "kubernetes:apps/v1:DaemonSet":
        return
    for c in pod.get("containers") or []:
        if not any(_is_gpu(k) for k in ((c.get("resources") or {}).get("limits") or {})):
            report(f"{args.name}: container {c.get('name')} runs on GPU nodes without a {GPU_RESOURCE} (or MIG "
                   "slice) limit")
    if not any(t.get("key") == GPU_RESOURCE for t in pod.get("tolerations") or []):
        report(f"{args.name}: GPU pod has no toleration for the {GPU_RESOURCE} taint")


# --- stack rules -------------------------------------------------------------------------------------------------

def _of(resources, resource_type: str):
    return [r for r in resources if r.resource_type == resource_type]


def hpa_metric_is_served(args, report) -> None:
    served = set()
    for rel in _of(args.resources, "kubernetes:helm.sh/v3:Release"):
        if rel.props.get("chart") == "prometheus-adapter":
            for rule in ((rel.props.get("values") or {}).get("rules") or {}).get("custom") or []:
                served.add((rule.get("name") or {}).get("as"))
    for hpa in _of(args.resources, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"):
        for m in (hpa.props.get("spec") or {}).get("metrics") or []:
            if m.get("type") in ("Pods", "Object"):
                name = ((m.get(m["type"].lower()) or {}).get("metric") or {}).get("name")
                if name not in served:
                    report(f"{hpa.name}: HPA metric {name!r} is not served by any prometheus-adapter rule")


def pdb_exists(args, report) -> None:
    """A GPU Deployment that keeps two or more replicas has a PDB letting at most one go at a time; one that may run a
    single replica has none (a PDB there either blocks every node drain or allows the outage anyway)."""
    pdbs = [((p.props.get("metadata") or {}).get("namespace"),
             ((p.props.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}, p.props.get("spec") or {})
            for p in _of(args.resources, "kubernetes:policy/v1:PodDisruptionBudget")]
    floors = {((h.props.get("metadata") or {}).get("namespace"),
               ((h.props.get("spec") or {}).get("scaleTargetRef") or {}).get("name")):
              int((h.props.get("spec") or {}).get("minReplicas") or 1)
              for h in _of(args.resources, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")}
    for d in _of(args.resources, "kubernetes:apps/v1:Deployment"):
        pod = _pod_spec(d.props)
        if not _wants_gpu(pod):
            continue  # serving workloads are on GPUs; cluster add-ons tolerate disruption
        meta = d.props.get("metadata") or {}
        ns = meta.get("namespace")
        floor = floors.get((ns, meta.get("name")), int((d.props.get("spec") or {}).get("replicas") or 1))
        labels = (((d.props.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        mine = [spec for pns, sel, spec in pdbs if pns == ns and sel and all(labels.get(k) == v
                                                                              for k, v in sel.items())]
        if floor >= 2 and not mine:
            report(f"{d.name}: keeps {floor} replicas but no PodDisruptionBudget selects its pods")
        if floor < 2 and mine:
            report(f"{d.name}: may run one replica, and a PodDisruptionBudget over it blocks node drains or allows "
                   "the outage")


def on_demand_floor_with_spot(args, report) -> None:
    """Per GPU type: weighted routing pins each type's share of traffic to that type, so losing its spot capacity
    loses the share unless an on-demand or reserved group of the same type keeps nodes."""
    groups = [g for g in _of(args.resources, "aws:eks/nodeGroup:NodeGroup")
              if "gpufleet.io/gpu" in (g.props.get("labels") or {})]
    for gpu in sorted({g.props["labels"]["gpufleet.io/gpu"] for g in groups}):
        mine = [g for g in groups if g.props["labels"]["gpufleet.io/gpu"] == gpu]
        if not any(g.props.get("capacityType") == "SPOT" for g in mine):
            continue
        floor = sum(int((g.props.get("scalingConfig") or {}).get("minSize") or 0)
                    for g in mine if g.props.get("capacityType") != "SPOT")
        if floor < 1:
            report(f"{gpu}: spot node groups exist but no on-demand or reserved {gpu} group keeps a minimum size >= 1")


def node_selectors_match_node_groups(args, report) -> None:
    label_sets = [g.props.get("labels") or {} for g in _of(args.resources, "aws:eks/nodeGroup:NodeGroup")]
    for w in [r for r in args.resources if r.resource_type in WORKLOADS]:
        selector = _pod_spec(w.props).get("nodeSelector") or {}
        if not selector or all(k.startswith("nvidia.com/") for k in selector):
            continue  # nvidia.com/* labels are set on the nodes by NVIDIA's components, not by node groups
        wanted = {k: v for k, v in selector.items() if not k.startswith("nvidia.com/")}
        if not any(all(ls.get(k) == v for k, v in wanted.items()) for ls in label_sets):
            report(f"{w.name}: nodeSelector {wanted} matches no node group's labels")


def s3_public_access_blocked(args, report) -> None:
    """Each bucket's PublicAccessBlock and SSE configuration are found by the bucket's resource name, which the
    stack gives its companions: a bucket's id is unknown at preview time, so it cannot link them there."""
    blocked = {b.name for b in _of(args.resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
               if all(b.props.get(k) for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                                 "restrictPublicBuckets"))}
    encrypted = {e.name for e in _of(
        args.resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")}
    for bucket in _of(args.resources, "aws:s3/bucket:Bucket"):
        if bucket.name not in blocked:
            report(f"{bucket.name}: public access is not blocked")
        if bucket.name not in encrypted:
            report(f"{bucket.name}: no server-side encryption configuration")


RULES = [
    Rule("encryption-at-rest", "EBS, EKS secrets, S3 and EBS StorageClasses are encrypted.", encryption_at_rest),
    Rule("imdsv2-required", "Launch templates require IMDSv2 tokens.", imdsv2_required),
    Rule("no-open-ingress", "No 0.0.0.0/0 ingress except on the load balancer's security group.", no_open_ingress),
    Rule("gpu-pods-limits-tolerations", "GPU pods set nvidia.com/gpu limits and tolerate the GPU taint.",
         gpu_pods_have_limits_and_tolerations),
    Rule("hpa-metric-served", "Every HPA metric is served by a prometheus-adapter rule.", hpa_metric_is_served,
         stack=True),
    Rule("pdb-exists", "A GPU Deployment keeping two or more replicas has a PodDisruptionBudget; one that may run a "
                       "single replica has none.", pdb_exists, stack=True),
    Rule("on-demand-floor", "Each GPU type on spot keeps an on-demand or reserved floor of its own.",
         on_demand_floor_with_spot, stack=True),
    Rule("node-selectors-match", "Node selectors match an existing node group's labels.",
         node_selectors_match_node_groups, stack=True),
    Rule("s3-private-and-encrypted", "Every bucket blocks public access and is encrypted (SSE-KMS; the "
                                      "ALB access-log bucket SSE-S3, the only kind ELB delivers to).", s3_public_access_blocked,
         stack=True),
]


@dataclass(frozen=True)
class Resource:
    """The shape of ``pulumi_policy.PolicyResource`` that the rules read."""

    resource_type: str
    name: str
    props: dict


@dataclass(frozen=True)
class StackArgs:
    resources: list[Resource]


def check(resources: list[Resource]) -> list[tuple[str, str]]:
    """Run every rule; return (rule name, message) for each violation."""
    found: list[tuple[str, str]] = []
    for rule in RULES:
        def report(message, urn=None, _rule=rule.name):
            found.append((_rule, message))
        if rule.stack:
            rule.validate(StackArgs(resources), report)
        else:
            for r in resources:
                rule.validate(r, report)
    return found

"""What would make the first `pulumi up` fail, each found by a check that can say no (issue 12).

The mocks accept any value, so these tests check the recorded inputs against the rules AWS and Kubernetes apply,
and the creation order against the resource graph the program declares.
"""
import json
import re
import subprocess
import sys
import textwrap

import pytest

from infra.preview import account_zones, manifests, preview, preview_graph

from .iam_eval import allowed
from infra.program import load_plan
from infra.settings import ROOT, settings_from_config, stack_file_config

NODEGROUP = "aws:eks/nodeGroup:NodeGroup"
RELEASE = "kubernetes:helm.sh/v3:Release"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request):
    settings = settings_from_config(stack_file_config(request.param), request.param)
    plan = load_plan(settings)
    records, graph = preview_graph(settings, plan)
    return settings, plan, records, graph


def of(records, type_):
    return [r for r in records if r.type == type_]


def test_the_cluster_api_is_reachable_from_where_pulumi_runs(built):
    # Pulumi runs outside the VPC the stack creates: with a private-only endpoint no Kubernetes resource applies.
    _, _, records, _ = built
    (eks,) = of(records, "aws:eks/cluster:Cluster")
    vpc = eks.inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"]
    assert vpc["endpointPrivateAccess"] is True  # nodes still reach it inside the VPC
    # With access entries only (authentication mode API), whoever creates the cluster must be made its admin.
    assert eks.inputs["accessConfig"]["bootstrapClusterCreatorAdminPermissions"] is True


# EKS node-group names: "can't be longer than 63 characters. It must start with a letter or digit, but can also
# include hyphens and underscores for the remaining characters" (aws.eks.NodeGroup node_group_name, the provider
# schema's text of the EKS CreateNodegroup rule, which neither botocore's model nor CloudFormation's schema encodes).
NODEGROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def test_node_group_names_are_names_eks_accepts(built):
    _, _, records, _ = built
    groups = of(records, NODEGROUP)
    assert groups
    for g in groups:
        name = g.inputs.get("nodeGroupName")
        assert name is not None, f"{g.name}: no explicit name (autonaming would derive one from {g.name!r})"
        assert NODEGROUP_NAME.fullmatch(name), f"{g.name}: EKS refuses node-group name {name!r}"


def test_resource_names_are_unique_with_two_reserved_terms_of_one_type(tmp_path):
    settings = settings_from_config(stack_file_config("prod"), "prod")
    plan = load_plan(settings)
    reserved = next(p for p in plan.pools if p.capacity_type.startswith("reserved"))
    other = "reserved-3yr" if reserved.capacity_type == "reserved-1yr" else "reserved-1yr"
    plan = plan.model_copy(update={"pools": [*plan.pools, reserved.model_copy(update={"capacity_type": other})]})
    records = preview(settings, plan)
    keys = [(r.type, r.name) for r in records]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    reservations = of(records, "aws:ec2/capacityReservation:CapacityReservation")
    assert {r.inputs["tags"]["gpufleet:term"] for r in reservations if
            r.inputs["instanceType"] == reserved.instance_type} == {reserved.capacity_type, other}
    names = [g.inputs["nodeGroupName"] for g in of(records, NODEGROUP)]
    assert len(names) == len(set(names))


def _key(records, type_, contains):
    (r,) = [r for r in records if r.type == type_ and contains in r.name]
    return (r.type, r.name)


def test_creation_order_follows_what_each_resource_needs(built):
    _, plan, records, graph = built
    prometheus = _key(records, RELEASE, "kube-prometheus-stack")
    system_nodes = _key(records, NODEGROUP, "-system")
    ebs = _key(records, "aws:eks/addon:Addon", "ebs-csi")
    # Helm releases need nodes to run on, and Prometheus' volume needs the EBS CSI driver.
    for release in of(records, RELEASE):
        assert graph.waits_for((release.type, release.name), system_nodes), release.name
        assert graph.waits_for((release.type, release.name), ebs), release.name
    # The ServiceMonitor and PrometheusRule CRDs come with kube-prometheus-stack: their objects wait for it.
    for monitor in [r for r in records if r.type.endswith(":CustomResource") and
                    r.inputs.get("kind") in ("ServiceMonitor", "PrometheusRule")]:
        assert graph.waits_for((monitor.type, monitor.name), prometheus), monitor.name
    dcgm = _key(records, RELEASE, "dcgm-exporter")
    assert graph.waits_for(dcgm, prometheus)  # its chart renders a ServiceMonitor
    # Triton's pods need GPU nodes and the device plugin that advertises nvidia.com/gpu.
    plugin = _key(records, "kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin")
    gpu_groups = [(g.type, g.name) for g in of(records, NODEGROUP) if "-system" not in g.name]
    tritons = [r for r in of(records, DEPLOYMENT) if r.inputs["metadata"]["name"].startswith("triton-")]
    assert tritons
    for d in tritons:
        key = (d.type, d.name)
        assert graph.waits_for(key, plugin), d.name
        assert all(graph.waits_for(key, g) for g in gpu_groups), d.name


def test_the_graph_check_can_say_no(built):
    _, _, records, graph = built
    plugin = _key(records, "kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin")
    system_nodes = _key(records, NODEGROUP, "-system")
    assert not graph.waits_for(system_nodes, plugin)  # the other way round holds nothing up


def test_triton_waits_for_its_repository_instead_of_crash_looping(built):
    # The bucket is created empty in the same run; with --exit-on-error and no models, Triton exits, and the pod
    # crash-loops until someone uploads. Polling the repository, it stays unready until the model appears.
    _, _, records, _ = built
    for d in [r for r in of(records, DEPLOYMENT) if r.inputs["metadata"]["name"].startswith("triton-")]:
        (container,) = d.inputs["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert "--exit-on-error=true" not in args and "--exit-on-error=false" in args
        assert "--model-control-mode=poll" in args
        assert any(a.startswith("--repository-poll-secs=") for a in args)
        assert "--strict-readiness=true" in args  # unready, so no traffic, until the model is loaded


STUB_POLICY = '''
class EnforcementLevel:
    MANDATORY = "mandatory"
class _Policy:
    def __init__(self, name, description, enforcement_level, validate):
        self.name, self.validate = name, validate
class ResourceValidationPolicy(_Policy): pass
class StackValidationPolicy(_Policy): pass
class PolicyPack:
    packs = []
    def __init__(self, name, enforcement_level, policies):
        PolicyPack.packs.append((name, [p.name for p in policies]))
'''


def test_the_policy_pack_loads_with_only_its_own_requirements(tmp_path):
    # The Pulumi CLI runs infra/policy/__main__.py in the pack's own virtual environment (requirements.txt:
    # pulumi-policy only): neither gpufleet nor infra is importable there. -S drops this environment's packages;
    # a stand-in pulumi_policy with the same constructors records the pack.
    (tmp_path / "pulumi_policy.py").write_text(STUB_POLICY)
    pack_dir = ROOT / "infra" / "policy"
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.path[:0] = [{str(tmp_path)!r}, {str(pack_dir)!r}]
        runpy.run_path({str(pack_dir / "__main__.py")!r}, run_name="__main__")
        import pulumi_policy
        print(pulumi_policy.PolicyPack.packs)
    """)
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=pack_dir)
    assert run.returncode == 0, run.stderr
    from infra.policy.rules import RULES

    assert f"('gpufleet', {[r.name for r in RULES]!r})" in run.stdout


def test_policy_rules_import_nothing_beyond_the_standard_library():
    source = (ROOT / "infra" / "policy" / "rules.py").read_text()
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.M)
    assert all(i.split(".")[0] in sys.stdlib_module_names or i == "__future__" for i in imports), imports


# Triton's S3 filesystem (triton-inference-server/core, src/filesystem/implementations/s3.h): IsDirectory calls
# HeadBucket, then ListObjectsV2 with the path plus "/" as prefix; FileExists calls HeadObject; ReadTextFile and
# LocalizePath call GetObject. S3 authorises HeadBucket as s3:ListBucket with no s3:prefix, ListObjectsV2 as
# s3:ListBucket with s3:prefix, HeadObject and GetObject as s3:GetObject; an SSE-KMS object also needs kms:Decrypt.
def _reader(records, settings):
    (policy,) = [r for r in records if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name.endswith("-s3-reader")]
    (bucket,) = [r for r in records if r.type == "aws:s3/bucket:Bucket" and r.name.endswith("-models")]
    (key,) = [r for r in records if r.type == "aws:kms/key:Key" and r.name.endswith("-data")]
    return (json.loads(policy.inputs["policy"]), f"arn:aws:s3:::{bucket.name}-bucket",
            f"arn:aws:kms:us-east-1:123456789012:key/{key.name}")


def triton_loads_a_repository(bucket_arn: str, key_arn: str, repo: str, model: str) -> list[tuple]:
    return [("s3:ListBucket", bucket_arn, {}),                                     # HeadBucket
            ("s3:ListBucket", bucket_arn, {"s3:prefix": f"{repo}/"}),              # the repository's models
            ("s3:ListBucket", bucket_arn, {"s3:prefix": f"{repo}/{model}/"}),      # a model's versions
            ("s3:ListBucket", bucket_arn, {"s3:prefix": f"{repo}/{model}/1/"}),    # a version's files
            ("s3:GetObject", f"{bucket_arn}/{repo}/{model}/config.pbtxt", {}),     # HeadObject, GetObject
            ("s3:GetObject", f"{bucket_arn}/{repo}/{model}/1/model.plan", {}),
            ("kms:Decrypt", key_arn, {})]


def test_the_model_reader_policy_allows_exactly_what_triton_does(built):
    settings, plan, records, _ = built
    policy, bucket, key = _reader(records, settings)
    model = plan.deployments[0].model
    for d in plan.deployments:
        repo = f"{settings.environment}/{model}/{d.gpu}"
        for action, resource, context in triton_loads_a_repository(bucket, key, repo, model):
            assert allowed(policy, action, resource, context), (action, resource, context)
    other = "prod" if settings.environment == "dev" else "dev"
    for action, resource, context in [
            ("s3:GetObject", f"{bucket}/{other}/{model}/L4/{model}/config.pbtxt", {}),
            ("s3:GetObject", f"{bucket}/{settings.environment}/another-model/L4/x/config.pbtxt", {}),
            ("s3:ListBucket", bucket, {"s3:prefix": f"{other}/"}),
            ("s3:PutObject", f"{bucket}/{settings.environment}/{model}/L4/{model}/config.pbtxt", {}),
            ("s3:DeleteObject", f"{bucket}/{settings.environment}/{model}/L4/{model}/config.pbtxt", {}),
            ("kms:Encrypt", key, {})]:
        assert not allowed(policy, action, resource, context), (action, resource, context)


def test_the_evaluator_refuses_head_bucket_under_a_prefix_condition():
    # The policy as it was: ListBucket only with s3:prefix under the model's folder. HeadBucket sends no prefix.
    old = {"Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"],
                          "Condition": {"StringLike": {"s3:prefix": ["dev/m/*", "dev/m"]}}}]}
    assert allowed(old, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "dev/m/L4/"})
    assert not allowed(old, "s3:ListBucket", "arn:aws:s3:::b", {})
    with pytest.raises(ValueError, match="not handled"):
        allowed({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                                "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020"}}}]},
                "s3:GetObject", "arn:aws:s3:::b/k", {"aws:CurrentTime": "2026"})


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_each_triton_pod_is_scraped_through_one_service(built):
    # Two Services over one pod, both matched by the ServiceMonitor, and Prometheus scrapes the pod twice: the
    # adapter's sum doubles the HPA metric and the HPA scales at half the planned rate.
    _, _, records, _ = built
    objs = manifests(records)
    monitors = [m for m in objs if m["kind"] == "ServiceMonitor"]
    services = [m for m in objs if m["kind"] == "Service"]
    pods = [m["spec"]["template"]["metadata"]["labels"] for m in objs
            if m["kind"] == "Deployment" and m["metadata"]["name"].startswith("triton-")]
    assert monitors and pods
    for pod in pods:
        scraped = [s["metadata"]["name"] for s in services for mon in monitors
                   if s["metadata"].get("namespace") == mon["metadata"]["namespace"]
                   and _selects(mon["spec"]["selector"]["matchLabels"], s["metadata"].get("labels") or {})
                   and _selects(s["spec"]["selector"], pod)]
        assert len(scraped) == 1, (pod, scraped)


def test_the_hpa_owns_the_replica_count(built):
    # With server-side apply, a Deployment that sets spec.replicas takes the field back from the HPA at every
    # update: the fleet drops to the planned count mid-surge.
    _, _, records, _ = built
    objs = manifests(records)
    scaled = {(h["metadata"]["namespace"], h["spec"]["scaleTargetRef"]["name"]) for h in objs
              if h["kind"] == "HorizontalPodAutoscaler"}
    assert scaled
    for d in [m for m in objs if m["kind"] == "Deployment"]:
        if (d["metadata"]["namespace"], d["metadata"]["name"]) in scaled:
            assert "replicas" not in d["spec"], d["metadata"]["name"]


def test_data_lives_as_long_as_the_stack_keeps_it_and_no_class_charges_past_it(built):
    # Glacier Flexible Retrieval bills 90 days at least and Standard-IA 30: an object moved there and deleted
    # sooner pays for days it is not kept. Dev keeps 7 days, prod 90 (logRetentionDays).
    settings, _, records, _ = built
    (rule,) = [r.inputs["rules"][0] for r in records if r.type.endswith("BucketLifecycleConfiguration")
               and r.name.endswith("-data-logs")]
    keep = settings.log_retention_days
    assert rule["expiration"]["days"] == keep
    minimum = {"STANDARD_IA": 30, "GLACIER": 90}
    for t in rule.get("transitions") or []:
        assert t["days"] + minimum[t["storageClass"]] <= keep, t


def test_the_control_plane_log_group_expires_and_exists_before_the_cluster(built):
    settings, _, records, graph = built
    (eks,) = of(records, "aws:eks/cluster:Cluster")
    groups = [r for r in of(records, "aws:cloudwatch/logGroup:LogGroup")
              if r.inputs.get("name") == f"/aws/eks/{eks.inputs['name']}/cluster"]
    assert len(groups) == 1, "EKS creates this group itself, never expiring, unless the stack made it first"
    (group,) = groups
    assert graph.waits_for(("aws:eks/cluster:Cluster", eks.name), (group.type, group.name))
    # CloudWatch Logs accepts only certain retention periods (AWS::Logs::LogGroup RetentionInDays, CloudFormation's
    # published resource schema, as cfn-lint ships it).
    from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::Logs::LogGroup").schema
    assert group.inputs["retentionInDays"] in schema["properties"]["RetentionInDays"]["enum"]
    assert group.inputs["retentionInDays"] == settings.log_retention_days


def test_cluster_autoscaler_sees_gpus_and_can_write_its_status(built):
    _, _, records, _ = built
    for g in [g for g in of(records, NODEGROUP) if "-system" not in g.name]:
        # Cluster Autoscaler's AWS provider treats a node as a GPU node by this label (its GPULabel).
        assert g.inputs["labels"].get("k8s.amazonaws.com/accelerator"), g.name
        tags = g.inputs["tags"]
        assert tags.get("k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator"), g.name
    objs = manifests(records)
    (role,) = [m for m in objs if m["kind"] == "ClusterRole" and m["metadata"]["name"] == "cluster-autoscaler"]
    writes = {v for r in role["rules"] if "configmaps" in r["resources"] for v in r["verbs"]}
    assert {"create", "update"} <= writes  # its status ConfigMap, cluster-autoscaler-status
    (ca,) = [m for m in objs if m["kind"] == "Deployment" and m["metadata"]["name"] == "cluster-autoscaler"]
    command = ca["spec"]["template"]["spec"]["containers"][0]["command"]
    # A spot shortfall falls back to the next group only after max-node-provision-time (default 15 min).
    (provision,) = [a for a in command if a.startswith("--max-node-provision-time=")]
    assert provision.split("=")[1] in ("5m", "5m0s")


def test_retention_periods_are_cloudwatchs_own_and_others_are_refused():
    from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER

    from infra.settings import LOG_RETENTION_DAYS, InfraInputError

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::Logs::LogGroup").schema
    assert set(LOG_RETENTION_DAYS) == set(schema["properties"]["RetentionInDays"]["enum"])
    config = {**stack_file_config("dev"), "gpufleet:logRetentionDays": "10"}
    with pytest.raises(InfraInputError, match="logRetentionDays.*10 days: CloudWatch Logs keeps one of"):
        settings_from_config(config, "dev")


def test_the_stacks_plans_scale_up_before_p99_passes_the_target(built):
    _, plan, _, _ = built
    for d in plan.deployments:
        assert (d.autoscaling.target_rate_per_replica * (1 + plan.autoscaling.tolerance)
                <= d.autoscaling.max_rate_per_replica * (1 + 1e-6)), d.gpu


def _ingress(records):
    (ing,) = [m for m in manifests(records) if m["kind"] == "Ingress"]
    return ing


def test_traffic_enters_through_the_alb_tls_only_with_a_domain_and_reaches_each_pod_through_one_weighted_target_group(
        built):
    settings, plan, records, graph = built
    ing = _ingress(records)
    ann = ing["metadata"]["annotations"]
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ann["alb.ingress.kubernetes.io/target-type"] == "ip"
    # The controller (and its webhook) exist before the Ingress.
    ingress_key = _key(records, "kubernetes:networking.k8s.io/v1:Ingress", "-ingress")
    assert graph.waits_for(ingress_key, _key(records, RELEASE, "aws-load-balancer-controller"))
    if settings.tls_domain:
        # HTTPS only, TLS 1.3/1.2, and the certificate is validated before it is used.
        assert json.loads(ann["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTPS": 443}]
        assert ann["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
        assert ann["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
        assert ing["spec"]["rules"][0]["host"] == settings.tls_domain
        assert graph.waits_for(ingress_key, _key(records, "aws:acm/certificateValidation:CertificateValidation",
                                                 "-tls"))
    else:
        # No domain (the dev stack): plain HTTP on port 80 for the load balancer's own hostname, no certificate.
        assert json.loads(ann["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}]
        assert "alb.ingress.kubernetes.io/certificate-arn" not in ann and "host" not in ing["spec"]["rules"][0]
    objs = manifests(records)
    services = {s["metadata"]["name"]: s for s in objs if s["kind"] == "Service"}
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in objs
            if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("triton-")}
    action = ann.get("alb.ingress.kubernetes.io/actions.weighted")
    canary = settings.canary_weight if settings.canary_image else 0
    if plan.request.routing != "weighted" and not canary:
        assert action is None
        return
    groups = json.loads(action)["forwardConfig"]["targetGroups"]
    assert 1 <= len(groups) <= 5 and all(0 <= g["weight"] <= 999 for g in groups)
    total = sum(g["weight"] for g in groups)
    reached = {}
    for g in groups:
        selector = services[g["serviceName"]]["spec"]["selector"]
        behind = [name for name, labels in pods.items() if _selects(selector, labels)]
        assert len(behind) == 1, (g["serviceName"], behind)  # one Deployment per target group
        reached[behind[0]] = g["weight"] / total
    assert set(reached) == set(pods)  # every Deployment is reached, each through one target group
    for d in plan.deployments:
        want = d.routing_weight * (100 - canary) / 100
        assert reached[f"triton-{d.model}-{d.gpu.lower()}"] == pytest.approx(want, abs=0.002)
    if canary:
        assert reached[f"triton-{plan.deployments[0].model}-canary"] == pytest.approx(canary / 100, abs=0.002)


def test_the_load_balancer_controller_may_build_its_alb_and_touch_nothing_else(built):
    settings, _, records, _ = built
    (policy_record,) = [r for r in records if r.type == "aws:iam/rolePolicy:RolePolicy"
                        and "lb-controller" in r.name]
    policy = json.loads(policy_record.inputs["policy"])
    cluster = settings.name
    (vpc,) = [r for r in records if r.type == "aws:ec2/vpc:Vpc"]
    vpc_arn = f"arn:aws:ec2:us-east-1:123456789012:vpc/{vpc.id}"
    tag = "elbv2.k8s.aws/cluster"
    lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/k8s-inference-triton/abc"
    tg = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/k8s-inference-t4/abc"
    sg = "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0abc"
    # What the controller calls to reconcile an Ingress (its ALB model builder and deployer), with the tags it sets.
    calls = [
        ("ec2:DescribeSubnets", "*", {}), ("ec2:DescribeSecurityGroups", "*", {}),
        ("elasticloadbalancing:DescribeLoadBalancers", "*", {}), ("acm:DescribeCertificate", "*", {}),
        ("ec2:CreateSecurityGroup", sg, {f"aws:RequestTag/{tag}": cluster}),
        ("ec2:CreateTags", sg, {f"aws:RequestTag/{tag}": cluster, "ec2:CreateAction": "CreateSecurityGroup"}),
        ("elasticloadbalancing:CreateLoadBalancer", lb, {f"aws:RequestTag/{tag}": cluster}),
        ("elasticloadbalancing:CreateTargetGroup", tg, {f"aws:RequestTag/{tag}": cluster}),
        ("elasticloadbalancing:AddTags", lb, {f"aws:RequestTag/{tag}": cluster,
                                              "elasticloadbalancing:CreateAction": "CreateLoadBalancer"}),
        ("elasticloadbalancing:CreateListener", lb, {f"aws:ResourceTag/{tag}": cluster}),
        ("elasticloadbalancing:ModifyRule", lb, {f"aws:ResourceTag/{tag}": cluster}),
        ("elasticloadbalancing:RegisterTargets", tg, {f"aws:ResourceTag/{tag}": cluster}),
        ("elasticloadbalancing:DeregisterTargets", tg, {f"aws:ResourceTag/{tag}": cluster}),
        ("ec2:AuthorizeSecurityGroupIngress", sg, {"ec2:Vpc": vpc_arn}),
        ("iam:CreateServiceLinkedRole", "*", {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"})]
    for action, resource, context in calls:
        assert allowed(policy, action, resource, context), (action, context)
    # The policy is now the controller's official one (issue 24), which scopes changes by the controller's tag being
    # on a resource, not by this cluster's name, and does not scope target registration or security-group ingress
    # at all: another cluster's tagged load balancer, an untagged target group and another VPC's security group are
    # no longer refused (tests/test_infra_edge_upstream.py states what the official policy does allow and refuse).
    for action, resource, context in [
            ("elasticloadbalancing:DeleteLoadBalancer", lb, {}),
            ("elasticloadbalancing:CreateLoadBalancer", lb, {}),
            # Claiming another cluster's load balancer or security group by adding this cluster's tag to it.
            ("elasticloadbalancing:AddTags", lb, {f"aws:RequestTag/{tag}": cluster,
                                                  f"aws:ResourceTag/{tag}": "another-cluster"}),
            ("ec2:CreateTags", sg, {f"aws:RequestTag/{tag}": cluster}),
            ("ec2:TerminateInstances", "*", {}),
            ("iam:CreateServiceLinkedRole", "*", {"iam:AWSServiceName": "autoscaling.amazonaws.com"}),
            ("iam:CreateRole", "*", {})]:
        assert not allowed(policy, action, resource, context), (action, context)


def test_a_stopping_triton_pod_drains_before_it_exits(built):
    _, _, records, _ = built
    from infra.triton import DEREGISTRATION_S, PRE_STOP_S, TRITON_EXIT_S

    ing = _ingress(records)
    assert f"deregistration_delay.timeout_seconds={DEREGISTRATION_S}" in \
        ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-group-attributes"]
    for d in [m for m in manifests(records) if m["kind"] == "Deployment"
              and m["metadata"]["name"].startswith("triton-")]:
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop >= DEREGISTRATION_S == 15 and pre_stop == PRE_STOP_S
        assert f"--exit-timeout-secs={TRITON_EXIT_S}" in c["args"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + TRITON_EXIT_S


def test_the_domain_points_at_the_load_balancer_the_controller_made(built):
    settings, _, records, _ = built
    dns = [r for r in records if r.type == "aws:route53/record:Record"]
    if not settings.tls_domain:
        assert dns == []  # no domain, no record: clients use the load balancer's own hostname
        return
    # An alias A record (valid at a zone apex, unlike a CNAME) in the zone the stack looked up.
    (record,) = [r for r in dns if r.inputs["name"] == settings.tls_domain]
    assert record.inputs["type"] == "A"
    assert record.inputs["zoneId"] in account_zones(settings)
    (alias,) = record.inputs["aliases"]
    assert alias["name"].endswith(".elb.amazonaws.com")


def test_a_reserved_group_can_roll_its_nodes(built):
    # EKS updates a managed node group by launching the new nodes first: it raises the group's size by the larger of
    # twice its AZ count and maxUnavailable, then drains the old ones (EKS User Guide, "Managed node update
    # behavior"). Those launches must not be refused for want of room in the group's capacity reservation.
    _, _, records, _ = built
    reservations = of(records, "aws:ec2/capacityReservation:CapacityReservation")
    templates = {r.id: r for r in of(records, "aws:ec2/launchTemplate:LaunchTemplate")}
    reserved_groups = [g for g in of(records, NODEGROUP) if g.inputs["labels"].get("gpufleet.io/capacity") == "reserved"]
    assert reserved_groups and reservations
    for g in reserved_groups:
        surge = max(2 * len(g.inputs["subnetIds"]), g.inputs["updateConfig"]["maxUnavailable"])
        spec = templates[g.inputs["launchTemplate"]["id"]].inputs.get("capacityReservationSpecification") or {}
        (cr,) = [r for r in reservations if r.inputs["instanceType"] == g.inputs["instanceTypes"][0]
                 and r.inputs["tags"]["gpufleet:term"] in g.name]
        if "capacityReservationTarget" in spec:
            assert cr.inputs["instanceCount"] >= g.inputs["scalingConfig"]["maxSize"] + surge, g.name
        else:
            # Launched into the open reservation while it has room, as plain on-demand beyond it.
            assert spec.get("capacityReservationPreference") == "open", g.name
            assert cr.inputs["instanceMatchCriteria"] == "open", g.name


def _outside_enums(value, shape, where="") -> list[str]:
    """Values the service model's enums do not list, anywhere in ``value``."""
    if shape.type_name == "structure":
        return [bad for k, v in value.items() for bad in _outside_enums(v, shape.members[k], f"{where}.{k}")]
    if shape.type_name == "list":
        return [bad for v in value for bad in _outside_enums(v, shape.member, where)]
    enum = getattr(shape, "enum", None)
    return [f"{where}={value!r}"] if enum and value not in enum else []


def test_the_reserved_price_the_plan_assumed_is_a_commitment_the_stack_names_and_buys_only_when_told(tmp_path):
    # A capacity reservation is billed at the on-demand rate, used or not; the plan's reserved price holds only
    # under a Savings Plan (or regional RI) covering those instances. The stack states that commitment, and buys it
    # (an irrevocable 1- or 3-year purchase) only with gpufleet:purchaseCommitments.
    import botocore.session
    from botocore.validate import validate_parameters

    from infra.gpu_pools import commitments

    settings = settings_from_config(stack_file_config("prod"), "prod")
    plan = load_plan(settings)
    reserved = [p for p in plan.pools if p.capacity_type.startswith("reserved") and p.count > 0]
    found = commitments(plan, settings.region)
    assert sum(c.usd_per_hour for c in found) == pytest.approx(sum(p.usd_per_hour for p in reserved), abs=1e-3)
    model = botocore.session.get_session().get_service_model("savingsplans")
    query_shape = model.operation_model("DescribeSavingsPlansOfferings").input_shape
    for c in found:
        validate_parameters(c.offering_query(), query_shape)  # raises on a name or type AWS does not take
        assert _outside_enums(c.offering_query(), query_shape) == []  # botocore's validator leaves enums unchecked
    assert not of(preview(settings, plan), "aws:savingsplans/savingsPlan:SavingsPlan")
    buying = settings.model_copy(update={"purchase_commitments": True})
    plans = of(preview(buying, plan), "aws:savingsplans/savingsPlan:SavingsPlan")
    assert sorted(float(p.inputs["commitment"]) for p in plans) == pytest.approx(
        sorted(c.usd_per_hour for c in found), abs=1e-3)


def test_grafana_does_not_keep_the_charts_published_admin_password(built):
    # kube-prometheus-stack sets grafana.adminPassword to "prom-operator" in its values.yaml, a password anyone can
    # look up. Left empty, the Grafana chart generates a 40-character one and keeps it across upgrades (its
    # "grafana.password" helper looks the existing Secret up), which `pulumi up` allows: a Release runs Helm itself.
    from infra.preview import releases

    _, _, records, _ = built
    (stack,) = [r for r in releases(records) if r["chart"] == "kube-prometheus-stack"]
    grafana = stack["values"].get("grafana") or {}
    assert grafana.get("adminPassword", "prom-operator") == "" or (grafana.get("admin") or {}).get("existingSecret")


def test_only_the_traffic_the_stack_needs_reaches_triton_or_leaves_it(built):
    import ipaddress
    from functools import partial

    from .netpol_eval import Endpoint, connection_allowed

    settings, _, records, _ = built
    # EKS enforces NetworkPolicies only with the VPC CNI's network policy agent on; otherwise it ignores them.
    (cni,) = [r for r in of(records, "aws:eks/addon:Addon") if r.inputs["addonName"] == "vpc-cni"]
    assert json.loads(cni.inputs.get("configurationValues") or "{}").get("enableNetworkPolicy") == "true"
    objs = manifests(records)
    policies = [m for m in objs if m["kind"] == "NetworkPolicy"]
    allowed = partial(connection_allowed, policies)
    vpc = list(ipaddress.ip_network(settings.vpc_cidr).subnets(new_prefix=20))

    def pod(ns, labels, block, ports=None):
        return Endpoint(str(vpc[block][100]), ns, {"kubernetes.io/metadata.name": ns}, labels, ports or {})

    for dep in [m for m in objs if m["kind"] == "Deployment" and m["metadata"]["namespace"] == settings.namespace]:
        spec = dep["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in spec["spec"]["containers"] for p in c.get("ports") or []}
        triton = pod(settings.namespace, spec["metadata"]["labels"], len(settings.availability_zones), ports)
        alb = Endpoint(str(vpc[0][20]))  # the load balancer's address in a public subnet
        prometheus = pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, len(settings.availability_zones))
        stranger = pod("default", {"app": "anything"}, len(settings.availability_zones))
        kube_dns = pod("kube-system", {"k8s-app": "kube-dns"}, len(settings.availability_zones))
        internet, s3 = Endpoint("203.0.113.7"), Endpoint("52.216.8.1")
        name = dep["metadata"]["name"]
        assert allowed(alb, triton, ports["http"]), name  # requests and the load balancer's health checks
        assert allowed(prometheus, triton, ports["metrics"]), name
        assert not allowed(stranger, triton, ports["metrics"]), name
        assert not allowed(internet, triton, ports["http"]), name  # only through the load balancer
        assert allowed(triton, s3, 443) and allowed(triton, kube_dns, 53, "UDP"), name  # the repository, IRSA, DNS
        assert not allowed(triton, internet, 80) and not allowed(triton, stranger, 8080), name
        assert not allowed(stranger, triton, 22), name


def test_the_network_policy_evaluator_can_say_no():
    from .netpol_eval import Endpoint, connection_allowed

    a = Endpoint("10.0.0.5", "ns", {"kubernetes.io/metadata.name": "ns"}, {"app": "a"}, {"http": 80})
    b = Endpoint("10.0.0.6", "ns", {"kubernetes.io/metadata.name": "ns"}, {"app": "b"})
    deny = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    allow_b = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": "http"}]}]}}
    assert connection_allowed([], b, a, 80)
    assert not connection_allowed([deny], b, a, 80)
    assert connection_allowed([deny, allow_b], b, a, 80)
    assert not connection_allowed([deny, allow_b], b, a, 81)
    assert not connection_allowed([deny, allow_b], Endpoint("10.0.0.7"), a, 80)


def test_each_stack_runs_a_kubernetes_version_in_eks_standard_support_when_its_plan_was_priced(built):
    # Past standard support EKS bills extended support per cluster hour (6x the standard fee) and later upgrades the
    # cluster itself; the stack's prices come from its plan's catalog date.
    import datetime as dt

    from infra.versions import support_on

    settings, plan, records, _ = built
    day = dt.date.fromisoformat(plan.request.catalog_as_of)
    assert support_on(settings.kubernetes_version, day) == "standard"
    # The Cluster Autoscaler's minor matches the cluster's.
    (ca,) = [m for m in manifests(records) if m["kind"] == "Deployment" and m["metadata"]["name"] == "cluster-autoscaler"]
    assert ca["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":v", 1)[1].startswith(
        settings.kubernetes_version + ".")


def test_a_version_past_standard_support_is_refused_in_one_line_unless_allowed():
    import datetime as dt

    from infra.settings import InfraInputError
    from infra.versions import require_standard_support, support_on

    assert support_on("1.33", dt.date(2026, 7, 29)) == "standard"
    assert support_on("1.33", dt.date(2026, 7, 30)) == "extended"
    assert support_on("1.33", dt.date(2027, 7, 30)) == "ended"
    settings = settings_from_config({**stack_file_config("dev"), "gpufleet:kubernetesVersion": "1.33"}, "dev")
    with pytest.raises(InfraInputError, match=r"kubernetesVersion: 1\.33 left EKS standard support on 2026-07-29"):
        require_standard_support(settings, dt.date(2026, 11, 21))
    allowed = settings.model_copy(update={"allow_extended_support": True})
    require_standard_support(allowed, dt.date(2026, 11, 21))
    with pytest.raises(InfraInputError, match="kubernetesVersion: 1.29 is not in"):
        settings_from_config({**stack_file_config("dev"), "gpufleet:kubernetesVersion": "1.29"}, "dev")


def test_every_aws_input_passes_cloudformations_published_schemas(built):
    from infra.cfn import NO_COUNTERPART, check_aws_inputs

    settings, _, records, _ = built
    problems, unchecked = check_aws_inputs(records, settings.region)
    assert problems == []
    # Each AWS type is written as its CloudFormation resource, or named with the reason it has none; no input of a
    # written resource is left out unnoticed.
    assert set(unchecked) <= {f"{t}: {why}" for t, why in NO_COUNTERPART.items()}, unchecked


_DELETE = object()


@pytest.fixture(scope="module")
def prod_records():
    settings = settings_from_config(stack_file_config("prod"), "prod")
    return settings, preview(settings, load_plan(settings))


@pytest.mark.parametrize("typ, path, value, rule", [
    (NODEGROUP, ("capacityType",), "SPOTTY", "E3030"),
    (NODEGROUP, ("nodeRoleArn",), _DELETE, "E3003"),  # a required property
    (NODEGROUP, ("scalingConfig", "minSize"), -1, "E3034"),
    ("aws:cloudwatch/logGroup:LogGroup", ("retentionInDays",), 10, "E3030"),
    ("aws:ec2/launchTemplate:LaunchTemplate", ("metadataOptions", "httpTokens"), "sometimes", "E3030"),
    ("aws:ec2/capacityReservation:CapacityReservation", ("instanceMatchCriteria",), "any", "E3030"),
    ("aws:ec2/subnet:Subnet", ("vpcId",), "gpufleet-vpc", "E1151"),  # not an EC2 VPC id
    ("aws:eks/cluster:Cluster", ("accessConfig", "authenticationMode"), "PASSWORD", "E3030"),
    ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
     ("rules", 0, "noncurrentVersionTransitions", 0, "storageClass"), "COLD", "E3030"),
])
def test_the_cloudformation_check_can_say_no(prod_records, typ, path, value, rule):
    import copy
    import dataclasses

    from infra.cfn import check_aws_inputs

    settings, records = prod_records

    def has(inputs):
        node = inputs
        for key in path[:-1]:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                return False
        return isinstance(node, dict) and path[-1] in node

    victim = next(r for r in records if r.type == typ and has(r.inputs))
    inputs = copy.deepcopy(victim.inputs)
    node = inputs
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    changed = [dataclasses.replace(r, inputs=inputs) if r is victim else r for r in records]
    problems, _ = check_aws_inputs(changed, settings.region)
    assert [p for p in problems if p.startswith(f"{victim.name}:") and rule in p], problems


def test_the_cluster_autoscaler_policy_allows_its_calls_and_only_on_this_clusters_groups(built):
    # The calls its AWS cloud provider makes (cluster-autoscaler/cloudprovider/aws: auto_scaling.go, aws_manager.go,
    # aws_wrapper.go, whose README lists the same permissions): discovery and templates on any group, resizing only
    # the groups EKS tags for this cluster's auto-discovery (managed node groups carry
    # k8s.io/cluster-autoscaler/<cluster>=owned on their Auto Scaling group).
    settings, _, records, _ = built
    (record,) = [r for r in records if r.type == "aws:iam/rolePolicy:RolePolicy" and "cluster-autoscaler" in r.name]
    policy = json.loads(record.inputs["policy"])
    asg = ("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1234:autoScalingGroupName/"
           f"eks-{settings.name}-gpu-abc")
    mine = {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{settings.name}": "owned"}
    for action in ("autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                   "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
                   "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
                   "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
                   "eks:DescribeNodegroup"):
        assert allowed(policy, action, "*", {}), action
    for action in ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"):
        assert allowed(policy, action, asg, mine), action
        assert not allowed(policy, action, asg, {"aws:ResourceTag/k8s.io/cluster-autoscaler/other": "owned"}), action
    for action in ("ec2:RunInstances", "ec2:TerminateInstances", "autoscaling:UpdateAutoScalingGroup",
                   "autoscaling:DeleteAutoScalingGroup", "iam:PassRole"):
        assert not allowed(policy, action, "*", mine), action

"""The edge and the cluster's add-ons checked against what the upstream components do at the pinned versions
(issue 24, defects 1, 4 and 5), not against our picture of them.

1. The AWS Load Balancer Controller's role holds the controller's official IAM policy, stored byte for byte in
   ``infra/data`` with its source; every call controller v2.13.0 makes for this stack's Ingress, with the tags it
   sends and the tag-on-create check ELBv2 and EC2 make for them, is allowed (each call cites the controller file
   that makes it), and changes to resources without the controller's tag are not.
4. Chart aws-load-balancer-controller 1.13.0 installs no Service-mutating webhook with this stack's values (its
   defaults would: ``failurePolicy: Fail`` on every Service CREATE, racing kube-prometheus-stack).
5. Every EKS add-on the stack configures overwrites the conflicting fields of the self-managed copy EKS installed.
"""
import hashlib
import json
from pathlib import Path

import pytest

from infra.edge import CLUSTER_TAG, CONTROLLER_POLICY_PATH, CONTROLLER_POLICY_SOURCE_PATH
from infra.preview import MOCK_ACCOUNT, MOCK_REGION, iam_policies, manifests, preview, releases
from infra.program import load_plan
from infra.settings import settings_from_config, stack_file_config

from .iam_eval import Call, call_allowed

DATA = Path(__file__).parent / "data"
CHART_EXCERPT = DATA / "aws_load_balancer_controller_chart_1.13.0_webhooks.json"
CONTROLLER = "kubernetes-sigs/aws-load-balancer-controller@v2.13.0:"  # prefix of every call's source


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request):
    settings = settings_from_config(stack_file_config(request.param), request.param)
    return settings, preview(settings, load_plan(settings))


def _controller_policy(records) -> dict:
    (doc,) = [p["document"] for p in iam_policies(records)
              if p["kind"] in ("inline", "managed") and "lb-controller" in p["name"]]
    return doc


# --- 1. the controller's IAM policy ----------------------------------------------------------------------------------

def test_the_stored_controller_policy_is_the_upstream_file_byte_for_byte():
    source = json.loads(CONTROLLER_POLICY_SOURCE_PATH.read_text())
    assert (source["repository"], source["tag"], source["path"]) == (
        "https://github.com/kubernetes-sigs/aws-load-balancer-controller", "v2.13.0", "docs/install/iam_policy.json")
    assert hashlib.sha256(CONTROLLER_POLICY_PATH.read_bytes()).hexdigest() == source["sha256"]


def test_the_controller_role_holds_the_official_policy(built):
    _, records = built
    assert _controller_policy(records) == json.loads(CONTROLLER_POLICY_PATH.read_text())


A, R = MOCK_ACCOUNT, MOCK_REGION
LB = f"arn:aws:elasticloadbalancing:{R}:{A}:loadbalancer/app/k8s-inferenc-triton-0a1b2c3d4e/50dc6c495c0c9188"
LISTENER = (f"arn:aws:elasticloadbalancing:{R}:{A}:listener/app/k8s-inferenc-triton-0a1b2c3d4e/50dc6c495c0c9188/"
            "f2f7dc8efc522ab2")
RULE = (f"arn:aws:elasticloadbalancing:{R}:{A}:listener-rule/app/k8s-inferenc-triton-0a1b2c3d4e/50dc6c495c0c9188/"
        "f2f7dc8efc522ab2/9683b2d02a6cabee")
TG = f"arn:aws:elasticloadbalancing:{R}:{A}:targetgroup/k8s-inferenc-tritont4-0a1b2c3d4e/73e2d6bc24d8a067"
LB_SG = f"arn:aws:ec2:{R}:{A}:security-group/sg-0a1b2c3d4e5f60718"
BACKEND_SG = f"arn:aws:ec2:{R}:{A}:security-group/sg-0b2c3d4e5f6071829"
NODE_SG = f"arn:aws:ec2:{R}:{A}:security-group/sg-0c3d4e5f607182930"  # EKS's cluster group: not the controller's


def _stack(settings, records) -> tuple[str, str]:
    """The controller's stack id for this Ingress (pkg/deploy/tracking/provider.go: an Ingress outside an explicit
    group is the stack ``namespace/name``) and the cluster name it tags with (the chart's clusterName)."""
    (ing,) = [m for m in manifests(records) if m["kind"] == "Ingress"]
    group = ing["metadata"].get("annotations", {}).get("alb.ingress.kubernetes.io/group.name")
    return group or f"{ing['metadata']['namespace']}/{ing['metadata']['name']}", settings.name


def controller_calls(settings, records) -> list[Call]:
    """What controller v2.13.0 calls to build and keep this stack's Ingress (an internet-facing ALB, an HTTPS
    listener with rules forwarding to IP target groups), with the tags each call sends, read from its source.

    Tags (pkg/deploy/tracking/provider.go ResourceTags): every resource the controller creates carries
    elbv2.k8s.aws/cluster=<cluster>, ingress.k8s.aws/stack=<stack> and ingress.k8s.aws/resource=<its id>;
    listeners and rules too, since the ListenerRulesTagging feature gate is on by default (pkg/config/feature_gates.go).
    The backend security group carries elbv2.k8s.aws/cluster and elbv2.k8s.aws/resource=backend-sg."""
    stack, cluster = _stack(settings, records)
    (vpc,) = [r for r in records if r.type == "aws:ec2/vpc:Vpc"]
    in_vpc = {"ec2:Vpc": f"arn:aws:ec2:{R}:{A}:vpc/{vpc.id}"}  # EC2 puts a security group's VPC in every request

    def tags(resource_id):
        return {CLUSTER_TAG: cluster, "ingress.k8s.aws/stack": stack, "ingress.k8s.aws/resource": resource_id}
    # The listener's id is its port (pkg/ingress/model_build_listener.go): the Ingress's listen-ports, 443 with a
    # domain, 80 without.
    (ingress,) = [r for r in records if r.type == "kubernetes:networking.k8s.io/v1:Ingress"]
    listen = json.loads(ingress.inputs["metadata"]["annotations"]["alb.ingress.kubernetes.io/listen-ports"])
    port = str(next(iter(listen[0].values())))
    lb_tags, ls_tags, rule_tags = tags("LoadBalancer"), tags(port), tags(f"{port}:1")
    tg_tags, sg_tags = tags(f"{stack}-triton-t4:8000"), tags("ManagedLBSecurityGroup")
    backend_tags = {CLUSTER_TAG: cluster, "elbv2.k8s.aws/resource": "backend-sg"}
    elb, ec2 = "elasticloadbalancing", "ec2"
    deploy, net = CONTROLLER + "pkg/deploy/", CONTROLLER + "pkg/networking/"
    tgb = CONTROLLER + "pkg/targetgroupbinding/"
    calls = [Call(f"{ec2}:{a}", "*", source=net + f) for a, f in [
        ("DescribeSubnets", "subnet_resolver.go"), ("DescribeRouteTables", "subnet_resolver.go"),
        ("DescribeAvailabilityZones", "az_info_provider.go"), ("DescribeVpcs", "vpc_info_provider.go"),
        ("DescribeSecurityGroups", "backend_sg_provider.go"), ("DescribeInstances", "node_info_provider.go"),
        ("DescribeNetworkInterfaces", "pod_eni_info_resolver.go")]]
    calls += [Call(f"{elb}:{a}", "*", source=deploy + f) for a, f in [
        ("DescribeLoadBalancers", "elbv2/tagging_manager.go"), ("DescribeTargetGroups", "elbv2/tagging_manager.go"),
        ("DescribeListeners", "elbv2/tagging_manager.go"), ("DescribeRules", "elbv2/tagging_manager.go"),
        ("DescribeTags", "elbv2/tagging_manager.go"),
        ("DescribeLoadBalancerAttributes", "elbv2/load_balancer_attributes_reconciler.go"),
        ("DescribeTargetGroupAttributes", "elbv2/target_group_attributes_reconciler.go"),
        ("DescribeListenerAttributes", "elbv2/listener_attributes_reconciler.go"),
        ("DescribeListenerCertificates", "elbv2/listener_manager.go")]]
    calls += [
        Call(f"{elb}:DescribeTargetHealth", "*", source=tgb + "targets_manager.go"),
        # Every Deploy asks for the Shield subscription (the shield addon is on by default:
        # pkg/config/addons_config.go).
        Call("shield:GetSubscriptionState", "*", source=deploy + "stack_deployer.go, shield/protection_manager.go"),
        # ELB creates its service-linked role on an account's first load balancer, as the caller.
        Call("iam:CreateServiceLinkedRole", "*", context={"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"},
             source="Elastic Load Balancing User Guide, service-linked roles"),
        # Security groups: the ALB's own and the shared backend one, tagged in the creating call (TagSpecifications).
        Call(f"{ec2}:CreateSecurityGroup", LB_SG, context=in_vpc, request_tags=sg_tags, creates=LB_SG,
             source=deploy + "ec2/security_group_manager.go"),
        Call(f"{ec2}:CreateSecurityGroup", BACKEND_SG, context=in_vpc, request_tags=backend_tags, creates=BACKEND_SG,
             source=net + "backend_sg_provider.go"),
        Call(f"{ec2}:AuthorizeSecurityGroupIngress", LB_SG, context=in_vpc, resource_tags=sg_tags,
             source=net + "security_group_manager.go (from deploy/ec2/security_group_manager.go)"),
        # The backend group's port opened on the nodes' security group, which EKS made and nobody tagged.
        Call(f"{ec2}:AuthorizeSecurityGroupIngress", NODE_SG, context=in_vpc, source=tgb + "networking_manager.go"),
        Call(f"{ec2}:RevokeSecurityGroupIngress", NODE_SG, context=in_vpc, source=tgb + "networking_manager.go"),
        # Target groups, the load balancer, its listener and rules: each created with its tags.
        Call(f"{elb}:CreateTargetGroup", TG, request_tags=tg_tags, creates=TG,
             source=deploy + "elbv2/target_group_manager.go"),
        Call(f"{elb}:ModifyTargetGroupAttributes", TG, resource_tags=tg_tags,
             source=deploy + "elbv2/target_group_attributes_reconciler.go"),
        Call(f"{elb}:CreateLoadBalancer", LB, request_tags=lb_tags, creates=LB,
             source=deploy + "elbv2/load_balancer_manager.go"),
        Call(f"{elb}:ModifyLoadBalancerAttributes", LB, resource_tags=lb_tags,
             source=deploy + "elbv2/load_balancer_attributes_reconciler.go"),
        Call(f"{elb}:CreateListener", LB, request_tags=ls_tags, creates=LISTENER,
             source=deploy + "elbv2/listener_manager.go"),
        Call(f"{elb}:CreateRule", LISTENER, request_tags=rule_tags, creates=RULE,
             source=deploy + "elbv2/listener_rule_manager.go"),
        Call(f"{elb}:RegisterTargets", TG, resource_tags=tg_tags, source=tgb + "targets_manager.go"),
        Call(f"{elb}:DeregisterTargets", TG, resource_tags=tg_tags, source=tgb + "targets_manager.go"),
        # Later reconciles: settings and tags brought back to the model (tags differing only are sent).
        Call(f"{elb}:ModifyListener", LISTENER, resource_tags=ls_tags, source=deploy + "elbv2/listener_manager.go"),
        Call(f"{elb}:ModifyRule", RULE, resource_tags=rule_tags, source=deploy + "elbv2/listener_rule_manager.go"),
        Call(f"{elb}:SetRulePriorities", RULE, source=deploy + "elbv2/listener_rule_manager.go"),
        Call(f"{elb}:AddTags", LB, request_tags={"ingress.k8s.aws/stack": stack}, resource_tags=lb_tags,
             source=deploy + "elbv2/tagging_manager.go (ReconcileTags, from load_balancer_manager.go)"),
        Call(f"{elb}:RemoveTags", TG, resource_tags=tg_tags,
             source=deploy + "elbv2/tagging_manager.go (ReconcileTags, from target_group_manager.go)"),
        Call(f"{elb}:AddTags", LISTENER, request_tags={"ingress.k8s.aws/stack": stack}, resource_tags=ls_tags,
             source=deploy + "elbv2/tagging_manager.go (ReconcileTags, from listener_manager.go)"),
        Call(f"{elb}:AddTags", RULE, request_tags={"ingress.k8s.aws/stack": stack}, resource_tags=rule_tags,
             source=deploy + "elbv2/tagging_manager.go (ReconcileTags, from listener_rule_manager.go)"),
        Call(f"{ec2}:CreateTags", LB_SG, context=in_vpc, request_tags={"ingress.k8s.aws/stack": stack},
             resource_tags=sg_tags,
             source=deploy + "ec2/tagging_manager.go (ReconcileTags, from security_group_synthesizer.go)"),
        Call(f"{ec2}:DeleteTags", LB_SG, context=in_vpc, resource_tags=sg_tags,
             source=deploy + "ec2/tagging_manager.go"),
        # The Ingress deleted (pulumi destroy): everything it made goes, rules first.
        Call(f"{elb}:DeleteRule", RULE, resource_tags=rule_tags, source=deploy + "elbv2/listener_rule_manager.go"),
        Call(f"{elb}:DeleteListener", LISTENER, resource_tags=ls_tags, source=deploy + "elbv2/listener_manager.go"),
        Call(f"{elb}:DeleteLoadBalancer", LB, resource_tags=lb_tags, source=deploy + "elbv2/load_balancer_manager.go"),
        Call(f"{elb}:DeleteTargetGroup", TG, resource_tags=tg_tags, source=deploy + "elbv2/target_group_manager.go"),
        Call(f"{ec2}:RevokeSecurityGroupIngress", LB_SG, context=in_vpc, resource_tags=sg_tags,
             source=net + "security_group_manager.go"),
        Call(f"{ec2}:DeleteSecurityGroup", LB_SG, context=in_vpc, resource_tags=sg_tags,
             source=deploy + "ec2/security_group_manager.go"),
        Call(f"{ec2}:DeleteSecurityGroup", BACKEND_SG, context=in_vpc, resource_tags=backend_tags,
             source=net + "backend_sg_provider.go"),
    ]
    return calls


def test_the_controller_may_create_its_listener_with_its_tags(built):
    settings, records = built
    (create,) = [c for c in controller_calls(settings, records) if c.action.endswith(":CreateListener")]
    assert create.request_tags[CLUSTER_TAG] == settings.name
    assert call_allowed(_controller_policy(records), create), create.checks()


def test_the_controller_may_create_listener_rules_with_their_tags(built):
    settings, records = built
    (create,) = [c for c in controller_calls(settings, records) if c.action.endswith(":CreateRule")]
    assert call_allowed(_controller_policy(records), create), create.checks()


def test_every_call_the_controller_makes_for_this_ingress_is_allowed(built):
    settings, records = built
    policy = _controller_policy(records)
    calls = controller_calls(settings, records)
    assert all(c.source for c in calls)
    denied = [(c.action, c.resource, c.source) for c in calls if not call_allowed(policy, c)]
    assert not denied, denied


def test_the_controller_may_not_change_what_carries_no_controller_tag(built):
    settings, records = built
    policy = _controller_policy(records)
    cluster_tag = {CLUSTER_TAG: settings.name}
    someone_elses_lb = f"arn:aws:elasticloadbalancing:{R}:{A}:loadbalancer/app/their-alb/1234567890abcdef"
    someone_elses_tg = f"arn:aws:elasticloadbalancing:{R}:{A}:targetgroup/their-tg/1234567890abcdef"
    someone_elses_sg = f"arn:aws:ec2:{R}:{A}:security-group/sg-0ffffffffffffffff"
    elb = "elasticloadbalancing"
    refused = [
        Call(f"{elb}:DeleteLoadBalancer", someone_elses_lb), Call(f"{elb}:DeleteTargetGroup", someone_elses_tg),
        Call(f"{elb}:ModifyLoadBalancerAttributes", someone_elses_lb), Call(f"{elb}:SetSubnets", someone_elses_lb),
        Call(f"{elb}:ModifyTargetGroup", someone_elses_tg), Call("ec2:DeleteSecurityGroup", someone_elses_sg),
        # Creating a load balancer, target group or tagged security group without the controller's tag.
        Call(f"{elb}:CreateLoadBalancer", LB), Call(f"{elb}:CreateTargetGroup", TG),
        Call(f"{elb}:AddTags", LB, context={f"{elb}:CreateAction": "CreateLoadBalancer"}),
        # Claiming someone's load balancer or security group by putting the controller's tag on it.
        Call(f"{elb}:AddTags", someone_elses_lb, request_tags=cluster_tag),
        Call("ec2:CreateTags", someone_elses_sg, request_tags=cluster_tag),
        Call("ec2:DeleteTags", someone_elses_sg),
        Call("iam:CreateServiceLinkedRole", "*", context={"iam:AWSServiceName": "autoscaling.amazonaws.com"}),
        Call("ec2:TerminateInstances", "*"), Call("iam:CreateRole", "*"), Call("s3:GetObject", "*")]
    allowed = [(c.action, c.resource) for c in refused if call_allowed(policy, c)]
    assert not allowed, allowed


def test_the_policy_scopes_changes_by_the_controller_tag_being_there_not_by_this_clusters_name(built):
    # What the official policy grants, stated so nobody reads more into it: it lets the controller change any load
    # balancer carrying elbv2.k8s.aws/cluster, whatever cluster's name is in it (another controller's in the same
    # account included); the hand-written policy it replaces limited changes to this cluster's name, and denied
    # the controller's own tagged CreateListener and CreateRule. Listener, rule, target-registration and
    # security-group-ingress calls are not tag-scoped at all upstream.
    settings, records = built
    policy = _controller_policy(records)
    other = f"arn:aws:elasticloadbalancing:{R}:{A}:loadbalancer/app/k8s-other-alb/1234567890abcdef"
    assert call_allowed(policy, Call("elasticloadbalancing:DeleteLoadBalancer", other,
                                     resource_tags={CLUSTER_TAG: "another-cluster"}))
    assert not call_allowed(policy, Call("elasticloadbalancing:DeleteLoadBalancer", other))


# --- 4. the chart's Service webhook -----------------------------------------------------------------------------------

def _merged(defaults: dict, values: dict) -> dict:
    """Helm's values: the user's override the chart's, maps merged key by key."""
    out = dict(defaults)
    for k, v in values.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _lookup(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values[part]
    return values


def installed_mutating_webhooks(values: dict) -> list[dict]:
    """The chart's mutating webhooks its template renders with these values (from the stored excerpt of chart
    1.13.0's values.yaml and templates/webhook.yaml), each with its failurePolicy and operations resolved."""
    chart = json.loads(CHART_EXCERPT.read_text())
    merged = _merged(chart["defaults"], values)
    out = []
    for hook in chart["mutating_webhooks"]:
        if hook["if"] is not None and not _lookup(merged, hook["if"]):
            continue
        resolve = lambda f: _lookup(merged, f["value"]) if isinstance(f, dict) else f  # noqa: E731
        out.append({**hook, "failurePolicy": resolve(hook["failurePolicy"]), "operations": resolve(hook["operations"])})
    return out


def _controller_values(records) -> dict:
    (release,) = [r for r in releases(records) if r.get("chart") == "aws-load-balancer-controller"]
    return release.get("values", {})


def test_the_chart_defaults_would_hold_every_service_create_on_the_controller():
    # The excerpt can say no: with no values the chart installs a Service webhook that fails closed.
    hooks = [h for h in installed_mutating_webhooks({}) if "services" in h["resources"]]
    assert [(h["failurePolicy"], h["operations"]) for h in hooks] == [("Fail", ["CREATE"])]


def test_no_service_create_waits_on_the_load_balancer_controller(built):
    # Nothing here is a Service of type LoadBalancer, the only kind the webhook changes; on, it would make every
    # Service CREATE in the cluster (kube-prometheus-stack's included) fail until the controller's pods answer.
    _, records = built
    hooks = installed_mutating_webhooks(_controller_values(records))
    assert not [h["name"] for h in hooks if "services" in h["resources"]]


# --- 5. EKS add-ons over the self-managed ones ------------------------------------------------------------------------

def test_every_configured_addon_overwrites_the_self_managed_copy_on_create(built):
    # EKS installs vpc-cni, coredns and kube-proxy itself (self-managed) when it creates a cluster; creating the
    # add-on over them with conflicting fields fails unless told to overwrite ("Conflicts found when trying to
    # apply", aws/amazon-network-policy-controller-k8s#200: the PolicyEndpoint CRD with enableNetworkPolicy).
    _, records = built
    configured = [r for r in records if r.type == "aws:eks/addon:Addon" and r.inputs.get("configurationValues")]
    assert configured
    assert {r.name: r.inputs.get("resolveConflictsOnCreate") for r in configured} == {
        r.name: "OVERWRITE" for r in configured}

"""The way in: a TLS certificate for the stack's domain (ACM, validated through its Route 53 zone) and the AWS Load
Balancer Controller, which turns the Triton Ingress into an internet-facing ALB that ends TLS and forwards to the
pods' IPs (one target group per pool Service, weighted as the plan routes).

The controller's IAM policy is written here for what this stack's Ingress makes it do (an ALB, its listeners, rules,
target groups and security groups); every change it may make is limited to resources tagged with this cluster's
name, or to this stack's VPC.
"""
from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cluster import Cluster
from infra.iam import irsa_trust, role
from infra.network import Network
from infra.settings import StackSettings

CONTROLLER_SA = "aws-load-balancer-controller"
CONTROLLER_CHART_VERSION = "1.13.0"
# The tag the controller puts on every AWS resource it creates, with the cluster's name as its value.
CLUSTER_TAG = "elbv2.k8s.aws/cluster"


def controller_policy(cluster_name: str, vpc_arn: str) -> dict:
    """What the controller may do for an internet-facing ALB with IP targets, and nothing for any other cluster."""
    mine = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster_name}}
    tagged_at_creation = {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster_name}}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Discover", "Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
            "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeRouteTables",
            "ec2:GetSecurityGroupsForVpc", "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:DescribeListenerCertificates",
            "elasticloadbalancing:DescribeSSLPolicies", "elasticloadbalancing:DescribeRules",
            "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags",
            "acm:ListCertificates", "acm:DescribeCertificate"]},
        {"Sid": "ElbServiceLinkedRole", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}},
        {"Sid": "CreateTagged", "Effect": "Allow", "Resource": "*", "Condition": tagged_at_creation, "Action": [
            "ec2:CreateSecurityGroup", "elasticloadbalancing:CreateLoadBalancer",
            "elasticloadbalancing:CreateTargetGroup"]},
        # Tags in the creating call only: adding this cluster's tag to someone else's resource would make it "mine".
        {"Sid": "TagSecurityGroupOnCreate", "Effect": "Allow", "Resource": "*", "Action": "ec2:CreateTags",
         "Condition": {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster_name,
                                        "ec2:CreateAction": "CreateSecurityGroup"}}},
        {"Sid": "TagElbOnCreate", "Effect": "Allow", "Resource": "*", "Action": "elasticloadbalancing:AddTags",
         "Condition": {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster_name,
                                        "elasticloadbalancing:CreateAction": ["CreateTargetGroup",
                                                                              "CreateLoadBalancer"]}}},
        {"Sid": "ManageOwn", "Effect": "Allow", "Resource": "*", "Condition": mine, "Action": [
            "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
            "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:RegisterTargets",
            "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:ModifyListener", "elasticloadbalancing:CreateRule",
            "elasticloadbalancing:DeleteRule", "elasticloadbalancing:ModifyRule",
            "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:RemoveListenerCertificates"]},
        # The ALB reaches pod IPs through the nodes' security group, which the controller did not create: it may
        # open ports on security groups in this VPC only.
        {"Sid": "OpenBackendPorts", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
         "Condition": {"ArnEquals": {"ec2:Vpc": vpc_arn}}}]}


class Edge(pulumi.ComponentResource):
    """``certificate_arn`` (issued once ``validation`` completes) and ``controller`` (the Helm release whose webhook
    an Ingress needs); an Ingress waits for both."""

    def __init__(self, name: str, settings: StackSettings, cluster: Cluster, network: Network,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.domain = settings.tls_domain
        self._zone = settings.hosted_zone_id
        cert = aws.acm.Certificate(f"{name}-tls", domain_name=settings.tls_domain, validation_method="DNS",
                                   opts=child)
        option = cert.domain_validation_options.apply(lambda o: o[0])
        record = aws.route53.Record(f"{name}-tls-validation", zone_id=settings.hosted_zone_id,
                                    name=option.apply(lambda o: o["resource_record_name"]),
                                    type=option.apply(lambda o: o["resource_record_type"]),
                                    records=[option.apply(lambda o: o["resource_record_value"])], ttl=60,
                                    allow_overwrite=True, opts=child)
        self.validation = aws.acm.CertificateValidation(f"{name}-tls", certificate_arn=cert.arn,
                                                        validation_record_fqdns=[record.fqdn], opts=child)
        self.certificate_arn = self.validation.certificate_arn

        controller_role = role(f"{name}-lb-controller", irsa_trust(cluster.oidc, "kube-system", CONTROLLER_SA),
                               [], child)
        self.controller_policy = aws.iam.RolePolicy(
            f"{name}-lb-controller", role=controller_role.id,
            policy=pulumi.Output.all(cluster.eks.name, network.vpc.arn).apply(
                lambda a: json.dumps(controller_policy(a[0], a[1]))), opts=child)
        self.controller = k8s.helm.v3.Release(
            f"{name}-aws-load-balancer-controller", name="aws-load-balancer-controller", namespace="kube-system",
            chart="aws-load-balancer-controller", version=CONTROLLER_CHART_VERSION,
            repository_opts={"repo": "https://aws.github.io/eks-charts"},
            values={"clusterName": cluster.eks.name, "region": settings.region, "vpcId": network.vpc.id,
                    "replicaCount": 2,
                    "serviceAccount": {"create": True, "name": CONTROLLER_SA,
                                       "annotations": {"eks.amazonaws.com/role-arn": controller_role.arn}}},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                        depends_on=[*cluster.ready, self.controller_policy]))
        self.register_outputs({"certificate_arn": self.certificate_arn})

    def dns_name(self, name: str, hostname: pulumi.Output, opts: pulumi.ResourceOptions) -> aws.route53.Record:
        """The stack's domain pointed at the load balancer the controller made for an Ingress."""
        return aws.route53.Record(name, zone_id=self._zone, name=self.domain, type="CNAME", ttl=60,
                                  records=[hostname], allow_overwrite=True, opts=opts)

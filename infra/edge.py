"""The way in: a TLS certificate for the stack's domain (ACM, validated through its Route 53 zone) and the AWS Load
Balancer Controller, which turns the Triton Ingress into an internet-facing ALB that ends TLS and forwards to the
pods' IPs (one target group per pool Service, weighted as the plan routes).

The controller's IAM policy is the controller's official one for the pinned version, stored byte for byte in
``infra/data/aws_load_balancer_controller_iam_policy.json`` with its source beside it; it scopes changes by the
controller's tag (elbv2.k8s.aws/cluster) being on a resource.
"""
from __future__ import annotations

from pathlib import Path

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
# The controller's official IAM policy for the version the chart deploys, byte for byte, and where it came from.
CONTROLLER_POLICY_PATH = Path(__file__).parent / "data" / "aws_load_balancer_controller_iam_policy.json"
CONTROLLER_POLICY_SOURCE_PATH = Path(__file__).parent / "data" / "aws_load_balancer_controller_iam_policy.source.json"


def controller_policy() -> str:
    """The controller's official IAM policy (docs/install/iam_policy.json at the controller version chart
    CONTROLLER_CHART_VERSION deploys), as published. Its changes are scoped by the controller's tag being on a
    resource (``Null`` on aws:ResourceTag/elbv2.k8s.aws/cluster), not by this cluster's name; a hand-written
    narrower policy denied the tagged CreateListener/CreateRule controller v2.13.0 sends (issue 24)."""
    return CONTROLLER_POLICY_PATH.read_text()


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
        # Inline: the document (8,955 characters as published, whitespace included) is under IAM's 10,240 for a
        # role's inline policies.
        self.controller_policy = aws.iam.RolePolicy(f"{name}-lb-controller", role=controller_role.id,
                                                    policy=controller_policy(), opts=child)
        self.controller = k8s.helm.v3.Release(
            f"{name}-aws-load-balancer-controller", name="aws-load-balancer-controller", namespace="kube-system",
            chart="aws-load-balancer-controller", version=CONTROLLER_CHART_VERSION,
            repository_opts={"repo": "https://aws.github.io/eks-charts"},
            values={"clusterName": cluster.eks.name, "region": settings.region, "vpcId": network.vpc.id,
                    "replicaCount": 2,
                    # Chart 1.13.0 defaults this on (eks-charts@1c41b77e stable/aws-load-balancer-controller/
                    # values.yaml: enableServiceMutatorWebhook: true, failurePolicy: Fail, operations [CREATE]):
                    # every Service CREATE in the cluster would then fail until the controller's pods answer, which
                    # races the other releases (aws-load-balancer-controller#4140). It only defaults Services of
                    # type LoadBalancer to this controller, and this stack has none.
                    "enableServiceMutatorWebhook": False,
                    "serviceAccount": {"create": True, "name": CONTROLLER_SA,
                                       "annotations": {"eks.amazonaws.com/role-arn": controller_role.arn}}},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                        depends_on=[*cluster.ready, self.controller_policy]))
        self.register_outputs({"certificate_arn": self.certificate_arn})

    def dns_name(self, name: str, hostname: pulumi.Output, opts: pulumi.ResourceOptions) -> aws.route53.Record:
        """The stack's domain pointed at the load balancer the controller made for an Ingress."""
        return aws.route53.Record(name, zone_id=self._zone, name=self.domain, type="CNAME", ttl=60,
                                  records=[hostname], allow_overwrite=True, opts=opts)

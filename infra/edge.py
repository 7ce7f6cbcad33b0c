"""The way in: the AWS Load Balancer Controller, which turns the Triton Ingress into an internet-facing ALB that
forwards to the pods' IPs (one target group per pool Service, weighted as the plan routes), and TLS as a choice.

No ``gpufleet:tlsDomain``: plain HTTP on the load balancer's own hostname, said loudly (a warning at every preview,
and the ``endpoint`` output is ``http://``). A domain: its public Route 53 zone is looked up before anything is
created (:func:`hosted_zone`), the domain must lie inside it, ACM issues a certificate validated by a record in that
zone, and the domain is an alias A record on the ALB (valid at a zone apex, unlike a CNAME). Neither record
overwrites one that exists: Route 53 refuses the create, and the error names the record to import or remove.

The controller's IAM policy is the controller's official one for the pinned version, stored byte for byte in
``infra/data/aws_load_balancer_controller_iam_policy.json`` with its source beside it; it scopes changes by the
controller's tag (elbv2.k8s.aws/cluster) being on a resource.
"""
from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gpufleet.errors import RunFailure
from infra.cluster import Cluster
from infra.iam import irsa_trust, role
from infra.network import Network
from infra.settings import InfraInputError, StackSettings

CONTROLLER_SA = "aws-load-balancer-controller"
CONTROLLER_CHART_VERSION = "1.13.0"
# The tag the controller puts on every AWS resource it creates, with the cluster's name as its value.
CLUSTER_TAG = "elbv2.k8s.aws/cluster"
# The controller's official IAM policy for the version the chart deploys, byte for byte, and where it came from.
CONTROLLER_POLICY_PATH = Path(__file__).parent / "data" / "aws_load_balancer_controller_iam_policy.json"
CONTROLLER_POLICY_SOURCE_PATH = Path(__file__).parent / "data" / "aws_load_balancer_controller_iam_policy.source.json"
# How long `pulumi up` waits for ACM to issue the certificate. The provider's own wait is 75 minutes
# (hashicorp/terraform-provider-aws internal/service/acm/certificate_validation.go: Create DefaultTimeout(75m)),
# which is what an undelegated zone costs: ACM never sees the record and the run hangs. In a delegated Route 53 zone
# a new record answers within about a minute and ACM issues within minutes; 20 minutes leaves room for a slow ACM
# (terraform-provider-aws#9338 reports rare waits past 45 minutes) while a misconfiguration fails in a third of the
# time. Nothing is lost on a timeout: the certificate and its record stay, and the next `pulumi up` waits again.
VALIDATION_TIMEOUT_MIN = 20
PLAIN_HTTP_WARNING = ("gpufleet:tlsDomain is not set: the inference endpoint is plain HTTP on the load balancer's own "
                      "hostname (port 80, no TLS). Set gpufleet:tlsDomain to a name in a public Route 53 zone of this "
                      "account to serve HTTPS only.")


# How the provider says a zone lookup found no single zone (hashicorp/terraform-provider-aws
# internal/service/route53/zone_data_source.go and GetHostedZone's NoSuchHostedZone error).
ZONE_NOT_FOUND = ("NoSuchHostedZone", "no matching Route 53 Hosted Zone", "multiple Route 53 Hosted Zones matched")


def hosted_zone(settings: StackSettings) -> aws.route53.GetZoneResult | None:
    """The public Route 53 zone the stack's domain lives in (None with no domain), looked up when the program starts
    (``infra.program.build`` calls it before declaring any resource, so at preview), so that a zone the account does
    not hold, a private zone or a domain outside the zone stops the run with one line before anything exists.

    By ``hostedZoneId`` when set (zone names are not unique in Route 53; the id is); else by the domain's parent
    name, as ``aws_route53_zone`` looks public zones up by name (hashicorp/terraform-provider-aws
    internal/service/route53/zone_data_source.go: every zone listed, filtered by name and private_zone=false, exactly
    one must match). A domain at its zone's apex, or two labels or more below it, needs ``hostedZoneId``.
    """
    domain = settings.tls_domain
    if domain is None:
        return None
    try:
        if settings.hosted_zone_id:
            zone = aws.route53.get_zone(zone_id=settings.hosted_zone_id)
        else:
            zone = aws.route53.get_zone(name=domain.split(".", 1)[1], private_zone=False)
    except Exception as exc:  # a failed invoke is a plain Exception (pulumi.runtime.invoke)
        reason = " ".join(str(exc).split())
        # Only the lookup's own answers are about the settings (the provider's words: route53 zone_data_source.go);
        # expired credentials or throttling are a run-time failure, not a zone to create.
        if not any(m in reason for m in ZONE_NOT_FOUND):
            raise RunFailure(f"Route 53 zone lookup for {domain} failed: {reason}") from None
        if settings.hosted_zone_id:
            raise InfraInputError(f"gpufleet:hostedZoneId: {settings.hosted_zone_id} is not a hosted zone this "
                                  f"account can read ({reason})") from None
        raise InfraInputError(f"gpufleet:tlsDomain: no single public Route 53 zone {domain.split('.', 1)[1]} in "
                              f"this account for {domain} ({reason}); create and delegate it, set "
                              "gpufleet:hostedZoneId, or remove gpufleet:tlsDomain to serve plain HTTP") from None
    name = zone.name.rstrip(".").lower()
    if zone.private_zone:
        raise InfraInputError(f"gpufleet:hostedZoneId: {zone.zone_id} ({name}) is a private zone; ACM validates "
                              "through public DNS, so the certificate would never be issued")
    if domain != name and not domain.endswith(f".{name}"):
        raise InfraInputError(f"gpufleet:tlsDomain: {domain} is not in zone {zone.zone_id} ({name}); use a name "
                              f"under {name}, or the zone id of the domain's own zone")
    return zone


def controller_policy() -> str:
    """The controller's official IAM policy (docs/install/iam_policy.json at the controller version chart
    CONTROLLER_CHART_VERSION deploys), as published. Its changes are scoped by the controller's tag being on a
    resource (``Null`` on aws:ResourceTag/elbv2.k8s.aws/cluster), not by this cluster's name; a hand-written
    narrower policy denied the tagged CreateListener/CreateRule controller v2.13.0 sends (issue 24)."""
    return CONTROLLER_POLICY_PATH.read_text()


class Edge(pulumi.ComponentResource):
    """``controller`` (the Helm release whose webhook an Ingress needs) and, with a domain, ``certificate_arn``
    (issued once ``validation`` completes); an Ingress waits for :attr:`ready`. ``zone``: :func:`hosted_zone`'s
    answer, looked up before any resource is declared."""

    def __init__(self, name: str, settings: StackSettings, cluster: Cluster, network: Network,
                 zone: aws.route53.GetZoneResult | None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.domain = settings.tls_domain
        self.region = settings.region
        self.zone = zone
        self.validation = None
        self.certificate_arn = None
        if self.domain is None:
            pulumi.log.warn(PLAIN_HTTP_WARNING, resource=self)
        else:
            cert = aws.acm.Certificate(f"{name}-tls", domain_name=self.domain, validation_method="DNS", opts=child)
            option = cert.domain_validation_options.apply(lambda o: o[0])
            # ACM gives the same validation CNAME for the same name in one account: if it is already in the zone
            # (another stack, or a certificate made by hand), Route 53 refuses this create. Import it
            # (`pulumi import aws:route53/record:Record <name> <zone id>_<record name>_CNAME`) or delete it; never
            # overwrite it, which would take it from whoever made it.
            record = aws.route53.Record(f"{name}-tls-validation", zone_id=self.zone.zone_id,
                                        name=option.apply(lambda o: o["resource_record_name"]),
                                        type=option.apply(lambda o: o["resource_record_type"]),
                                        records=[option.apply(lambda o: o["resource_record_value"])], ttl=60,
                                        opts=child)
            self.validation = aws.acm.CertificateValidation(
                f"{name}-tls", certificate_arn=cert.arn, validation_record_fqdns=[record.fqdn],
                opts=pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{VALIDATION_TIMEOUT_MIN}m")))
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

    @property
    def ready(self) -> list[pulumi.Resource]:
        """What an Ingress waits for: the controller (its webhook), and the issued certificate when there is one."""
        return [self.controller] + ([self.validation] if self.validation is not None else [])

    def endpoint(self, hostname: pulumi.Output) -> pulumi.Output:
        """The URL clients use: ``https://<domain>``, or ``http://<load balancer hostname>`` with no domain."""
        if self.domain is None:
            return hostname.apply(lambda h: f"http://{h}")
        return pulumi.Output.from_input(f"https://{self.domain}")

    def dns_name(self, name: str, hostname: pulumi.Output, opts: pulumi.ResourceOptions) -> aws.route53.Record | None:
        """The stack's domain as an alias A record on the load balancer the controller made for an Ingress (None with
        no domain). An alias names the ALB's DNS name and the canonical hosted zone of ALBs in the region (the
        table in the AWS General Reference, "Elastic Load Balancing endpoints"; served by ``aws_lb_hosted_zone_id``,
        hashicorp/terraform-provider-aws internal/service/elbv2/hosted_zone_id_data_source.go). Target health is
        evaluated so that failover records added later can use it; a lone simple record is answered either way
        (Route 53 treats every record of a group as healthy when none is)."""
        if self.domain is None:
            return None
        alb_zone = aws.lb.get_hosted_zone_id(load_balancer_type="application", region=self.region)
        return aws.route53.Record(name, zone_id=self.zone.zone_id, name=self.domain, type="A",
                                  aliases=[aws.route53.RecordAliasArgs(name=hostname, zone_id=alb_zone.id,
                                                                       evaluate_target_health=True)], opts=opts)

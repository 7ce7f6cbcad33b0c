"""A preview without the Pulumi CLI: run the program under ``pulumi.runtime.set_mocks`` and record every resource.

:class:`Recorder` is the mock provider: it keeps each resource's type, name and inputs, and answers with outputs that
look enough like AWS's (ids, ARNs, the EKS endpoint and OIDC issuer) for the program's ``apply`` chains to run.
:func:`preview` returns the records; :func:`manifests` turns the Kubernetes ones back into objects (numbers that
came back as floats made integers again) for YAML and ``kubernetes-validate``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi

from gpufleet.contracts.plan import Plan
from infra.settings import StackSettings


MOCK_ACCOUNT = "123456789012"
MOCK_REGION = "us-east-1"
# The Route 53 hosted zones the mock account holds: zone id -> {"name": ..., "private": bool}. None: it holds the
# zone the stack's settings ask for (by id, named after the domain's parent; by name, that name) and nothing else,
# so a preview renders a stack whose zone would exist. Tests set it to play an account that holds other zones.
ACCOUNT_ZONES: dict[str, dict] | None = None
# The canonical hosted zone of Application Load Balancers per region, what an alias record to an ALB names: AWS
# General Reference, "Elastic Load Balancing endpoints and quotas"; the table aws_lb_hosted_zone_id answers from
# (hashicorp/terraform-provider-aws internal/service/elbv2/hosted_zone_id_data_source.go, HostedZoneIdPerRegionALBMap).
ALB_HOSTED_ZONES = {"us-east-1": "Z35SXDOTRQ7X7K", "us-east-2": "Z3AADJGX6KTTL2", "us-west-1": "Z368ELLRRE2KJ0",
                    "us-west-2": "Z1H1FL5HABSF5", "eu-west-1": "Z32O12XQLNTSW2", "eu-central-1": "Z215JYRZR1TBD5"}
Key = tuple[str, str]  # (type, name): a resource's identity in the stack, as in its URN


@dataclass(frozen=True)
class Recorded:
    type: str
    name: str
    inputs: dict
    id: str = ""


# The forms EC2 gives its ids (a prefix and 17 hex digits), so that checks of an id's format see real-looking ones.
EC2_ID_PREFIX = {"vpc": "vpc", "subnet": "subnet", "routeTable": "rtb", "internetGateway": "igw",
                 "natGateway": "nat", "eip": "eipalloc", "launchTemplate": "lt", "capacityReservation": "cr",
                 "securityGroup": "sg", "vpcEndpoint": "vpce", "routeTableAssociation": "rtbassoc"}


def mock_id(typ: str, name: str) -> str:
    module, _, kind = typ.split(":")[1].partition("/")
    if typ.startswith("aws:ec2/") and kind in EC2_ID_PREFIX:
        return f"{EC2_ID_PREFIX[kind]}-{hashlib.sha256(name.encode()).hexdigest()[:17]}"
    return f"{name}-id"


@dataclass
class Graph:
    """The explicit creation order the program declares: each resource's parent and ``depends_on``, components
    included. Pulumi creates a resource after everything it depends on, and a dependency on a component waits for
    all of the component's descendants."""

    parent: dict[Key, Key | None]
    depends_on: dict[Key, tuple[Key, ...]]

    def descendants(self, key: Key) -> set[Key]:
        out, frontier = set(), {key}
        while frontier:
            frontier = {k for k, p in self.parent.items() if p in frontier} - out
            out |= frontier
        return out

    def waits_for(self, later: Key, earlier: Key) -> bool:
        """True when ``later`` is created only after ``earlier`` exists, through declared dependencies."""
        seen, stack = set(), [later]
        while stack:
            key = stack.pop()
            for dep in self.depends_on.get(key, ()):
                if dep in seen:
                    continue
                seen.add(dep)
                if dep == earlier or earlier in self.descendants(dep):
                    return True
                stack.append(dep)
                stack.extend(self.descendants(dep))
        return False


def mock_zone_id(name: str) -> str:
    """A hosted zone id of Route 53's form ("Z" and 13 to 21 upper-case letters and digits) for a zone name."""
    return "Z" + hashlib.sha256(name.encode()).hexdigest().upper()[:20]


def account_zones(settings: StackSettings) -> dict[str, dict]:
    """The zones the mock account holds for a stack (:data:`ACCOUNT_ZONES`, else the one its settings ask for)."""
    if ACCOUNT_ZONES is not None:
        return ACCOUNT_ZONES
    if settings.tls_domain is None:
        return {}
    parent = settings.tls_domain.split(".", 1)[1]
    return {settings.hosted_zone_id or mock_zone_id(parent): {"name": parent}}


class Recorder(pulumi.runtime.Mocks):
    def __init__(self, zones: dict[str, dict] | None = None):
        self.resources: list[Recorded] = []
        self.zones = zones or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        rid = mock_id(args.typ, args.name)
        if args.typ.startswith("aws:"):
            service, kind = args.typ.split(":")[1].split("/")[0], args.typ.split(":")[-1].lower()
            region = "" if service == "iam" else MOCK_REGION
            outputs.setdefault("arn", f"arn:aws:{service}:{region}:{MOCK_ACCOUNT}:{kind}/{args.name}")
        if args.typ == "aws:eks/cluster:Cluster":
            outputs.update(endpoint="https://mock.eks.amazonaws.com",
                           certificateAuthority={"data": "bW9jaw=="},
                           identities=[{"oidcs": [{"issuer": "https://oidc.eks.mock.amazonaws.com/id/MOCK"}]}])
        if args.typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            outputs.setdefault("url", "https://oidc.eks.mock.amazonaws.com/id/MOCK")
        if args.typ == "aws:s3/bucket:Bucket":
            outputs.setdefault("bucket", f"{args.name}-bucket")
            rid = outputs["bucket"]
            outputs["arn"] = f"arn:aws:s3:::{rid}"  # the form IAM policies match against
        if args.typ == "aws:kms/key:Key":
            outputs["arn"] = f"arn:aws:kms:{MOCK_REGION}:{MOCK_ACCOUNT}:key/{args.name}"
        if args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs.setdefault("latestVersion", 1)
        if args.typ == "aws:iam/role:Role":
            outputs.setdefault("name", args.name)
        if args.typ == "aws:ec2/vpc:Vpc":
            outputs["arn"] = f"arn:aws:ec2:{MOCK_REGION}:{MOCK_ACCOUNT}:vpc/{rid}"
        if args.typ == "aws:acm/certificate:Certificate":
            # What ACM answers for DNS validation: one CNAME per name (its documented form).
            outputs["arn"] = f"arn:aws:acm:{MOCK_REGION}:{MOCK_ACCOUNT}:certificate/{args.name}"
            outputs["domainValidationOptions"] = [{
                "domainName": args.inputs["domainName"], "resourceRecordType": "CNAME",
                "resourceRecordName": f"_0123456789abcdef.{args.inputs['domainName']}.",
                "resourceRecordValue": "_fedcba9876543210.mock.acm-validations.aws."}]
        if args.typ == "kubernetes:networking.k8s.io/v1:Ingress":
            # What the load balancer controller writes once the ALB exists (its DNS name's documented form).
            outputs["status"] = {"loadBalancer": {"ingress": [
                {"hostname": f"k8s-{args.name[:20]}-0123456789.{MOCK_REGION}.elb.amazonaws.com"}]}}
        if args.typ == "aws:route53/record:Record":
            outputs["fqdn"] = str(args.inputs.get("name", "")).rstrip(".")
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), rid))
        return [rid, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:savingsplans/getOfferings:getOfferings":
            return {"offerings": [{"offeringId": "00000000-0000-0000-0000-000000000000",
                                   "planType": (args.args.get("planTypes") or [""])[0]}]}
        if args.token == "aws:route53/getZone:getZone":
            return self._zone(args.args)
        if args.token == "aws:lb/getHostedZoneId:getHostedZoneId":
            # The provider answers from its per-region table, and refuses a region it does not list.
            region = args.args.get("region") or MOCK_REGION
            if (args.args.get("loadBalancerType") or "application") != "application" or region not in ALB_HOSTED_ZONES:
                return {}, [("region", f"unsupported AWS Region: {region}")]
            return {"id": ALB_HOSTED_ZONES[region], "region": region, "loadBalancerType": "application"}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": MOCK_ACCOUNT, "arn": f"arn:aws:iam::{MOCK_ACCOUNT}:user/mock", "userId": "MOCK",
                    "id": MOCK_ACCOUNT}
        return {}

    def _zone(self, query: dict):
        """aws_route53_zone (hashicorp/terraform-provider-aws internal/service/route53/zone_data_source.go): by id,
        GetHostedZone (NoSuchHostedZone if absent); by name, every zone whose name matches, filtered on private_zone
        (default false), exactly one. It answers the name without its trailing dot."""
        if query.get("zoneId"):
            zone_id = query["zoneId"]
            if zone_id not in self.zones:
                return {}, [("zoneId", f"reading Route 53 Hosted Zone ({zone_id}): NoSuchHostedZone: No hosted zone "
                                       f"found with ID: {zone_id}")]
        else:
            want = str(query.get("name") or "").rstrip(".").lower()
            private = bool(query.get("privateZone"))
            found = [z for z, v in self.zones.items()
                     if v["name"].rstrip(".").lower() == want and bool(v.get("private")) == private]
            if len(found) != 1:
                return {}, [("name", "no matching Route 53 Hosted Zone found" if not found
                             else "multiple Route 53 Hosted Zones matched; use additional constraints")]
            zone_id = found[0]
        zone = self.zones[zone_id]
        return {"id": zone_id, "zoneId": zone_id, "name": zone["name"].rstrip("."),
                "privateZone": bool(zone.get("private")), "arn": f"arn:aws:route53:::hostedzone/{zone_id}",
                "nameServers": ["ns-1.awsdns-00.com.", "ns-2.awsdns-00.net."],
                "primaryNameServer": "ns-1.awsdns-00.com.", "resourceRecordSetCount": 2, "tags": {}}


def preview(settings: StackSettings, plan: Plan) -> list[Recorded]:
    """Build the stack under mocks and return every resource it declared."""
    return preview_graph(settings, plan)[0]


def preview_graph(settings: StackSettings, plan: Plan) -> tuple[list[Recorded], Graph]:
    """Build the stack under mocks; every resource it declared, and the declared creation order.

    ``pulumi.runtime.test`` (Pulumi's public testing API) runs the program and waits for every registration and
    ``apply`` it started, so the recorder holds the whole stack when it returns. A stack transformation (public API)
    sees each resource's options before it registers, which is where ``parent`` and ``depends_on`` live.
    """
    from infra.program import build

    recorder = Recorder(account_zones(settings))
    graph = Graph(parent={}, depends_on={})

    def record_options(args: pulumi.ResourceTransformationArgs):
        key = (args.type_, args.name)
        parent = args.opts.parent if args.opts else None
        graph.parent[key] = _key(parent) if parent is not None else None
        deps = args.opts.depends_on if args.opts and args.opts.depends_on is not None else []
        graph.depends_on[key] = tuple(_key(d) for d in (deps if isinstance(deps, (list, tuple)) else [deps]))
        return None

    def program():
        pulumi.runtime.register_stack_transformation(record_options)
        return pulumi.Output.from_input(build(settings, plan))

    pulumi.runtime.set_mocks(recorder, project="gpufleet", stack=settings.environment, preview=False)
    pulumi.runtime.test(program)()
    return recorder.resources, graph


def _key(resource: pulumi.Resource) -> Key:
    return (resource.pulumi_resource_type, resource.pulumi_resource_name)


def _ints(value):
    """Pulumi's mock monitor hands numbers back as floats; Kubernetes wants integers where they are whole."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def manifests(records: list[Recorded]) -> list[dict]:
    """The Kubernetes objects among ``records``, as manifests (Helm releases are not objects; see :func:`releases`)."""
    out = []
    for r in records:
        if not r.type.startswith("kubernetes:") or r.type.startswith("kubernetes:helm.sh/"):
            continue
        if r.type.startswith("pulumi:providers:"):
            continue
        obj = {k: v for k, v in _ints(r.inputs).items() if k not in ("__internal",)}
        if "apiVersion" not in obj or "kind" not in obj:
            _, group_version, kind = r.type.split(":")
            group, _, version = group_version.rpartition("/")
            group = "" if group == "core" else group
            obj = {"apiVersion": f"{group}/{version}" if group else version, "kind": kind, **obj}
        out.append(obj)
    return out


def releases(records: list[Recorded]) -> list[dict]:
    return [_ints(r.inputs) for r in records if r.type == "kubernetes:helm.sh/v3:Release"]


# Every IAM policy document a stack can carry, by where it sits: an inline policy, a managed policy it creates, a
# managed policy it attaches by ARN (AWS's or its own), a role's trust, and resource policies (bucket, KMS key).
POLICY_DOCUMENTS = {
    "aws:iam/rolePolicy:RolePolicy": ("inline", "policy"),
    "aws:iam/policy:Policy": ("managed", "policy"),
    "aws:iam/role:Role": ("trust", "assumeRolePolicy"),
    "aws:s3/bucketPolicy:BucketPolicy": ("resource", "policy"),
    "aws:kms/key:Key": ("resource", "policy"),
}
ATTACHMENTS = ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/policyAttachment:PolicyAttachment")
BUCKET_OBJECTS = ("aws:s3/bucketObjectv2:BucketObjectv2", "aws:s3/bucketObject:BucketObject")


def iam_policies(records: list[Recorded]) -> list[dict]:
    """Every IAM policy document the stack creates or attaches by ARN, as ``pulumi up`` would send it: for a review
    that reads the same thing the account will hold."""
    import json

    out = []
    for r in records:
        if r.type in POLICY_DOCUMENTS:
            kind, field = POLICY_DOCUMENTS[r.type]
            doc = r.inputs.get(field)
            if doc is None:
                continue
            out.append({"kind": kind, "type": r.type, "name": r.name,
                        **({"role": r.inputs["role"]} if "role" in r.inputs else {}),
                        "document": json.loads(doc) if isinstance(doc, str) else doc})
        elif r.type in ATTACHMENTS:
            out.append({"kind": "attached", "type": r.type, "name": r.name, "role": r.inputs.get("role"),
                        "policy_arn": r.inputs.get("policyArn")})
    return out


def bucket_objects(records: list[Recorded]) -> list[dict]:
    """Every object the stack puts in a bucket (``bucket`` is the bucket's name as the mock answers it)."""
    return [{"bucket": r.inputs.get("bucket"), "key": r.inputs.get("key")} for r in records if r.type in BUCKET_OBJECTS]

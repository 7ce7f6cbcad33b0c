"""AWS inputs checked against AWS's own published rules: each recorded ``pulumi_aws`` resource is written as the
CloudFormation resource that takes the same inputs, and cfn-lint checks the template against CloudFormation's resource
schemas (patterns, enums, lengths, formats of ids and ARNs, required properties and their combinations).

The two spell most inputs alike (``instanceType`` / ``InstanceType``); where they differ, :data:`SPECS` says how, per
type. An input CloudFormation has no property for is listed as unchecked, never dropped silently, and a type with no
CloudFormation counterpart is named in :data:`NO_COUNTERPART` with the reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

from infra.preview import Recorded

# Pulumi-only inputs: provider behaviour, not part of the AWS resource.
PULUMI_ONLY = {"forceDestroy", "tagsAll", "__internal", "resolveConflictsOnCreate", "resolveConflictsOnUpdate",
               "skipDestroy", "preserve", "region", "allowOverwrite"}
# cfn-lint rules about writing portable templates, not about what AWS accepts: the stack names its AZs on purpose.
TEMPLATE_STYLE_RULES = {"W3010"}
NO_COUNTERPART = {
    "aws:acm/certificateValidation:CertificateValidation":
        "a Pulumi waiter; CloudFormation validates inside AWS::CertificateManager::Certificate",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment":
        "CloudFormation attaches managed policies through AWS::IAM::Role ManagedPolicyArns; see the IAM tests",
    "aws:s3/bucketObjectv2:BucketObjectv2":
        "an S3 object: CloudFormation has no resource for one; each key is listed in bucket-objects.json and put in "
        "moto S3 by tests/test_first_deploy_local.py, which runs Triton against it",
    "aws:savingsplans/savingsPlan:SavingsPlan":
        "no CloudFormation resource; its offering query is checked against botocore's savingsplans model",
}


def _pascal(key: str) -> str:
    return key[:1].upper() + key[1:]


def _generic(value):
    """camelCase keys to PascalCase, all the way down; JSON policy documents parsed."""
    if isinstance(value, dict):
        return {_pascal(k): _generic(v) for k, v in value.items() if k not in PULUMI_ONLY}
    if isinstance(value, list):
        return [_generic(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _tag_list(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in (tags or {}).items()]


def _policy(text):
    return json.loads(text) if isinstance(text, str) else text


@dataclass(frozen=True)
class Spec:
    """How one Pulumi type is written in CloudFormation: its type, renamed inputs (Pulumi name -> CloudFormation
    name), and a function for inputs whose shape differs (given Pulumi's inputs, returns CloudFormation properties
    to add; the inputs it consumed are named in ``consumes``)."""

    cfn_type: str
    renames: dict[str, str] = field(default_factory=dict)
    convert: Callable[[dict, Recorded], dict] | None = None
    consumes: tuple[str, ...] = ()
    tags: str = "list"  # list: [{Key, Value}], map: as given, spec: EC2 TagSpecifications, none


def _cluster(i: dict, r: Recorded) -> dict:
    out = {}
    if "vpcConfig" in i:
        out["ResourcesVpcConfig"] = _generic(i["vpcConfig"])
    if "enabledClusterLogTypes" in i:
        out["Logging"] = {"ClusterLogging": {"EnabledTypes": [{"Type": t} for t in i["enabledClusterLogTypes"]]}}
    if "encryptionConfig" in i:
        e = i["encryptionConfig"]
        out["EncryptionConfig"] = [{"Resources": e["resources"], "Provider": {"KeyArn": e["provider"]["keyArn"]}}]
    return out


def _launch_template(i: dict, r: Recorded) -> dict:
    data = {k: v for k, v in i.items() if k not in ("name", "namePrefix", "tags", *PULUMI_ONLY)}
    return {"LaunchTemplateData": _generic(data)}


def _route_table(i: dict, r: Recorded) -> dict:
    return {}  # its inline routes become AWS::EC2::Route resources (see _extra_resources)


def _lifecycle(i: dict, r: Recorded) -> dict:
    rules = []
    for rule in i.get("rules") or []:
        out = {"Id": rule.get("id"), "Status": rule.get("status")}
        prefix = (rule.get("filter") or {}).get("prefix")
        if prefix is not None:
            out["Prefix"] = prefix
        if "expiration" in rule:
            out["ExpirationInDays"] = rule["expiration"].get("days")
        if rule.get("transitions"):
            out["Transitions"] = [{"TransitionInDays": t.get("days"), "StorageClass": t["storageClass"]}
                                  for t in rule["transitions"]]
        if rule.get("noncurrentVersionTransitions"):
            out["NoncurrentVersionTransitions"] = [{"TransitionInDays": t.get("noncurrentDays"),
                                                    "StorageClass": t["storageClass"]}
                                                   for t in rule["noncurrentVersionTransitions"]]
        if "noncurrentVersionExpiration" in rule:
            out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["noncurrentVersionExpiration"].get(
                "noncurrentDays")}
        if "abortIncompleteMultipartUpload" in rule:
            out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": rule[
                "abortIncompleteMultipartUpload"].get("daysAfterInitiation")}
        rules.append(_generic({k: v for k, v in out.items() if v is not None}))
    return {"BucketName": i["bucket"], "LifecycleConfiguration": {"Rules": rules}}


def _sse(i: dict, r: Recorded) -> dict:
    rules = [{"ServerSideEncryptionByDefault": {
                 "SSEAlgorithm": (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm"),
                 **({"KMSMasterKeyID": rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]}
                    if (rule.get("applyServerSideEncryptionByDefault") or {}).get("kmsMasterKeyId") else {})},
              **({"BucketKeyEnabled": rule["bucketKeyEnabled"]} if "bucketKeyEnabled" in rule else {})}
             for rule in i.get("rules") or []]
    return {"BucketName": i["bucket"], "BucketEncryption": {"ServerSideEncryptionConfiguration": rules}}


def _alias_target(i: dict, r: Recorded) -> dict:
    """Pulumi's ``aliases`` (a list of at most one) as CloudFormation's ``AliasTarget``."""
    return {"AliasTarget": {"DNSName": a["name"], "HostedZoneId": a["zoneId"],
                            "EvaluateTargetHealth": a.get("evaluateTargetHealth", False)}
            for a in i.get("aliases") or []}


def _bucket_part(prop: str, inner: Callable[[dict], dict]):
    return lambda i, r: {"BucketName": i["bucket"], prop: inner(i)}


# Pulumi splits a bucket's configuration into resources of their own; CloudFormation keeps it on AWS::S3::Bucket.
BUCKET_PARTS = {"aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
                "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                "aws:s3/bucketVersioning:BucketVersioning"}


SPECS: dict[str, Spec] = {
    "aws:acm/certificate:Certificate": Spec("AWS::CertificateManager::Certificate"),
    "aws:cloudwatch/logGroup:LogGroup": Spec("AWS::Logs::LogGroup", {"name": "LogGroupName", "kmsKeyId": "KmsKeyId"}),
    "aws:ec2/capacityReservation:CapacityReservation": Spec("AWS::EC2::CapacityReservation", tags="spec"),
    "aws:ec2/eip:Eip": Spec("AWS::EC2::EIP"),
    "aws:ec2/internetGateway:InternetGateway": Spec("AWS::EC2::InternetGateway", consumes=("vpcId",)),
    "aws:ec2/launchTemplate:LaunchTemplate": Spec("AWS::EC2::LaunchTemplate", {"name": "LaunchTemplateName"},
                                                  _launch_template, consumes=("*",), tags="none"),
    "aws:ec2/natGateway:NatGateway": Spec("AWS::EC2::NatGateway"),
    "aws:ec2/routeTable:RouteTable": Spec("AWS::EC2::RouteTable", convert=_route_table, consumes=("routes",)),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": Spec("AWS::EC2::SubnetRouteTableAssociation"),
    "aws:ec2/subnet:Subnet": Spec("AWS::EC2::Subnet"),
    "aws:ec2/vpc:Vpc": Spec("AWS::EC2::VPC"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": Spec("AWS::EC2::VPCEndpoint", tags="none"),
    "aws:eks/addon:Addon": Spec("AWS::EKS::Addon"),
    "aws:eks/cluster:Cluster": Spec("AWS::EKS::Cluster", convert=_cluster,
                                    consumes=("vpcConfig", "enabledClusterLogTypes", "encryptionConfig")),
    "aws:eks/nodeGroup:NodeGroup": Spec("AWS::EKS::Nodegroup", {"nodeGroupName": "NodegroupName",
                                                                "nodeRoleArn": "NodeRole", "subnetIds": "Subnets"},
                                        tags="map"),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": Spec(
        "AWS::IAM::OIDCProvider", {"clientIdLists": "ClientIdList", "thumbprintLists": "ThumbprintList"}),
    "aws:iam/role:Role": Spec("AWS::IAM::Role", {"name": "RoleName"},
                              lambda i, r: {"AssumeRolePolicyDocument": _policy(i["assumeRolePolicy"])},
                              consumes=("assumeRolePolicy",)),
    "aws:iam/rolePolicy:RolePolicy": Spec(
        "AWS::IAM::RolePolicy", convert=lambda i, r: {"PolicyName": i.get("name") or r.name[:128],
                                                      "RoleName": i["role"], "PolicyDocument": _policy(i["policy"])},
        consumes=("name", "role", "policy"), tags="none"),
    "aws:kms/key:Key": Spec("AWS::KMS::Key", {"deletionWindowInDays": "PendingWindowInDays"},
                            lambda i, r: {"KeyPolicy": _policy(i["policy"])} if "policy" in i else {},
                            consumes=("policy",)),
    # Pulumi's `aliases` (a list of one) is CloudFormation's AliasTarget.
    "aws:route53/record:Record": Spec("AWS::Route53::RecordSet", {"zoneId": "HostedZoneId", "ttl": "TTL",
                                                                  "records": "ResourceRecords"},
                                      _alias_target, consumes=("aliases",), tags="none"),
    # An autonamed bucket is checked under the name the preview gave it.
    "aws:s3/bucket:Bucket": Spec("AWS::S3::Bucket", {"bucket": "BucketName"},
                                 lambda i, r: {} if "bucket" in i else {"BucketName": r.id}),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": Spec(
        "AWS::S3::Bucket", convert=_lifecycle, consumes=("*",), tags="none"),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": Spec(
        "AWS::S3::Bucket", convert=_bucket_part("OwnershipControls", lambda i: {"Rules": [
            {"ObjectOwnership": i["rule"]["objectOwnership"]}]}), consumes=("*",), tags="none"),
    "aws:s3/bucketPolicy:BucketPolicy": Spec(
        "AWS::S3::BucketPolicy", convert=lambda i, r: {"Bucket": i["bucket"], "PolicyDocument": _policy(i["policy"])},
        consumes=("*",), tags="none"),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": Spec(
        "AWS::S3::Bucket", convert=_bucket_part("PublicAccessBlockConfiguration", lambda i: _generic(
            {k: v for k, v in i.items() if k != "bucket"})), consumes=("*",), tags="none"),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": Spec(
        "AWS::S3::Bucket", convert=_sse, consumes=("*",), tags="none"),
    "aws:s3/bucketVersioning:BucketVersioning": Spec(
        "AWS::S3::Bucket", convert=_bucket_part("VersioningConfiguration", lambda i: {
            "Status": i["versioningConfiguration"]["status"]}), consumes=("*",), tags="none"),
}


@dataclass
class Translation:
    template: dict
    unchecked: list[str]  # "<resource>: <input>" with no CloudFormation property, or "<type>: <reason>"
    origin: dict[str, str]  # logical id in the template -> the Pulumi resource's name


def _logical_id(name: str, taken: dict) -> str:
    base = re.sub(r"[^A-Za-z0-9]", "", name.title())[:200] or "Resource"
    out, n = base, 1
    while out in taken:
        n += 1
        out = f"{base}{n}"
    return out


def to_template(records: list[Recorded], schema_properties: Callable[[str], set[str]]) -> Translation:
    resources, unchecked, origin = {}, [], {}
    buckets: dict[str, str] = {}  # bucket name -> logical id
    # Buckets before the parts that configure them.
    for r in sorted(records, key=lambda r: r.type in BUCKET_PARTS):
        if not r.type.startswith("aws:"):
            continue
        if r.type in NO_COUNTERPART:
            line = f"{r.type}: {NO_COUNTERPART[r.type]}"
            if line not in unchecked:
                unchecked.append(line)
            continue
        spec = SPECS.get(r.type)
        if spec is None:
            unchecked.append(f"{r.type}: no CloudFormation mapping in infra/cfn.py (add one)")
            continue
        inputs = r.inputs
        props = spec.convert(inputs, r) if spec.convert else {}
        consumed = set(spec.consumes) | set(PULUMI_ONLY) | {"tags"}
        if "*" not in consumed:
            for k, v in inputs.items():
                if k not in consumed:
                    props[spec.renames.get(k, _pascal(k))] = _generic(v)
        tags = inputs.get("tags")
        if tags and spec.tags == "list":
            props["Tags"] = _tag_list(tags)
        elif tags and spec.tags == "map":
            props["Tags"] = tags
        elif tags and spec.tags == "spec":
            props["TagSpecifications"] = [{"ResourceType": "capacity-reservation", "Tags": _tag_list(tags)}]
        known = schema_properties(spec.cfn_type)
        for key in sorted(set(props) - known):
            unchecked.append(f"{r.name}: {key} (no {spec.cfn_type} property)")
            del props[key]
        if r.type in BUCKET_PARTS and props.get("BucketName") in buckets:
            owner = resources[buckets[props.pop("BucketName")]]["Properties"]
            owner.update(props)
            continue
        logical = _logical_id(r.name, resources)
        resources[logical] = {"Type": spec.cfn_type, "Properties": props}
        origin[logical] = r.name
        if r.type == "aws:s3/bucket:Bucket":
            buckets[props["BucketName"]] = logical
        if r.type == "aws:ec2/routeTable:RouteTable":
            for n, route in enumerate(inputs.get("routes") or []):
                rid = _logical_id(f"{r.name}-route-{n}", resources)
                resources[rid] = {"Type": "AWS::EC2::Route", "Properties": {
                    "RouteTableId": r.id, **_generic(route)}}
                resources[rid]["Properties"] = {("DestinationCidrBlock" if k == "CidrBlock" else k): v
                                                for k, v in resources[rid]["Properties"].items()}
                origin[rid] = r.name
    return Translation({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}, unchecked, origin)


def check_aws_inputs(records: list[Recorded], region: str) -> tuple[list[str], list[str]]:
    """(problems, unchecked): each problem one line naming the Pulumi resource, the rule and the value."""
    from cfnlint.api import ManualArgs, lint
    from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER

    def properties(cfn_type: str) -> set[str]:
        return set(PROVIDER_SCHEMA_MANAGER.get_resource_schema(region, cfn_type).schema["properties"])

    t = to_template(records, properties)
    matches = lint(json.dumps(t.template), config=ManualArgs(regions=[region]))
    problems = []
    for m in matches:
        if m.rule.id in TEMPLATE_STYLE_RULES:
            continue
        path = list(getattr(m, "path", None) or getattr(m, "path_string", "").split("/"))
        logical = path[1] if len(path) > 1 and path[0] == "Resources" else "?"
        where = "/".join(str(p) for p in path[3:]) if len(path) > 3 else ""
        problems.append(f"{t.origin.get(logical, logical)}: {where}: {m.rule.id} {m.message}")
    return problems, t.unchecked

"""Issue 24, defect 12: what the stack does with its logs, its uploads and its namespaces once deployed.

Each test reads what the program declares under the mock recorder (``infra.preview``) and checks it against what the
component on the other side does: the load balancer controller's annotation parser, the ELB log delivery's bucket
requirements, S3's lifecycle, Helm's refusal to install into a namespace that does not exist.
"""
import json

import pytest

from infra.preview import MOCK_ACCOUNT, preview_graph
from infra.program import load_plan
from infra.settings import settings_from_config, stack_file_config

from .iam_eval import allowed_for

RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
BUCKET = "aws:s3/bucket:Bucket"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LB_ATTRIBUTES = "alb.ingress.kubernetes.io/load-balancer-attributes"
# The principal ELB delivers access logs as, in us-east-1 (a Region available before August 2022): the Region's
# Elastic Load Balancing account (ALB user guide, "Enable access logs for your Application Load Balancer", step 2;
# the guide's table).
ELB_ACCOUNT_US_EAST_1 = {"AWS": "arn:aws:iam::127311923021:root"}
# Regions available as of August 2022 deliver as this service principal (same page).
ELB_LOG_SERVICE = {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
TLS = {"aws:SecureTransport": "true"}


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request):
    settings = settings_from_config(stack_file_config(request.param), request.param)
    records, graph = preview_graph(settings, load_plan(settings))
    return settings, records, graph


def _ns_of(r) -> str | None:
    if r.type == RELEASE:
        return r.inputs.get("namespace")
    return (r.inputs.get("metadata") or {}).get("namespace")


def test_everything_in_the_monitoring_namespace_waits_for_it(built):
    # Helm installs into an existing namespace only (the releases do not set createNamespace): a release created
    # before its Namespace fails with 'namespaces "monitoring" not found'. Likewise for the dashboards' ConfigMaps.
    _, records, graph = built
    (ns,) = [r for r in records if r.type == NAMESPACE and r.inputs["metadata"]["name"] == "monitoring"]
    inside = [r for r in records if r.type.startswith("kubernetes:") and _ns_of(r) == "monitoring"]
    assert any(r.type == RELEASE and r.inputs["chart"] == "kube-prometheus-stack" for r in inside)
    late = [r.name for r in inside if not graph.waits_for((r.type, r.name), (ns.type, ns.name))]
    assert not late, late


def test_everything_in_a_namespace_the_stack_makes_waits_for_it(built):
    # The API server refuses an object in a namespace that does not exist yet ('namespaces "inference" not found');
    # Pulumi orders resources only by the dependencies declared, so each object must wait for its Namespace.
    _, records, graph = built
    made = {r.inputs["metadata"]["name"]: r for r in records if r.type == NAMESPACE}
    late = [(r.type.split(":")[-1], r.name) for r in records if r.type.startswith("kubernetes:") and _ns_of(r) in made
            and not graph.waits_for((r.type, r.name), (NAMESPACE, made[_ns_of(r)].name))]
    assert not late, late


def _bucket_rules(records, suffix):
    (lifecycle,) = [r for r in records if r.type == LIFECYCLE and r.name.endswith(suffix)]
    return lifecycle.inputs["rules"]


def test_the_models_bucket_aborts_incomplete_multipart_uploads(built):
    # `serving upload` sends large weights as multipart uploads (boto3's transfer manager, above 8 MiB); an upload
    # cut off midway leaves parts S3 stores and bills, invisible to a listing, until a lifecycle rule aborts them.
    _, records, _ = built
    rules = [r for r in _bucket_rules(records, "-models") if r["status"] == "Enabled"]
    aborts = [r["abortIncompleteMultipartUpload"]["daysAfterInitiation"] for r in rules
              if r.get("abortIncompleteMultipartUpload") and r.get("filter") in ({}, None)]
    assert aborts and 1 <= min(aborts) <= 7, rules


def _access_logs(records) -> dict[str, str]:
    """The Ingress's load-balancer attributes, split as the controller does (v2.13.0
    pkg/annotations/parser.go ParseStringMapAnnotation: comma-separated key=value pairs, split at the first '=')."""
    (ingress,) = [r for r in records if r.type == INGRESS]
    raw = ingress.inputs["metadata"]["annotations"].get(LB_ATTRIBUTES, "")
    pairs = [p.strip() for p in raw.split(",") if p.strip()]
    assert all("=" in p and p.split("=", 1)[0] for p in pairs), raw
    return dict(p.split("=", 1) for p in pairs)


def _bucket_named(records, bucket_name):
    (bucket,) = [r for r in records if r.type == BUCKET and r.id == bucket_name]
    return bucket


def test_the_load_balancer_writes_access_logs_to_a_bucket_of_the_stack(built):
    _, records, _ = built
    attrs = _access_logs(records)
    assert attrs.get("access_logs.s3.enabled") == "true", attrs
    bucket = _bucket_named(records, attrs["access_logs.s3.bucket"])
    # "The prefix that you specify must not include AWSLogs" (ALB user guide, access log files).
    assert "AWSLogs" not in attrs.get("access_logs.s3.prefix", "")
    assert bucket.name.endswith("-alb-logs")


def test_the_access_log_bucket_uses_the_only_encryption_alb_log_delivery_supports(built):
    # "The only server-side encryption option that's supported is Amazon S3-managed keys (SSE-S3)" (ALB user guide,
    # "Enable access logs for your Application Load Balancer", bucket requirements): with SSE-KMS, setting the
    # attribute fails (Access Denied for bucket) and the controller never finishes the Ingress.
    _, records, _ = built
    bucket = _bucket_named(records, _access_logs(records)["access_logs.s3.bucket"])
    (sse,) = [r for r in records if r.type == SSE and r.name == bucket.name]
    algos = {rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] for rule in sse.inputs["rules"]}
    assert algos == {"AES256"}, algos


def _access_log_policy(records):
    attrs = _access_logs(records)
    bucket = _bucket_named(records, attrs["access_logs.s3.bucket"])
    (pol,) = [r for r in records if r.type == BUCKET_POLICY and r.name == bucket.name]
    arn = f"arn:aws:s3:::{attrs['access_logs.s3.bucket']}"
    return json.loads(pol.inputs["policy"]), arn, attrs.get("access_logs.s3.prefix", "")


@pytest.mark.parametrize("principal", [ELB_ACCOUNT_US_EAST_1, ELB_LOG_SERVICE], ids=["elb-account", "service"])
def test_elb_may_deliver_access_logs_under_the_prefix_and_nothing_else(built, principal):
    _, records, _ = built
    policy, arn, prefix = _access_log_policy(records)
    base = f"{arn}/{prefix + '/' if prefix else ''}AWSLogs/{MOCK_ACCOUNT}"
    # Where ELB writes (user guide: bucket/prefix/AWSLogs/account/elasticloadbalancing/region/...), and the test
    # file it writes when the attribute is set.
    for key in (f"{base}/elasticloadbalancing/us-east-1/2025/01/01/x.log.gz", f"{base}/ELBAccessLogTestFile"):
        assert allowed_for(policy, principal, "s3:PutObject", key, TLS), key
    # Nothing broader: not another account's logs, not outside the prefix, no reads or deletes, not over plain HTTP.
    for action, key, ctx in (
            ("s3:PutObject", f"{arn}/{prefix}/AWSLogs/210987654321/x", TLS),
            ("s3:PutObject", f"{arn}/elsewhere/x", TLS),
            ("s3:GetObject", f"{base}/ELBAccessLogTestFile", TLS),
            ("s3:DeleteObject", f"{base}/ELBAccessLogTestFile", TLS),
            ("s3:PutObject", f"{base}/ELBAccessLogTestFile", {"aws:SecureTransport": "false"})):
        assert not allowed_for(policy, principal, action, key, ctx), (action, key, ctx)
    anyone = {"AWS": "arn:aws:iam::210987654321:root"}
    assert not allowed_for(policy, anyone, "s3:PutObject", f"{base}/ELBAccessLogTestFile", TLS)


def test_access_logs_expire_with_the_stacks_retention(built):
    settings, records, _ = built
    bucket = _bucket_named(records, _access_logs(records)["access_logs.s3.bucket"])
    rules = [r for r in _bucket_rules(records, bucket.name)
             if r["status"] == "Enabled" and r.get("filter") in ({}, None)]
    assert [r["expiration"]["days"] for r in rules if r.get("expiration")] == [settings.log_retention_days]


def test_a_region_opened_after_august_2022_gets_log_delivery_by_the_service_principal():
    """eu-central-2 (Zurich, 2022-11) has no ELB account in the guide's table: the stack must still build there, with
    the service principal as the only writer (a provider lookup of the account failed the whole program there)."""
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(update={"region": "eu-central-2"})
    plan = load_plan(settings_from_config(stack_file_config("dev"), "dev"))
    plan = plan.model_copy(update={"request": plan.request.model_copy(update={"region": "eu-central-2"})})
    records, _ = preview_graph(settings, plan)
    policy, arn, prefix = _access_log_policy(records)
    key = f"{arn}/{prefix}/AWSLogs/{MOCK_ACCOUNT}/ELBAccessLogTestFile"
    assert allowed_for(policy, ELB_LOG_SERVICE, "s3:PutObject", key, TLS)
    assert not allowed_for(policy, ELB_ACCOUNT_US_EAST_1, "s3:PutObject", key, TLS)

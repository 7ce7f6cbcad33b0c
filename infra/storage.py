"""Storage tiers: the S3 model repository, a data-and-logs bucket, and an encrypted gp3 StorageClass for hot caches.

- Models: versioned (a bad upload is one restore away), SSE-KMS with a customer key, public access blocked, TLS
  only; noncurrent versions move to STANDARD_IA after 30 days and GLACIER after 90, and expire after 365.
- Data and logs: SSE-KMS, public access blocked; objects move to STANDARD_IA at 30 days, GLACIER at 90, and expire
  after the stack's retention (logs are kept, not hoarded).
- ALB access logs: a bucket of their own, because ELB delivers access logs only to a bucket encrypted with SSE-S3
  ("The only server-side encryption option that's supported is Amazon S3-managed keys (SSE-S3)": ELB user guide,
  "Enable access logs for your Application Load Balancer", bucket requirements); SSE-KMS stays on everything else.
  Public access blocked, TLS only, the same tiers and retention as the data bucket; its policy lets ELB's log
  delivery put objects under ``<prefix>/AWSLogs/<account>/`` and nothing else (same page, step 2).
- gp3 StorageClass, encrypted, WaitForFirstConsumer (the volume is made in the pod's AZ): Triton's local model
  cache and stress-run results.
- Not used, and why: io2 (no latency-critical block IO; Triton reads the model once at load), EFS and FSx for Lustre
  (models are a few hundred MB to a few GB, pulled from S3 through the gateway endpoint at start; a shared file
  system would add cost and a failure domain for no gain at this size).
"""
from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cluster import Cluster
from infra.policy.rules import ACCESS_LOGS_BUCKET_SUFFIX
from infra.settings import StackSettings

GP3_CLASS = "gp3-encrypted"


# Days after creation an object moves to a class, and the least days that class bills (S3 pricing: Standard-IA
# 30 days, Glacier Flexible Retrieval 90 days minimum storage duration).
TIERS = (("STANDARD_IA", 30, 30), ("GLACIER", 90, 90))
# A multipart upload still open this long after it began is abandoned (a publish takes minutes, not days).
ABORT_UPLOADS_AFTER_DAYS = 7
# Where in the access-log bucket the ALB writes (it adds AWSLogs/<account>/elasticloadbalancing/<region>/...; the
# prefix "must not include AWSLogs").
ACCESS_LOG_PREFIX = "alb"
# Who delivers ALB access logs (ELB user guide, "Enable access logs for your Application Load Balancer", step 2): in
# Regions available before August 2022, the Region's Elastic Load Balancing account (the guide's table, stored with
# its source in data/elb_log_delivery_accounts.json); in later ones, this service principal. The table is read here
# rather than through aws.elb.get_service_account, which fails the whole program in a Region it does not list.
ELB_LOG_DELIVERY_SERVICE = "logdelivery.elasticloadbalancing.amazonaws.com"
ELB_LOG_ACCOUNTS = json.loads((Path(__file__).parent / "data" / "elb_log_delivery_accounts.json").read_text())[
    "accounts"]


def log_delivery_principal(region: str) -> dict:
    """The principals that deliver ALB access logs in ``region``: the service principal everywhere, and the Region's
    ELB account where the guide lists one."""
    account = ELB_LOG_ACCOUNTS.get(region)
    return {**({"AWS": f"arn:aws:iam::{account}:root"} if account else {}), "Service": ELB_LOG_DELIVERY_SERVICE}


def data_tiers(keep_days: int) -> dict:
    """Expire at the stack's retention; move to a cheaper class only where the object stays there at least as long
    as that class bills, so no move costs more than keeping the object where it was."""
    moves = [{"days": at, "storage_class": cls} for cls, at, minimum in TIERS if at + minimum <= keep_days]
    return {**({"transitions": moves} if moves else {}), "expiration": {"days": keep_days}}


class StorageTiers(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, cluster: Cluster,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:storage:StorageTiers", name, None, opts)
        protected = pulumi.ResourceOptions(parent=self, protect=settings.protect)
        child = pulumi.ResourceOptions(parent=self)
        self._policies: dict[aws.s3.Bucket, pulumi.Output] = {}
        self.key = aws.kms.Key(f"{name}-data", description=f"{settings.name} models, data and logs",
                               enable_key_rotation=True, deletion_window_in_days=30, opts=protected)
        self.models = self._bucket(f"{name}-models", settings, versioned=True, protected=protected, child=child,
                                   rules=[{"id": "age-out-old-model-versions", "status": "Enabled",
                                           "filter": {},
                                           "noncurrent_version_transitions": [
                                               {"noncurrent_days": 30, "storage_class": "STANDARD_IA"},
                                               {"noncurrent_days": 90, "storage_class": "GLACIER"}],
                                           "noncurrent_version_expiration": {"noncurrent_days": 365}},
                                          # An upload cut off midway (weights go up in parts) leaves parts S3
                                          # stores and bills, unlisted, until a rule aborts the upload.
                                          {"id": "abort-incomplete-uploads", "status": "Enabled", "filter": {},
                                           "abort_incomplete_multipart_upload": {
                                               "days_after_initiation": ABORT_UPLOADS_AFTER_DAYS}}])
        self.data = self._bucket(f"{name}-data-logs", settings, versioned=False, protected=protected, child=child,
                                 rules=[{"id": "tier-and-expire", "status": "Enabled", "filter": {},
                                         **data_tiers(settings.log_retention_days)}])
        self.access_logs = self._bucket(
            f"{name}{ACCESS_LOGS_BUCKET_SUFFIX}", settings, versioned=False, protected=protected, child=child,
            rules=[{"id": "tier-and-expire", "status": "Enabled", "filter": {},
                    **data_tiers(settings.log_retention_days)}],
            sse={"sse_algorithm": "AES256"}, writers=self._log_delivery(settings))
        # The Ingress's load-balancer attributes (controller annotation load-balancer-attributes), made from the
        # bucket policy's id too, so the Ingress waits for the policy: ELB checks that it may write when the
        # attribute is set, and refuses it (Access Denied for bucket) before the policy exists.
        self.alb_access_logs = pulumi.Output.all(self.access_logs.bucket, self._policies[self.access_logs]).apply(
            lambda a: f"access_logs.s3.enabled=true,access_logs.s3.bucket={a[0]},"
                      f"access_logs.s3.prefix={ACCESS_LOG_PREFIX}")
        k8s.storage.v1.StorageClass(f"{name}-gp3", metadata={"name": GP3_CLASS}, provisioner="ebs.csi.aws.com",
                                    parameters={"type": "gp3", "encrypted": "true"},
                                    volume_binding_mode="WaitForFirstConsumer", reclaim_policy="Delete",
                                    allow_volume_expansion=True,
                                    opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))
        self.register_outputs({"models_bucket": self.models.bucket, "data_bucket": self.data.bucket,
                               "access_logs_bucket": self.access_logs.bucket})

    @staticmethod
    def _log_delivery(settings: StackSettings):
        """The statement that lets ELB deliver this account's access logs, and only those (a function of the bucket's
        ARN)."""
        account = aws.get_caller_identity_output().account_id
        principal = log_delivery_principal(settings.region)
        return lambda arn: account.apply(lambda a: {
            "Sid": "ElbAccessLogDelivery", "Effect": "Allow", "Principal": principal, "Action": "s3:PutObject",
            "Resource": f"{arn}/{ACCESS_LOG_PREFIX}/AWSLogs/{a}/*"})

    def _bucket(self, name: str, settings: StackSettings, versioned: bool, protected, child, rules,
                sse: dict | None = None, writers=None) -> aws.s3.Bucket:
        bucket = aws.s3.Bucket(name, force_destroy=not settings.protect, opts=protected)
        aws.s3.BucketServerSideEncryptionConfiguration(name, bucket=bucket.id, rules=[{
            "apply_server_side_encryption_by_default": sse or {"sse_algorithm": "aws:kms",
                                                               "kms_master_key_id": self.key.arn},
            "bucket_key_enabled": sse is None}], opts=child)
        aws.s3.BucketPublicAccessBlock(name, bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                                       ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(name, bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"},
                                       opts=child)
        if versioned:
            aws.s3.BucketVersioning(name, bucket=bucket.id, versioning_configuration={"status": "Enabled"},
                                    opts=child)
        aws.s3.BucketLifecycleConfiguration(name, bucket=bucket.id, rules=rules, opts=child)

        def document(arn, extra):
            return json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
                *([extra] if extra else [])]})

        extra = bucket.arn.apply(writers) if writers else None
        policy = pulumi.Output.all(bucket.arn, extra).apply(lambda a: document(*a))
        self._policies[bucket] = aws.s3.BucketPolicy(name, bucket=bucket.id, policy=policy, opts=child).id
        return bucket

"""IAM documents built as data (no provider calls), so the program runs the same under mocks and for real."""
from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

MANAGED = "arn:aws:iam::aws:policy/"


def assume_role_policy(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def irsa_trust(provider: aws.iam.OpenIdConnectProvider, namespace: str, service_account: str) -> pulumi.Output[str]:
    """Trust for one Kubernetes service account only (sub and aud pinned), the least IRSA can grant."""
    def doc(args):
        arn, url = args
        issuer = url.replace("https://", "")
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": arn}, "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                           f"{issuer}:aud": "sts.amazonaws.com"}}}]})
    return pulumi.Output.all(provider.arn, provider.url).apply(doc)


def role(name: str, trust, managed: list[str] = (), opts: pulumi.ResourceOptions | None = None) -> aws.iam.Role:
    r = aws.iam.Role(name, assume_role_policy=trust, opts=opts)
    for policy in managed:
        aws.iam.RolePolicyAttachment(f"{name}-{policy.split('/')[-1]}", role=r.name, policy_arn=MANAGED + policy,
                                     opts=opts)
    return r

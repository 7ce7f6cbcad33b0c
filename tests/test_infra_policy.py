"""The policy pack: each rule passes a compliant resource and flags a non-compliant one; both stacks pass."""
import copy

import pytest

import pulumi  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)

from infra.policy.rules import RULES, Resource, StackArgs, check  # noqa: E402

RULE = {r.name: r for r in RULES}


def run(rule_name, *resources):
    rule, found = RULE[rule_name], []
    report = lambda message, urn=None: found.append(message)  # noqa: E731
    if rule.stack:
        rule.validate(StackArgs(list(resources)), report)
    else:
        for r in resources:
            rule.validate(r, report)
    return found


LT = Resource("aws:ec2/launchTemplate:LaunchTemplate", "lt", {
    "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
    "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeType": "gp3"}}]})
GPU_DEPLOYMENT = Resource("kubernetes:apps/v1:Deployment", "triton", {
    "metadata": {"name": "triton", "namespace": "inference"},
    "spec": {"template": {"metadata": {"labels": {"app": "triton", "gpufleet.io/gpu": "L4"}}, "spec": {
        "nodeSelector": {"gpufleet.io/gpu": "L4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{"name": "tritonserver", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
PDB = Resource("kubernetes:policy/v1:PodDisruptionBudget", "pdb", {
    "metadata": {"namespace": "inference"}, "spec": {"selector": {"matchLabels": {"app": "triton"}}}})


def node_group(name, capacity, min_size, gpu="L4"):
    return Resource("aws:eks/nodeGroup:NodeGroup", name, {
        "capacityType": capacity, "labels": {"gpufleet.io/gpu": gpu, "gpufleet.io/capacity": capacity.lower()},
        "scalingConfig": {"minSize": min_size, "desiredSize": min_size, "maxSize": min_size + 2}})


def changed(resource, path, value):
    props = copy.deepcopy(resource.props)
    node = props
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return Resource(resource.resource_type, resource.name, props)


def test_encryption_at_rest():
    assert run("encryption-at-rest", LT) == []
    assert run("encryption-at-rest", changed(LT, ["blockDeviceMappings", 0, "ebs", "encrypted"], "false"))
    eks = Resource("aws:eks/cluster:Cluster", "eks", {"encryptionConfig": {"resources": ["secrets"],
                                                                            "provider": {"keyArn": "arn:k"}}})
    assert run("encryption-at-rest", eks) == []
    assert run("encryption-at-rest", changed(eks, ["encryptionConfig"], {}))
    sc = Resource("kubernetes:storage.k8s.io/v1:StorageClass", "gp3", {
        "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3", "encrypted": "true"}})
    assert run("encryption-at-rest", sc) == []
    assert run("encryption-at-rest", changed(sc, ["parameters", "encrypted"], "false"))
    sse = Resource("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "b", {
        "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]})
    assert run("encryption-at-rest", sse) == []
    assert run("encryption-at-rest", changed(sse, ["rules", 0, "applyServerSideEncryptionByDefault",
                                                   "sseAlgorithm"], "AES256"))


def test_only_the_access_log_bucket_may_use_sse_s3():
    # ELB delivers ALB access logs only to an SSE-S3 bucket (ELB user guide, "Enable access logs for your
    # Application Load Balancer"): that bucket, and no other, may skip KMS.
    from infra.policy.rules import ACCESS_LOGS_BUCKET_SUFFIX

    sse_s3 = {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}
    kind = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    assert run("encryption-at-rest", Resource(kind, f"gpufleet-dev{ACCESS_LOGS_BUCKET_SUFFIX}", sse_s3)) == []
    assert run("encryption-at-rest", Resource(kind, "gpufleet-dev-data-logs", sse_s3))
    unencrypted = {"rules": [{"applyServerSideEncryptionByDefault": {}}]}
    assert run("encryption-at-rest", Resource(kind, f"gpufleet-dev{ACCESS_LOGS_BUCKET_SUFFIX}", unencrypted))


def test_imdsv2_required():
    assert run("imdsv2-required", LT) == []
    assert run("imdsv2-required", changed(LT, ["metadataOptions", "httpTokens"], "optional"))


def test_no_open_ingress_except_the_load_balancer():
    open_sg = Resource("aws:ec2/securityGroup:SecurityGroup", "sg", {
        "ingress": [{"fromPort": 443, "toPort": 443, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}], "tags": {}})
    assert run("no-open-ingress", open_sg)
    assert run("no-open-ingress", changed(open_sg, ["tags"], {"gpufleet:role": "load-balancer"})) == []
    assert run("no-open-ingress", changed(open_sg, ["ingress", 0, "cidrBlocks"], ["10.0.0.0/16"])) == []


def test_gpu_pods_have_limits_and_tolerations():
    assert run("gpu-pods-limits-tolerations", GPU_DEPLOYMENT) == []
    spec = ["spec", "template", "spec"]
    assert run("gpu-pods-limits-tolerations", changed(GPU_DEPLOYMENT, spec + ["tolerations"], []))
    assert run("gpu-pods-limits-tolerations",
               changed(GPU_DEPLOYMENT, spec + ["containers", 0, "resources"], {"limits": {"cpu": "2"}}))


def test_hpa_metric_is_served_by_the_adapter():
    hpa = Resource("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "hpa", {"spec": {"metrics": [
        {"type": "Pods", "pods": {"metric": {"name": "triton_rps"}, "target": {"type": "AverageValue"}}}]}})
    adapter = Resource("kubernetes:helm.sh/v3:Release", "adapter", {"chart": "prometheus-adapter", "values": {
        "rules": {"custom": [{"name": {"as": "triton_rps"}}]}}})
    assert run("hpa-metric-served", hpa, adapter) == []
    assert run("hpa-metric-served", hpa, changed(adapter, ["values", "rules", "custom", 0, "name", "as"], "other"))
    assert run("hpa-metric-served", hpa)


def test_pdb_exists_for_gpu_deployments_that_keep_two_and_not_over_one():
    two = changed(GPU_DEPLOYMENT, ["spec", "replicas"], 2)
    assert run("pdb-exists", two, PDB) == []
    assert run("pdb-exists", two)
    assert run("pdb-exists", two, changed(PDB, ["metadata", "namespace"], "other"))
    # One replica: a PDB either blocks every drain or lets the only pod go; none is right.
    assert run("pdb-exists", GPU_DEPLOYMENT) == []
    assert run("pdb-exists", GPU_DEPLOYMENT, PDB)
    hpa = Resource("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "hpa", {
        "metadata": {"namespace": "inference"}, "spec": {"scaleTargetRef": {"name": "triton"}, "minReplicas": 3}})
    assert run("pdb-exists", GPU_DEPLOYMENT, hpa)  # the HPA's floor is what the Deployment keeps


def test_on_demand_floor_when_spot_is_used():
    assert run("on-demand-floor", node_group("spot", "SPOT", 2), node_group("od", "ON_DEMAND", 1)) == []
    assert run("on-demand-floor", node_group("spot", "SPOT", 2))
    assert run("on-demand-floor", node_group("spot", "SPOT", 2), node_group("od", "ON_DEMAND", 0))
    assert run("on-demand-floor", node_group("od", "ON_DEMAND", 0)) == []  # no spot, no floor needed
    # The floor is per GPU type: an L4 on-demand node does not keep an L40S spot-only pool's traffic served.
    assert run("on-demand-floor", node_group("l4-od", "ON_DEMAND", 1, gpu="L4"),
               node_group("l40s-spot", "SPOT", 2, gpu="L40S"))
    assert run("on-demand-floor", node_group("l4-od", "ON_DEMAND", 1, gpu="L4"),
               node_group("l40s-spot", "SPOT", 2, gpu="L40S"), node_group("l40s-od", "ON_DEMAND", 1, gpu="L40S")) == []


def test_node_selectors_match_a_node_group():
    assert run("node-selectors-match", GPU_DEPLOYMENT, node_group("l4", "ON_DEMAND", 1)) == []
    assert run("node-selectors-match", GPU_DEPLOYMENT, node_group("t4", "ON_DEMAND", 1, gpu="T4"))


def test_buckets_private_and_encrypted():
    bucket = Resource("aws:s3/bucket:Bucket", "models", {})
    pab = Resource("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "models", {
        "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True})
    sse = Resource("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                   "models", {"rules": []})
    assert run("s3-private-and-encrypted", bucket, pab, sse) == []
    assert run("s3-private-and-encrypted", bucket, changed(pab, ["blockPublicPolicy"], False), sse)
    assert run("s3-private-and-encrypted", bucket, pab)


def test_there_are_at_least_eight_rules_and_each_is_tested():
    tested = {"encryption-at-rest", "imdsv2-required", "no-open-ingress", "gpu-pods-limits-tolerations",
              "hpa-metric-served", "pdb-exists", "on-demand-floor", "node-selectors-match", "s3-private-and-encrypted"}
    assert set(RULE) == tested and len(RULE) >= 8


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_both_stacks_pass_the_pack(stack_name):
    from infra.preview import preview
    from infra.program import load_plan
    from infra.settings import settings_from_config, stack_file_config

    settings = settings_from_config(stack_file_config(stack_name), stack_name)
    records = preview(settings, load_plan(settings))
    assert check([Resource(r.type, r.name, r.inputs) for r in records]) == []
    # ...and the pack is not vacuous on them: dropping the PDBs, or putting one over a single replica, is caught.
    resources = [Resource(r.type, r.name, r.inputs) for r in records]
    pdbs = [r for r in resources if r.resource_type == "kubernetes:policy/v1:PodDisruptionBudget"]
    if pdbs:
        assert any(rule == "pdb-exists" for rule, _ in check([r for r in resources if r not in pdbs]))
    single = [r for r in resources if r.resource_type == "kubernetes:apps/v1:Deployment"
              and r.props["metadata"]["name"].startswith("triton-")
              and not any(p.props["metadata"]["name"] == r.props["metadata"]["name"] for p in pdbs)]
    if single:
        labels = single[0].props["spec"]["template"]["metadata"]["labels"]
        extra = Resource("kubernetes:policy/v1:PodDisruptionBudget", "extra", {
            "metadata": {"namespace": single[0].props["metadata"]["namespace"]},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}})
        assert any(rule == "pdb-exists" for rule, _ in check(resources + [extra]))
    assert pdbs or single


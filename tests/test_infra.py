"""The Pulumi stacks under mocks: what each environment builds, sized by its plan, and valid Kubernetes."""
import json
import re
from pathlib import Path

import pytest

import pulumi  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import pulumi_aws  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)
import yaml  # noqa: E402

from gpufleet.kubernetes import validate_manifest  # noqa: E402
from infra.cli import main as infra_main  # noqa: E402
from infra.gpu_pools import CAPACITY_LABEL, GPU_LABEL, capacity_group  # noqa: E402
from infra.preview import manifests, preview, releases  # noqa: E402
from infra.program import load_plan  # noqa: E402
from infra.settings import ROOT, InfraInputError, settings_from_config, stack_file_config  # noqa: E402
from infra.alerts import alert_groups  # noqa: E402
from infra.triton import quantity  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request):
    settings = settings_from_config(stack_file_config(request.param), request.param)
    plan = load_plan(settings)
    return settings, plan, preview(settings, plan)


def of(records, type_):
    return [r for r in records if r.type == type_]


def k8s_named(records, kind, name):
    (obj,) = [m for m in manifests(records) if m["kind"] == kind and m["metadata"]["name"] == name]
    return obj


def test_network_spans_the_configured_azs_with_nat_per_environment(stack):
    settings, _, records = stack
    private = [r for r in of(records, "aws:ec2/subnet:Subnet") if "private" in r.name]
    assert sorted(r.inputs["availabilityZone"] for r in private) == sorted(settings.availability_zones)
    assert all(not r.inputs["mapPublicIpOnLaunch"] for r in of(records, "aws:ec2/subnet:Subnet"))
    nats = of(records, "aws:ec2/natGateway:NatGateway")
    assert len(nats) == (len(settings.availability_zones) if settings.environment == "prod" else 1)
    (endpoint,) = of(records, "aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{settings.region}.s3"
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"


def test_cluster_version_oidc_and_system_nodes(stack):
    settings, _, records = stack
    (eks,) = of(records, "aws:eks/cluster:Cluster")
    assert eks.inputs["version"] == settings.kubernetes_version
    assert eks.inputs["vpcConfig"]["publicAccessCidrs"] == settings.endpoint_public_cidrs
    assert eks.inputs["encryptionConfig"]["resources"] == ["secrets"]
    (oidc,) = of(records, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    (system,) = [r for r in of(records, "aws:eks/nodeGroup:NodeGroup") if r.name.endswith("-system")]
    assert system.inputs["capacityType"] == "ON_DEMAND"
    assert system.inputs["scalingConfig"]["minSize"] == settings.system_nodes
    assert {a.inputs["addonName"] for a in of(records, "aws:eks/addon:Addon")} >= {"vpc-cni", "aws-ebs-csi-driver"}


def test_gpu_node_groups_are_the_plans_pools(stack):
    _, plan, records = stack
    groups = [r for r in of(records, "aws:eks/nodeGroup:NodeGroup") if GPU_LABEL in (r.inputs.get("labels") or {})]
    for g in groups:
        assert g.inputs["amiType"] == "AL2023_x86_64_NVIDIA"
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in g.inputs["taints"]
    # A day plan's groups run from the day's fewest instances of each pool to its most; a point plan's hold its count.
    day = {(d.instance_type, d.capacity_type): (d.min_count, d.max_count) for d in plan.day.pools} if plan.day else {}
    bought, most = {}, {}
    for p in plan.pools:
        key = (p.gpu, capacity_group(p.capacity_type))
        low, high = day.get((p.instance_type, p.capacity_type), (p.count, p.count))
        bought[key] = bought.get(key, 0) + low
        most[key] = most.get(key, 0) + high
    for (gpu, cap), count in bought.items():
        matching = [g for g in groups if g.inputs["labels"][GPU_LABEL] == gpu
                    and g.inputs["labels"][CAPACITY_LABEL] == cap]
        assert sum(g.inputs["scalingConfig"]["minSize"] for g in matching) == count
        assert sum(g.inputs["scalingConfig"]["desiredSize"] for g in matching) == count
        assert sum(g.inputs["scalingConfig"]["maxSize"] for g in matching) >= most[(gpu, cap)]
        want = "SPOT" if cap == "spot" else "ON_DEMAND"
        assert all(g.inputs["capacityType"] == want for g in matching)
    for p in plan.pools:
        if p.capacity_type == "spot":
            (g,) = [g for g in groups if g.inputs["labels"][GPU_LABEL] == p.gpu
                    and g.inputs["labels"][CAPACITY_LABEL] == "spot"]
            assert p.instance_type in g.inputs["instanceTypes"] and len(g.inputs["instanceTypes"]) >= 2
    # Headroom to the HPA's maximum sits on the elastic group of each GPU type.
    for d in plan.deployments:
        mine = [g for g in groups if g.inputs["labels"][GPU_LABEL] == d.gpu]
        assert sum(g.inputs["scalingConfig"]["maxSize"] for g in mine) >= d.autoscaling.max_replicas


def test_prod_is_sized_by_its_day_plan(stack):
    settings, plan, records = stack
    if settings.environment != "prod":
        pytest.skip("dev is a point plan")
    assert plan.day is not None
    groups = [r for r in of(records, "aws:eks/nodeGroup:NodeGroup") if GPU_LABEL in (r.inputs.get("labels") or {})]
    on_demand = [g for g in groups if g.inputs["labels"][CAPACITY_LABEL] == "on-demand"]
    # The plan holds on-demand L40S only at the morning peak: its group sleeps at 0 instances and may grow to 1+.
    (od,) = [d for d in plan.day.pools if d.capacity_type == "on-demand"]
    assert (od.min_count, od.max_count) == (0, 1)
    assert [g.inputs["scalingConfig"]["minSize"] for g in on_demand] == [0]
    for d in plan.deployments:
        hpa = k8s_named(records, "HorizontalPodAutoscaler", f"triton-{settings.model_name or d.model}-{d.gpu.lower()}")
        fewest = min(sum(p.replicas.values()) for p in plan.day.periods)
        assert hpa["spec"]["minReplicas"] == fewest


def test_reserved_pools_are_open_capacity_reservations_sized_to_the_plan(stack):
    settings, plan, records = stack
    reserved = [p for p in plan.pools if p.capacity_type.startswith("reserved")]
    crs = of(records, "aws:ec2/capacityReservation:CapacityReservation")
    assert sorted((c.inputs["instanceType"], c.inputs["instanceCount"]) for c in crs) == \
        sorted((p.instance_type, p.count) for p in reserved)
    for c in crs:
        assert c.inputs["instanceMatchCriteria"] == "open"
        assert c.inputs["availabilityZone"] == settings.availability_zones[0]
        (lt,) = [r for r in of(records, "aws:ec2/launchTemplate:LaunchTemplate")
                 if r.name == c.name.removesuffix("-reservation")]
        assert lt.inputs["capacityReservationSpecification"] == {"capacityReservationPreference": "open"}


def test_storage_tiers(stack):
    settings, _, records = stack
    buckets = {r.name: r for r in of(records, "aws:s3/bucket:Bucket")}
    assert len(buckets) == 3  # models, data and logs, ALB access logs
    assert all(b.inputs["forceDestroy"] is (settings.environment == "dev") for b in buckets.values())
    (versioning,) = of(records, "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.name.endswith("-models") and versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    lifecycle = {r.name: r.inputs["rules"][0] for r in of(records,
                 "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")}
    models_rule = next(v for k, v in lifecycle.items() if k.endswith("-models"))
    assert [t["storageClass"] for t in models_rule["noncurrentVersionTransitions"]] == ["STANDARD_IA", "GLACIER"]
    # SSE-KMS everywhere but the ALB access-log bucket: ELB delivers only to SSE-S3 (test_infra_hygiene).
    for sse in of(records, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"):
        want = "AES256" if sse.name.endswith("-alb-logs") else "aws:kms"
        assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == want
    sc = k8s_named(records, "StorageClass", "gp3-encrypted")
    assert sc["parameters"] == {"type": "gp3", "encrypted": "true"} and sc["volumeBindingMode"] == "WaitForFirstConsumer"


def test_triton_deployments_hpas_and_routing_follow_the_plan(stack):
    settings, plan, records = stack
    model = settings.model_name or plan.deployments[0].model
    app = f"triton-{model}"
    for d in plan.deployments:
        name = f"{app}-{d.gpu.lower()}"
        dep = k8s_named(records, "Deployment", name)
        assert "replicas" not in dep["spec"]  # the HPA owns it (test_infra_rollout)
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {GPU_LABEL: d.gpu}
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        # Ready when the model is loaded, alive once the server runs (tests/test_first_deploy_local.py runs both).
        assert c["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{d.model}/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert any(a.endswith(f"/{settings.environment}/{model}/{d.gpu}") for a in c["args"])
        hpa = k8s_named(records, "HorizontalPodAutoscaler", name)["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (d.autoscaling.min_replicas, d.autoscaling.max_replicas)
        (metric,) = hpa["metrics"]
        assert metric["pods"]["metric"]["name"] == plan.autoscaling.metric
        assert metric["pods"]["target"]["averageValue"] == quantity(d.autoscaling.target_rate_per_replica)
        pdbs = [m for m in manifests(records) if m["kind"] == "PodDisruptionBudget" and m["metadata"]["name"] == name]
        if d.autoscaling.min_replicas >= 2:
            assert pdbs[0]["spec"]["maxUnavailable"] == 1
        else:
            assert not pdbs  # nothing to keep with one replica (the policy pack's pdb-exists rule)
    # The routing weights on the Ingress: test_infra_rollout (one weighted target group per pool).


def test_model_bucket_access_is_least_privilege_through_irsa(stack):
    settings, plan, records = stack
    (sa,) = [m for m in manifests(records) if m["kind"] == "ServiceAccount" and m["metadata"]["namespace"] ==
             settings.namespace]
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    (policy,) = [r for r in of(records, "aws:iam/rolePolicy:RolePolicy") if "s3-reader" in r.name]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    actions = sorted({a for s in statements for a in s["Action"]})
    assert actions == ["kms:Decrypt", "s3:GetObject", "s3:ListBucket"]  # evaluated per call in test_infra_rollout
    (get,) = [s for s in statements if s["Action"] == ["s3:GetObject"]]
    assert get["Resource"][0].endswith(f"/{settings.environment}/{plan.deployments[0].model}/*")
    (trust_role,) = [r for r in of(records, "aws:iam/role:Role") if r.name.endswith("s3-reader")]
    cond = json.loads(trust_role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert f"system:serviceaccount:{settings.namespace}:{sa['metadata']['name']}" in cond.values()


def test_observability_and_adapter_serve_the_hpa_metric(stack):
    _, plan, records = stack
    charts = {r["chart"]: r for r in releases(records)}
    assert {"kube-prometheus-stack", "dcgm-exporter", "prometheus-adapter"} <= set(charts)
    (rule,) = charts["prometheus-adapter"]["values"]["rules"]["custom"]
    spec = plan.autoscaling
    assert rule["name"] == {"matches": f"^{spec.source_series}$", "as": spec.metric}
    # The window and scrape interval the planner's lag model assumed are the ones deployed.
    assert f"[{spec.promql_window()}]" in rule["metricsQuery"]
    (monitor,) = [m for m in manifests(records) if m["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["interval"] == spec.scrape_interval() == f"{spec.scrape_interval_s:g}s"
    dashboards = [m for m in manifests(records) if m["kind"] == "ConfigMap"
                  and m["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboards) == 2


def test_the_plans_alert_rules_are_selected_by_the_charts_rule_selector(stack):
    """kube-prometheus-stack's operator loads a PrometheusRule only where the Prometheus it renders selects it: the
    chart's template and defaults at the pinned version (tests/data/kube_prometheus_stack_75.15.1_rule_selector.json)
    with the values the stack gives, evaluated here as Helm would."""
    _, _, records = stack
    chart = json.loads((DATA / "kube_prometheus_stack_75.15.1_rule_selector.json").read_text())
    (release,) = [r for r in releases(records) if r["chart"] == "kube-prometheus-stack"]
    assert release["version"] == "75.15.1"
    spec = {**chart["defaults"], **release["values"]["prometheus"]["prometheusSpec"]}
    # {{- if ruleSelector }} ... {{- else if ruleSelectorNilUsesHelmValues }} matchLabels release ... {{ else }} {}
    selector = spec["ruleSelector"] or ({"matchLabels": {"release": release["name"]}}
                                        if spec["ruleSelectorNilUsesHelmValues"] else {})
    rules = [m for m in manifests(records) if m["kind"] == "PrometheusRule"]
    assert rules, "the stack renders no PrometheusRule"
    for m in rules:
        labels = m["metadata"].get("labels") or {}
        assert set(selector) <= {"matchLabels"} and all(
            labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()), (labels, selector)
        # An empty ruleNamespaceSelector ({}, the chart's rendering when unset) selects every namespace; anything
        # else: the rule must sit where it selects, which only Prometheus' own namespace is sure to be.
        assert spec["ruleNamespaceSelector"] == {} or m["metadata"]["namespace"] == release["namespace"]


def test_the_prometheus_rule_is_admitted_by_the_operators_crd_schema(stack):
    """The API server admits a PrometheusRule by its CRD's OpenAPI schema (prometheus-operator v0.83.0, the chart's
    operator; tests/data/prometheus-operator): kubernetes-validate carries no custom resource's schema."""
    import jsonschema  # kubernetes-validate's own dependency

    _, _, records = stack
    crd = yaml.safe_load((DATA / "prometheus-operator" / "monitoring.coreos.com_prometheusrules-v0.83.0.yaml")
                         .read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    validator = jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])
    rules = [m for m in manifests(records) if m["kind"] == "PrometheusRule"]
    assert rules
    for m in rules:
        assert m["apiVersion"] == f"{crd['spec']['group']}/v1" and m["kind"] == crd["spec"]["names"]["kind"]
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(m)]
        assert not errors, errors


def test_the_rendered_alert_rules_are_the_plans(stack):
    """The PrometheusRule holds what the pure function makes of this stack's plan, for the Triton pods it deploys."""
    settings, plan, records = stack
    objs = manifests(records)
    apps = {d["metadata"]["labels"]["app"] for d in objs if d["kind"] == "Deployment"
            and d["metadata"]["name"].startswith("triton-")}
    (app,) = apps
    rules = [m for m in objs if m["kind"] == "PrometheusRule"]
    assert [g for m in rules for g in m["spec"]["groups"]] == alert_groups(plan, settings.namespace, app)


def test_triton_exports_the_p99_summary_the_alert_reads(stack):
    """Every Triton container turns on the latency summaries with the quantile the P99 rule selects, parsed as
    tritonserver parses them (server@r25.01 src/command_line_parser.cc ParseMetricsConfigOption: <setting>=<value>;
    core@r25.01 src/metric_model_reporter.cc ParseConfig/ParseQuantiles: summary_latencies=true, pairs split on ','
    then ':'). The quantile label must be spelled as Triton prints it (tests/data/triton/metrics-summary.txt)."""
    _, _, records = stack
    objs = manifests(records)
    p99 = [r for m in objs if m["kind"] == "PrometheusRule" for g in m["spec"]["groups"] for r in g["rules"]
           if r["alert"] == "TritonP99OverTarget"]
    assert p99
    wanted = {re.search(r'(nv_inference_\w+)\{[^}]*quantile="([^"]+)"', r["expr"]).groups() for r in p99}
    printed = set(re.findall(r'^(nv_inference_\w+)\{[^}]*quantile="([^"]+)"',
                             (DATA / "triton" / "metrics-summary.txt").read_text(), re.M))
    assert wanted <= printed, (wanted, printed)
    tritons = [c for d in objs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
               if c["name"] == "tritonserver"]
    assert tritons
    for c in tritons:
        config = dict(a.removeprefix("--metrics-config=").split("=", 1) for a in c["args"]
                      if a.startswith("--metrics-config="))
        assert config.get("summary_latencies") == "true", c["args"]
        quantiles = {float(pair.split(":")[0]) for pair in config.get("summary_quantiles", "").split(",") if pair}
        assert {float(q) for _, q in wanted} <= quantiles, c["args"]


def test_every_kubernetes_object_validates_strictly(stack):
    _, _, records = stack
    objs = manifests(records)
    verdicts = {(m["kind"], m["metadata"]["name"]): validate_manifest(m) for m in objs}
    assert all(v is None for (kind, _), v in verdicts.items()
               if kind not in ("HTTPRoute", "ServiceMonitor", "PrometheusRule")), \
        {k: v for k, v in verdicts.items() if v}
    # Whole numbers are integers again (the mock monitor returns floats).
    assert all(isinstance(m["spec"]["replicas"], int) for m in objs if m["kind"] == "Deployment"
               and "replicas" in m["spec"])


def test_a_plan_that_does_not_parse_stops_with_one_line(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text('{"schema_version": 1}')
    assert infra_main(["render", "--stack", "dev", "--plan", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("infra: error: gpufleet:planPath:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_plan_for_another_region_or_model_is_refused(tmp_path):
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = json.loads((ROOT / settings.plan_path).read_text())
    plan["request"]["region"] = "eu-west-1"
    p = tmp_path / "p.json"
    p.write_text(json.dumps(plan))
    with pytest.raises(InfraInputError, match="planned for eu-west-1"):
        load_plan(settings.model_copy(update={"plan_path": str(p)}))


def test_render_writes_valid_manifests_and_a_summary(tmp_path, capsys):
    assert infra_main(["render", "--stack", "prod", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "policy violations: 0" in out and "CRDs not schema-checked: PrometheusRule, ServiceMonitor" in out
    docs = list(yaml.safe_load_all((tmp_path / "prod/manifests.yaml").read_text()))
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                         "DaemonSet", "StorageClass", "Ingress", "ServiceMonitor"}
    summary = (tmp_path / "prod/aws-resources.md").read_text()
    assert "Capacity reservations" in summary and "SPOT" in summary


def test_node_groups_at_their_max_hold_every_gpu_pod_at_the_hpas_max(stack):
    """At the HPAs' maximum (and the canary's fixed replicas), every GPU pod the Deployments ask for has a GPU (or
    slice) on some node group at its max size; else a pod stays Pending and the autoscaler cannot help. Demand is read
    from the rendered Deployments and HPAs (the canary included), capacity from the node groups' max sizes."""
    _, plan, records = stack
    per_instance = {p.instance_type: p.gpus_per_instance for p in plan.pools}
    capacity: dict[str, int] = {}
    for g in of(records, "aws:eks/nodeGroup:NodeGroup"):
        gpu = (g.inputs.get("labels") or {}).get(GPU_LABEL)
        if gpu is not None:
            capacity[gpu] = capacity.get(gpu, 0) + int(g.inputs["scalingConfig"]["maxSize"]) * min(
                per_instance[t] for t in g.inputs["instanceTypes"] if t in per_instance)
    objs = manifests(records)
    hpa_max = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in objs
               if h["kind"] == "HorizontalPodAutoscaler"}
    demand: dict[str, int] = {}
    for d in objs:
        pod = d["spec"]["template"]["spec"] if d["kind"] == "Deployment" else None
        if pod is None or GPU_LABEL not in (pod.get("nodeSelector") or {}):
            continue
        per_pod = sum(int(v) for c in pod["containers"] for k, v in c["resources"]["limits"].items()
                      if k == "nvidia.com/gpu" or k.startswith("nvidia.com/mig-"))
        replicas = hpa_max.get(d["metadata"]["name"], d["spec"].get("replicas", 1))
        gpu = pod["nodeSelector"][GPU_LABEL]
        demand[gpu] = demand.get(gpu, 0) + replicas * per_pod
    assert demand and all(capacity.get(gpu, 0) >= n for gpu, n in demand.items()), (capacity, demand)

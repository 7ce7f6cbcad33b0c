"""A mix plan (planner recommend --mix) rolled out: shared Deployments serving several models from their own
repositories, one HPA per Deployment with a metric per model, per-model routes, IAM for every model's prefix; every
object valid, the policy pack passing."""
import json

import pytest

import pulumi  # noqa: F401 (a [test] dependency: a broken install fails here, never skips)

from gpufleet.kubernetes import validate_manifest
from infra.gpu_pools import GPU_LABEL
from infra.policy.rules import Resource, check
from infra.preview import manifests, preview
from infra.program import load_plan
from infra.settings import ROOT, InfraInputError, settings_from_config, stack_file_config
from infra.triton import ALB_MAX_WEIGHT, UNIT_LABEL, quantity, unit_name
from .iam_eval import allowed

MIX_PLAN = ROOT / "infra/plans/mix.plan.json"


@pytest.fixture(scope="module")
def stack():
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(update={"plan_path": str(MIX_PLAN)})
    plan = load_plan(settings)
    return settings.model_copy(update={"model_name": "mix"}), plan, preview(settings, plan)


def named(objs, kind, name):
    (obj,) = [m for m in objs if m["kind"] == kind and m["metadata"]["name"] == name]
    return obj


def test_the_committed_mix_plan_shares_a_deployment():
    plan = load_plan(settings_from_config(stack_file_config("dev"), "dev").model_copy(
        update={"plan_path": str(MIX_PLAN)}))
    assert plan.mix is not None and any(len(u) > 1 for u in plan.units())


def test_each_unit_is_one_deployment_serving_its_models_with_an_hpa_metric_each(stack):
    settings, plan, records = stack
    objs = manifests(records)
    app = "triton-mix"
    units = plan.units()
    assert len([m for m in objs if m["kind"] == "Deployment" and m["metadata"]["name"].startswith(app)]) == len(units)
    for unit in units:
        name = unit_name(app, unit)
        assert len(name) <= 63
        dep = named(objs, "Deployment", name)
        pod = dep["spec"]["template"]
        assert pod["metadata"]["labels"][UNIT_LABEL] == name
        assert pod["spec"]["nodeSelector"] == {GPU_LABEL: unit[0].gpu}
        repos = [a for a in pod["spec"]["containers"][0]["args"] if a.startswith("--model-repository=")]
        assert [r.rsplit("/", 3)[1:] for r in repos] == [[settings.environment, d.model, d.gpu] for d in unit]
        service = named(objs, "Service", name)
        assert service["spec"]["selector"][UNIT_LABEL] == name
        hpa = named(objs, "HorizontalPodAutoscaler", name)["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (unit[0].autoscaling.min_replicas,
                                                            unit[0].autoscaling.max_replicas)
        by_model = {m["pods"]["metric"]["selector"]["matchLabels"]["model"]: m["pods"]["target"]["averageValue"]
                    for m in hpa["metrics"]}
        assert by_model == {d.model: quantity(d.autoscaling.target_rate_per_replica) for d in unit}
        assert all(m["pods"]["metric"]["name"] == plan.autoscaling.metric for m in hpa["metrics"])
        if unit[0].autoscaling.min_replicas >= 2:
            pdb = named(objs, "PodDisruptionBudget", name)
            assert pdb["spec"]["selector"]["matchLabels"][UNIT_LABEL] == name


def test_each_models_path_goes_to_the_deployments_serving_it(stack):
    _, plan, records = stack
    (ingress,) = [m for m in manifests(records) if m["kind"] == "Ingress"]
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    notes = ingress["metadata"]["annotations"]
    for model in {d.model for d in plan.deployments}:
        action = paths[f"/v2/models/{model}"]
        groups = json.loads(notes[f"alb.ingress.kubernetes.io/actions.{action}"])["forwardConfig"]["targetGroups"]
        serving = {unit_name("triton-mix", u): d.routing_weight for u in plan.units() for d in u if d.model == model}
        assert {g["serviceName"] for g in groups} == set(serving)
        total = sum(serving.values())
        for g in groups:
            assert abs(g["weight"] / ALB_MAX_WEIGHT - serving[g["serviceName"]] / total) <= 1 / ALB_MAX_WEIGHT
    assert paths["/"] == "triton-mix"  # health and server metadata: any replica


def test_the_reader_may_get_every_served_model_and_nothing_else(stack):
    settings, plan, records = stack
    (policy,) = [r for r in records if r.type == "aws:iam/rolePolicy:RolePolicy" and "s3-reader" in r.name]
    doc = json.loads(policy.inputs["policy"])
    bucket = next(s["Resource"][0] for s in doc["Statement"] if s["Action"] == ["s3:ListBucket"])
    for d in plan.deployments:
        key = f"{bucket}/{settings.environment}/{d.model}/{d.gpu}/{d.model}/1/model.plan"
        assert allowed(doc, "s3:GetObject", key)
        assert allowed(doc, "s3:ListBucket", bucket, {"s3:prefix": f"{settings.environment}/{d.model}/{d.gpu}/"})
    assert not allowed(doc, "s3:GetObject", f"{bucket}/{settings.environment}/resnet50/T4/config.pbtxt")
    assert not allowed(doc, "s3:GetObject", f"{bucket}/prod/{plan.deployments[0].model}/T4/config.pbtxt")


def test_node_groups_leave_room_for_every_units_hpa(stack):
    _, plan, records = stack
    groups = [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup"]
    for gpu in {d.gpu for d in plan.deployments}:
        most = sum(u[0].autoscaling.max_replicas for u in plan.units() if u[0].gpu == gpu)
        room = sum(g.inputs["scalingConfig"]["maxSize"] for g in groups if g.inputs["labels"].get(GPU_LABEL) == gpu)
        assert room >= most, (gpu, room, most)


def test_every_object_validates_and_the_pack_passes(stack):
    _, _, records = stack
    verdicts = {(m["kind"], m["metadata"]["name"]): validate_manifest(m) for m in manifests(records)}
    assert all(v is None for (kind, _), v in verdicts.items()
               if kind not in ("HTTPRoute", "ServiceMonitor", "PrometheusRule")), \
        {k: v for k, v in verdicts.items() if v}
    assert check([Resource(r.type, r.name, r.inputs) for r in records]) == []


def test_a_mix_with_a_canary_is_refused(tmp_path):
    settings = settings_from_config(stack_file_config("dev"), "dev").model_copy(
        update={"plan_path": str(MIX_PLAN), "canary_image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                "canary_weight": 5})
    with pytest.raises(InfraInputError, match="canary"):
        load_plan(settings)

"""What the first ``pulumi up`` leaves for Triton and the load balancer, judged by the components' own rules: every
repository Triton is pointed at is a directory by Triton's S3 rule before its pod exists; a pod is Ready only for a
model it serves, with its ALB target health-checked on the same model; the controller gates the pods on their
target's health (the run of the real server is tests/test_first_deploy_local.py)."""
import pytest

import pulumi  # noqa: F401 (a [test] dependency: a broken install fails here, never skips)

from infra.preview import bucket_objects, manifests, preview_graph, releases
from infra.program import load_plan
from infra.settings import ROOT, settings_from_config, stack_file_config
from .alb_eval import readiness_gate_injected, target_group_services, target_group_setting

MIX_PLAN = ROOT / "infra/plans/mix.plan.json"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"


@pytest.fixture(scope="module", params=["dev", "prod", "mix"])
def stack(request):
    settings = settings_from_config(stack_file_config("prod" if request.param == "prod" else "dev"), request.param)
    if request.param == "mix":
        settings = settings.model_copy(update={"plan_path": str(MIX_PLAN)})
    plan = load_plan(settings)
    records, graph = preview_graph(settings, plan)
    return records, graph, manifests(records)


def triton_deployments(objs):
    return [m for m in objs if m["kind"] == "Deployment"
            and m["spec"]["template"]["spec"]["containers"][0]["name"] == "tritonserver"]


def repositories(dep) -> list[tuple[str, str]]:
    """(bucket, object path) of each ``--model-repository=s3://bucket/path`` the container is given."""
    urls = [a.partition("=")[2] for a in dep["spec"]["template"]["spec"]["containers"][0]["args"]
            if a.startswith("--model-repository=")]
    return [tuple(u.removeprefix("s3://").split("/", 1)) for u in urls]


def triton_is_directory(objects: list[dict], bucket: str, path: str) -> bool:
    """Triton's S3FileSystem::IsDirectory (triton-inference-server/core@r25.01, src/filesystem/implementations/s3.h):
    ListObjectsV2 with prefix ``AppendSlash(path)``; a directory when the listing holds any object. S3 has no
    folders: a prefix with nothing under it is not one, and ModelRepositoryManager::Create then fails ("repository
    path is not a valid directory") and the server is never live."""
    return any(o["bucket"] == bucket and o["key"].startswith(path.rstrip("/") + "/") for o in objects)


def test_every_repository_triton_reads_is_a_directory_before_its_pod_is_created(stack):
    records, graph, objs = stack
    objects = bucket_objects(records)
    for dep in triton_deployments(objs):
        key = (DEPLOYMENT, next(r.name for r in records if r.type == DEPLOYMENT
                                and r.inputs["metadata"]["name"] == dep["metadata"]["name"]))
        for bucket, path in repositories(dep):
            assert triton_is_directory(objects, bucket, path), \
                f"{dep['metadata']['name']}: s3://{bucket}/{path} is empty after pulumi up (objects: {objects})"
            makers = [(r.type, r.name) for r in records if r.type == BUCKET_OBJECT and r.inputs["bucket"] == bucket
                      and r.inputs["key"].startswith(path + "/")]
            assert any(graph.waits_for(key, m) for m in makers), \
                f"{dep['metadata']['name']} may start before s3://{bucket}/{path}/ exists"


def test_a_pod_is_ready_and_its_alb_target_healthy_only_for_a_model_it_serves(stack):
    _, _, objs = stack
    for dep in triton_deployments(objs):
        pod = dep["spec"]["template"]
        container = pod["spec"]["containers"][0]
        served = {path.split("/")[-2] for _, path in repositories(dep)}  # <env>/<model>/<gpu>
        ready = container["readinessProbe"]["httpGet"]["path"]
        # KServe v2: /v2/models/<name>/ready is 200 only once that model is loaded; /v2/health/ready is 200 on a
        # repository with no model at all (Triton's strict readiness counts only models it has seen).
        assert ready in {f"/v2/models/{m}/ready" for m in served}, f"{dep['metadata']['name']}: {ready}"
        for service in target_group_services(objs, dep["metadata"]["namespace"], pod["metadata"]["labels"]):
            # The target is healthy when the pod is ready. A target group over pods probed on different models (a
            # mix's Service over every replica) cannot ask for one model: it is checked on the server's strict
            # readiness, 200 once every model the server has seen is loaded.
            probed = {d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
                      for d in triton_deployments(objs)
                      if service in target_group_services(objs, d["metadata"]["namespace"],
                                                          d["spec"]["template"]["metadata"]["labels"])}
            want = ready if probed == {ready} else "/v2/health/ready"
            assert target_group_setting(objs, service, "healthcheck-path") == want, service["metadata"]["name"]


def test_pods_are_created_with_the_alb_target_health_readiness_gate(stack):
    records, _, objs = stack
    (controller,) = [r for r in releases(records) if r["chart"] == "aws-load-balancer-controller"]
    for dep in triton_deployments(objs):
        # A rolling update (maxUnavailable 0) then removes an old pod only once the new one's target is healthy in
        # the ALB, not merely once the kubelet's probe passes: otherwise every target can be initial or draining.
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert readiness_gate_injected(objs, dep["metadata"]["namespace"], labels, controller.get("values") or {}), \
            dep["metadata"]["name"]


def test_triton_pods_are_created_after_the_ingress_whose_target_groups_gate_them(stack):
    # The controller injects the gate only into a pod created while a TargetGroupBinding selects it
    # (aws-load-balancer-controller@v2.13.0 docs/deploy/pod_readiness_gate.md: "create ingress or service before
    # pod"); it makes the bindings when it builds the ALB, before it writes the Ingress status Pulumi awaits. Pods
    # made before the Ingress (the first rollout) would carry no gate until replaced.
    records, graph, objs = stack
    (ingress,) = [r for r in records if r.type == "kubernetes:networking.k8s.io/v1:Ingress"]
    deployments = [r for r in records if r.type == "kubernetes:apps/v1:Deployment"
                   and r.inputs["spec"]["template"]["spec"]["containers"][0]["name"] == "tritonserver"]
    early = [r.name for r in deployments if not graph.waits_for((r.type, r.name), (ingress.type, ingress.name))]
    assert deployments and not early, early

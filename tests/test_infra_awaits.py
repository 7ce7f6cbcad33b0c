"""What the first `pulumi up` of an empty account waits for, modelled on pulumi-kubernetes' own await logic.

Pulumi does not finish creating a Kubernetes object until the provider's awaiter for its kind says it is ready, and
gives up after the awaiter's timeout (10 minutes by default), failing the run. So every awaited object must be able
to become ready *during* the run that creates it, or carry ``pulumi.com/skipAwait: "true"``, or be created only
after what it waits for. This file is the model: which kinds are awaited and on what condition (the upstream rules
below, each with its source), and what can hold during the first run of this stack (the facts below). The tests read
the stack under mocks (``infra.preview``) and check every Kubernetes resource and Helm release against the model.

Upstream read: pulumi-kubernetes tag v4.32.0 (commit a03ff6ba58d2f1ea68319dda4b2c982119489c71), the newest release in
the stored snapshot; the installed provider is 4.34.2, and ``provider/pkg/await`` and ``provider/pkg/metadata`` are
unchanged between v4.32.0 and the snapshot's head (``git diff v4.32.0 HEAD -- provider/pkg/await`` is empty).
Helm's wait: helm/helm v3.20.2 (the version pulumi-kubernetes v4.32.0 pins in ``provider/go.mod``).
The load balancer controller: kubernetes-sigs/aws-load-balancer-controller v2.13.0 (the version the stack pins).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from infra.preview import Graph, Recorded, bucket_objects, manifests, preview_graph
from infra.program import load_plan
from infra.settings import ROOT, settings_from_config, stack_file_config

PK = "pulumi/pulumi-kubernetes@v4.32.0"

# ---------------------------------------------------------------------------------------------------------------
# Upstream rules: the annotations (provider/pkg/metadata/annotations.go:33-35) and how they choose the condition.
# ---------------------------------------------------------------------------------------------------------------
# metadata/overrides.go:108-118 (ReadyCondition): skipAwait "true" -> the condition is immediate; else a waitFor
# annotation replaces the built-in awaiter (await.go:330-347, `!custom`); else the kind's built-in awaiter from the
# table in await/awaiters.go:184-243; a kind with no entry there, or an entry with no await, is immediate unless
# PULUMI_K8S_AWAIT_ALL=true (overrides.go:113-117; this project never sets it).
SKIP_AWAIT = "pulumi.com/skipAwait"
WAIT_FOR = "pulumi.com/waitFor"
# await.go:306-309: 10 minutes unless customTimeouts or pulumi.com/timeoutSeconds (overrides.go:53-66).
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Rule:
    condition: str
    source: str


# await/awaiters.go:184-243, the built-in awaiters, by apiVersion/kind.
AWAITED = {
    "apps/v1/Deployment": Rule(
        "the new ReplicaSet has spec.replicas (1 when unset) Ready pods and the Deployment is Available",
        f"{PK}:provider/pkg/await/deployment.go:143-159,418-439,616-620,676-700"),
    "apps/v1/DaemonSet": Rule(
        "kstatus Current: every scheduled pod updated and Ready (none scheduled: ready at once)",
        f"{PK}:provider/pkg/await/daemonset.go:63-68,186-202"),
    "v1/Service": Rule(
        "ClusterIP with a selector: its Endpoints object seen, settled 10 s, and no notReadyAddresses "
        "(a selected pod that is running but not Ready fails it); no selector or headless: at once",
        f"{PK}:provider/pkg/await/service.go:318-363,396-425"),
    "networking.k8s.io/v1/Ingress": Rule(
        "status.loadBalancer.ingress non-empty; an Endpoints object named after each backend Service, or, where "
        "none appears (a use-annotation action is no Service), only a warning once endpoint events settle",
        f"{PK}:provider/pkg/await/ingress.go:102-154,256-264,296-339,393-436"),
    "v1/ServiceAccount": Rule(
        "at once on Kubernetes >= 1.24 (no token secret to wait for)",
        f"{PK}:provider/pkg/await/awaiters.go:470-477"),
    # Awaited kinds this stack does not create; a resource of one of them fails test_every_kind_is_modelled until
    # its condition is modelled here.
    "apps/v1/StatefulSet": Rule("all replicas Ready and updated", f"{PK}:provider/pkg/await/statefulset.go"),
    "batch/v1/Job": Rule("the Job completes", f"{PK}:provider/pkg/await/job.go"),
    "v1/Pod": Rule("the Pod is Ready (or Succeeded)", f"{PK}:provider/pkg/await/pod.go"),
    "v1/PersistentVolumeClaim": Rule(
        "Bound, or Pending where the StorageClass binds WaitForFirstConsumer (5 min)",
        f"{PK}:provider/pkg/await/awaiters.go:288-322"),
    "v1/PersistentVolume": Rule("Available or Bound", f"{PK}:provider/pkg/await/awaiters.go:259-280"),
    "v1/ReplicationController": Rule("availableReplicas == replicas", f"{PK}:provider/pkg/await/awaiters.go:361-392"),
    "v1/ResourceQuota": Rule("status.hard == spec.hard", f"{PK}:provider/pkg/await/awaiters.go:400-423"),
    "v1/Secret": Rule("service-account-token secrets: data filled in",
                      f"{PK}:provider/pkg/await/awaiters.go:431-462"),
}
# Kinds this stack creates that are immediate: listed with no await in awaiters.go:184-243 (ConfigMap, RBAC,
# StorageClass), or absent from it (HPA autoscaling/v2, PDB, NetworkPolicy, Namespace, ServiceMonitor and
# PrometheusRule: custom resources), so immediate by overrides.go:113-115. A Namespace is Active on creation.
IMMEDIATE = {"v1/ConfigMap", "v1/Namespace", "rbac.authorization.k8s.io/v1/ClusterRole",
             "rbac.authorization.k8s.io/v1/ClusterRoleBinding", "storage.k8s.io/v1/StorageClass",
             "autoscaling/v2/HorizontalPodAutoscaler", "policy/v1/PodDisruptionBudget",
             "networking.k8s.io/v1/NetworkPolicy", "monitoring.coreos.com/v1/ServiceMonitor",
             "monitoring.coreos.com/v1/PrometheusRule"}
# helm.sh/v3 Release: Helm's own wait (client.Wait = !skipAwait) with a 300 s default timeout
# (provider/pkg/provider/helm_release.go:63-64,428-441,606-612), over the chart's rendered objects only: Deployments
# (Ready replicas >= replicas - maxUnavailable), DaemonSets (Ready >= desired - maxUnavailable), StatefulSets, PVCs
# rendered by the chart (Bound), Services (a cluster IP; LoadBalancer: an address) (helm/helm@v3.20.2:
# pkg/kube/ready.go:92-206,253-340). Objects an operator makes later (the Prometheus StatefulSet and its
# WaitForFirstConsumer claim) are not in the manifest, so Helm never waits for them.
RELEASE = "kubernetes:helm.sh/v3:Release"
RELEASE_RULE = Rule("the chart's pods Ready on nodes that exist (Helm's wait, 300 s)",
                    "helm/helm@v3.20.2:pkg/kube/ready.go:92-206,253-340; "
                    f"{PK}:provider/pkg/provider/helm_release.go:428-441,606-612")

# ---------------------------------------------------------------------------------------------------------------
# Facts of the first run, and where each comes from.
# ---------------------------------------------------------------------------------------------------------------
# 1. The model bucket is created empty in the run; the user publishes the model afterwards (README step 5). A Triton
#    server's readiness asks for its model (--strict-readiness; the probes), so a pod serving a repository the stack
#    puts no object under is not Ready before the run ends. Derived below from the stack's own bucket objects.
# 2. A Service with a selector lists a running pod that is not Ready as a notReadyAddress (the endpoints
#    controller), which fails the Service awaiter (rule above).
# 3. The controller writes an Ingress's status once it has built the ALB: it must be installed (its Release), the
#    certificate the listener names must be issued, and every Service a forward action names must exist, else the
#    model build fails and is retried (aws-load-balancer-controller@v2.13.0:
#    pkg/ingress/enhanced_backend_builder.go:238-269, model_build_target_group.go:26-35).
# 4. Pods run only on nodes that have joined; a workload on the system nodes is ready in time only if it is created
#    after them (and the CNI add-on); GPU node groups start at the plan's minimum (possibly 0), and a DaemonSet with no
#    node to run on is ready at once (rule above).
# 5. HPAs, PDBs, ServiceMonitors, PrometheusRules, ConfigMaps and Namespaces are ready on creation (immediate, above).
SYSTEM_POOL_LABEL = ("gpufleet.io/pool", "system")
ALB_CONTROLLER_CHART = "aws-load-balancer-controller"
CERTIFICATE_ARN = "alb.ingress.kubernetes.io/certificate-arn"
ACTION_PREFIX = "alb.ingress.kubernetes.io/actions."
USE_ANNOTATION = "use-annotation"


# The two stacks, and dev sized by the committed mix plan (shared Deployments, per-model routes to several Services).
MIX_PLAN = ROOT / "infra/plans/mix.plan.json"


@pytest.fixture(scope="module", params=["dev", "prod", "dev-mix"])
def stack(request):
    env, _, mix = request.param.partition("-")
    settings = settings_from_config(stack_file_config(env), env)
    if mix:
        settings = settings.model_copy(update={"plan_path": str(MIX_PLAN)})
    plan = load_plan(settings)
    records, graph = preview_graph(settings, plan)
    return settings, records, graph


def gvk(r: Recorded) -> str:
    obj = manifests([r])[0]
    return f"{obj['apiVersion']}/{obj['kind']}"


def key(r: Recorded) -> tuple[str, str]:
    return (r.type, r.name)


def objects(records):
    """(record, manifest) for every Kubernetes object (Helm releases are not objects)."""
    return [(r, manifests([r])[0]) for r in records
            if r.type.startswith("kubernetes:") and r.type != RELEASE and not r.type.startswith("pulumi:")]


def annotations(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def skips_await(obj: dict) -> bool:
    return str(annotations(obj).get(SKIP_AWAIT, "")).lower() == "true"


def awaited(obj: dict) -> bool:
    kind = f"{obj['apiVersion']}/{obj['kind']}"
    return kind in AWAITED and not skips_await(obj)


def _keys_under(arg: str, records, below: str = "") -> list[str] | None:
    """The keys the stack puts under ``--model-repository=s3://<bucket>/<prefix>`` (+ ``/<below>``); None for a
    repository that is not in a bucket (not this model's concern)."""
    url = arg.split("=", 1)[1]
    if not url.startswith("s3://"):
        return None
    bucket, _, prefix = url[len("s3://"):].partition("/")
    stem = "/".join(p for p in (prefix.strip("/"), below.strip("/")) if p) + "/"
    return [str(o["key"]) for o in bucket_objects(records) if o["bucket"] == bucket and str(o["key"]).startswith(stem)]


def holds_model(arg: str, records, model: str) -> bool:
    """A file of ``model`` in the repository (Triton reads ``<repository>/<model>/...``; a folder object is none)."""
    keys = _keys_under(arg, records, model)
    return keys is None or any(not k.endswith("/") for k in keys)


def exists(arg: str, records) -> bool:
    """The repository is a directory to Triton: something, a folder object included, is under it."""
    keys = _keys_under(arg, records)
    return keys is None or bool(keys)


def ready_only_after_the_run(template: dict, records) -> bool:
    """Fact 1: a Triton container is not Ready during the run when its readiness asks for a model no repository of
    its holds after the run (Triton's repository layout is ``<repository>/<model>/...``; a folder object at the
    repository itself is no model), or, asking for the server only, when no repository of its exists at all."""
    for c in template["spec"]["containers"]:
        if "tritonserver" not in (c.get("command") or []):
            continue
        repos = [a for a in c.get("args", []) if str(a).startswith("--model-repository=")]
        path = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path", "")
        asked = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/ready", path)
        if asked and repos and not any(holds_model(a, records, asked.group(1)) for a in repos):
            return True
        if not asked and repos and not any(exists(a, records) for a in repos):
            return True
    return False


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def node_groups(records, template: dict) -> list[Recorded]:
    """The node groups a pod template can run on (its nodeSelector against the groups' labels; no selector: the
    untainted system nodes)."""
    selector = template["spec"].get("nodeSelector") or dict([SYSTEM_POOL_LABEL])
    return [r for r in records if r.type == "aws:eks/nodeGroup:NodeGroup"
            and selects(selector, r.inputs.get("labels") or {})]


def cni(records) -> list[Recorded]:
    return [r for r in records if r.type == "aws:eks/addon:Addon" and r.inputs.get("addonName") == "vpc-cni"]


def backend_services(obj: dict) -> set[str]:
    """The Services an Ingress forwards to: plain backends, and those named by its use-annotation actions."""
    out = set()
    for rule in obj["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            svc = path["backend"]["service"]
            if svc.get("port", {}).get("name") == USE_ANNOTATION:
                action = json.loads(annotations(obj)[ACTION_PREFIX + svc["name"]])
                out |= {t["serviceName"] for t in action.get("forwardConfig", {}).get("targetGroups", [])
                        if "serviceName" in t}
            else:
                out.add(svc["name"])
    return out


def first_run_blockers(settings, records, graph: Graph) -> list[str]:
    """Every awaited resource whose condition cannot hold during the first run, or holds only by luck of timing
    (nothing orders it after what it needs): each as one line naming the resource, its condition and source."""
    out = []
    objs = objects(records)
    by_name = {(o["metadata"].get("namespace"), o["kind"], o["metadata"]["name"]): r for r, o in objs}
    triton_templates = [(o["metadata"].get("namespace"), o["spec"]["template"], r) for r, o in objs
                        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
                        and ready_only_after_the_run(o["spec"]["template"], records)]

    def after_all(r, earlier: list[Recorded]) -> bool:
        return bool(earlier) and all(graph.waits_for(key(r), key(e)) for e in earlier)

    for r, o in objs:
        kind = f"{o['apiVersion']}/{o['kind']}"
        if not awaited(o):
            continue
        rule = AWAITED[kind]
        what = f"{r.name} ({kind}: {rule.condition}; {rule.source})"
        if o["kind"] == "Deployment":
            template = o["spec"]["template"]
            if ready_only_after_the_run(template, records):
                out.append(f"{what}: its pods serve a model the run leaves out, so they are not Ready before "
                           f"{DEFAULT_TIMEOUT_S} s")
            elif not after_all(r, node_groups(records, template) + cni(records)):
                out.append(f"{what}: not created after the nodes its pods run on and the CNI")
        elif o["kind"] == "DaemonSet":
            if ready_only_after_the_run(o["spec"]["template"], records):
                out.append(f"{what}: its pods serve a model the run leaves out")
        elif o["kind"] == "Service":
            selector = o["spec"].get("selector") or {}
            ns = o["metadata"].get("namespace")
            unready = [t for t in triton_templates if t[0] == ns and selects(selector, t[1]["metadata"]["labels"])]
            if unready and not all(graph.waits_for(key(w), key(r)) for _, _, w in unready):
                out.append(f"{what}: it selects pods that run unready until the model is published, and they may "
                           "exist before it settles")
        elif o["kind"] == "Ingress":
            ns = o["metadata"].get("namespace")
            needs = [x for x in records if x.type == RELEASE and x.inputs.get("chart") == ALB_CONTROLLER_CHART]
            if CERTIFICATE_ARN in annotations(o):
                needs += [x for x in records if x.type == "aws:acm/certificateValidation:CertificateValidation"]
            missing = [s for s in backend_services(o) if (ns, "Service", s) not in by_name]
            needs += [by_name[(ns, "Service", s)] for s in backend_services(o) if (ns, "Service", s) in by_name]
            if missing:
                out.append(f"{what}: forwards to Services the stack does not create: {sorted(missing)}")
            if not any(n.type == RELEASE for n in needs):
                out.append(f"{what}: no {ALB_CONTROLLER_CHART} release in the stack writes its status")
            unordered = sorted(n.name for n in needs if not graph.waits_for(key(r), key(n)))
            if unordered:
                out.append(f"{what}: the controller writes its status only once these exist, and it is not "
                           f"created after them: {unordered}")
        elif o["kind"] == "ServiceAccount":
            major, minor = (int(x) for x in settings.kubernetes_version.split(".")[:2])
            if (major, minor) < (1, 24):
                out.append(f"{what}: waits for a token secret on Kubernetes {settings.kubernetes_version}")
        else:
            out.append(f"{what}: an awaited kind this model has no first-run rule for")
    for r in records:
        if r.type != RELEASE or r.inputs.get("skipAwait"):
            continue
        what = f"{r.name} ({r.inputs.get('chart')}: {RELEASE_RULE.condition}; {RELEASE_RULE.source})"
        system = [g for g in records if g.type == "aws:eks/nodeGroup:NodeGroup"
                  and selects(dict([SYSTEM_POOL_LABEL]), g.inputs.get("labels") or {})]
        if not after_all(r, system + cni(records)):
            out.append(f"{what}: not installed after the system nodes and the CNI its pods need")
    return out


def test_every_kind_is_modelled(stack):
    """A kind the model does not know fails here, so that a new one is classified (awaited or not) with its source."""
    _, records, _ = stack
    unknown = sorted({gvk(r) for r, _ in objects(records)} - set(AWAITED) - IMMEDIATE)
    assert not unknown, f"Kubernetes kinds with no await rule in this model: {unknown}"
    assert not [r.name for r, o in objects(records) if WAIT_FOR in annotations(o)], \
        "a pulumi.com/waitFor condition replaces the built-in awaiter: model it here"


def test_first_pulumi_up_awaits_nothing_it_cannot_reach(stack):
    """Every awaited object becomes ready during the run that creates it (created after what it needs), or is not
    awaited (skipAwait, with its reason in infra)."""
    settings, records, graph = stack
    blockers = first_run_blockers(settings, records, graph)
    assert not blockers, "the first `pulumi up` would wait out its timeout on:\n" + "\n".join(blockers)


def test_triton_deployments_are_not_awaited_until_the_model_exists(stack):
    """Fact 1 against the Deployment awaiter: no Triton Deployment can be Available during the first run."""
    _, records, _ = stack
    waiting = [o["metadata"]["name"] for _, o in objects(records) if o["kind"] == "Deployment"
               and ready_only_after_the_run(o["spec"]["template"], records) and awaited(o)]
    assert not waiting, f"Pulumi would wait {DEFAULT_TIMEOUT_S} s for Triton pods that cannot be Ready: {waiting}"


def test_dns_record_reads_a_status_the_ingress_await_guarantees(stack):
    """The endpoint's DNS record is made from the Ingress's status.loadBalancer hostname; Pulumi returns the
    Ingress only once that field is written (its awaiter), so the Ingress must stay awaited, on the built-in
    condition (a waitFor or skipAwait would hand the record an empty status)."""
    settings, records, _ = stack
    (ingress,) = [(r, o) for r, o in objects(records) if o["kind"] == "Ingress"]
    r, o = ingress
    assert awaited(o) and WAIT_FOR not in annotations(o), \
        f"{r.name}: Pulumi would return it before the controller writes the hostname the DNS record reads"
    if settings.tls_domain is None:
        return  # no record: the endpoint output is http://<that hostname>, read from the same awaited status
    # The only ELB hostname in the program is the one the Ingress status carries (the mock writes it as the
    # controller would); a record made from it is a record made from the awaited status.
    pointing = [x.name for x in records if x.type == "aws:route53/record:Record"
                and any(str(v).endswith(".elb.amazonaws.com") for v in (x.inputs.get("records") or [])
                        + [a.get("name", "") for a in (x.inputs.get("aliases") or [])])]
    assert pointing, "no DNS record points at the load balancer the Ingress status names"


def test_the_model_sees_the_triton_deployments_blocking_without_skip_await(monkeypatch):
    """The await model can fail: with the annotation taken off (as before issue 24), the dev stack's Triton
    Deployment blocks the first run, though the stack's folder object sits under its repository."""
    import infra.triton

    monkeypatch.setattr(infra.triton, "UNTIL_THE_MODEL", {})
    settings = settings_from_config(stack_file_config("dev"), "dev")
    records, graph = preview_graph(settings, load_plan(settings))
    assert bucket_objects(records), "the stack puts its folder objects in the bucket"
    blockers = first_run_blockers(settings, records, graph)
    assert any("-deploy" in b and "model" in b for b in blockers), blockers

"""Triton services for one model, or a mix of models, shaped like the planner's load-balancing model.

One Deployment per GPU pool (the plan's ``deployments``; in a mix, per serving unit: a shared Deployment's models
run in one Triton server per replica, each model read from its own repository), each with its Service, HPA (autoscaling/v2 on the per-pod
request rate that prometheus-adapter derives from Triton's ``nv_inference_request_success``, target and bounds from
the plan) and PodDisruptionBudget. An ALB Ingress (the AWS Load Balancer Controller, :mod:`infra.edge`) ends TLS and
forwards to pod IPs: one target group per pool Service, weighted as the plan routes, with an optional canary
Deployment taking its own share; each pod sits behind exactly one target group. Pods pull the model repository from
S3 through IRSA: one service account whose role may read only the served models' prefixes and decrypt with the data
key. In a mix, the HPA of a Deployment has one metric per model it serves, and the Ingress routes each model's
KServe path to the Deployments serving it.
"""
from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gpufleet.deployed import (  # noqa: F401 (re-exported: the names infra deploys under)
    K8S_NAME_MAX, METRICS_ARGS, MIX_NAME, P99_QUANTILE, app_name, unit_name)
from infra.cluster import Cluster
from infra.edge import Edge
from infra.gpu_pools import GPU_LABEL, GpuNodePools, canary_gpu, canary_replicas, gpu_resource
from infra.iam import irsa_trust, role
from infra.observability import NAMESPACE as MONITORING_NAMESPACE, PROMETHEUS_RELEASE, Observability
from infra.settings import StackSettings
from infra.storage import StorageTiers



REPOSITORY_POLL_S = 30
# S3 has no folders. Triton's S3FileSystem::IsDirectory (triton-inference-server/core@r25.01, 236e461d,
# src/filesystem/implementations/s3.h) lists ``<path>/`` and calls it a directory only when some object is under it;
# on an empty prefix ModelRepositoryManager::Create (src/model_repository_manager/model_repository_manager.cc) fails
# with "repository path is not a valid directory", the server stays SERVER_FAILED_TO_INITIALIZE (never live,
# src/server.cc IsLive) and never polls, whatever --exit-on-error says. The stack therefore puts this zero-byte
# "folder" object at each repository it points Triton at (the S3 console's empty-folder form); Triton's listing
# skips an object whose key is the folder itself (GetDirectoryContents), so it is never taken for a model.
REPOSITORY_MARKER_TYPE = "application/x-directory"
# The controller injects the target-health readiness gate into pods created in a namespace with this label
# (kubernetes-sigs/aws-load-balancer-controller@v2.13.0 docs/deploy/pod_readiness_gate.md): a pod is Ready only once
# its ALB target is healthy, so a rolling update never leaves the target groups with only initial or draining targets.
READINESS_GATE_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"
HEALTHCHECK_PATH = "alb.ingress.kubernetes.io/healthcheck-path"
# KServe v2 paths Triton answers: live once the server has initialised (its repositories found); a model ready once
# that model is loaded. /v2/health/ready is 200 on a repository with no model (strict readiness counts only models
# Triton has seen), so it is used only where no one model fits (the Service over every replica of a mix).
LIVE_PATH = "/v2/health/live"
SERVER_READY_PATH = "/v2/health/ready"
# A stopping pod keeps serving this long before Triton gets SIGTERM: the ALB deregisters it (DEREGISTRATION_S, with
# the readiness change propagating meanwhile) while requests still arrive. Triton then drains in flight within its
# exit timeout, and the grace period covers both.
PRE_STOP_S = 20
DEREGISTRATION_S = 15
TRITON_EXIT_S = 50
GRACE_S = PRE_STOP_S + TRITON_EXIT_S + 5
# ALB forward actions take integer weights 0..999 and at most 5 target groups.
ALB_MAX_WEIGHT = 999
ALB_MAX_TARGET_GROUPS = 5
WEIGHTED_ACTION = "weighted"
# The ServiceMonitor scrapes Services with this label: each pod's pool Service, never the Service over all pods.
SCRAPE_LABEL = "gpufleet.io/scrape"
# Kubernetes labels every namespace with its own name (NamespaceDefaultLabelName).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# A shared Deployment's pods carry its name under this label, so that its Service, PDB and HPA select only them.
UNIT_LABEL = "gpufleet.io/deployment"
POD_CPU = "2"  # a Triton pod on a whole GPU
POD_MEMORY = "8Gi"
NODE_RESERVED_CPU = 4  # vCPUs left on a partitioned node for kubelet, the device plugin and the node's DaemonSets
# pulumi-kubernetes' annotation that makes its await immediate (pulumi/pulumi-kubernetes@v4.32.0:
# provider/pkg/metadata/annotations.go:33, overrides.go:108-110): Pulumi returns once the API server accepts the object.
# Put on what cannot be ready before `pulumi up` ends; tests/test_infra_awaits.py models every await of the stack.
SKIP_AWAIT = "pulumi.com/skipAwait"
# Triton's pods are not Ready until their model is published, which happens after `pulumi up` (the bucket is created
# empty in the same run; README step 5): the Deployment awaiter (Available, its replicas Ready: await/deployment.go)
# would wait out its 10 minutes and fail the run, and a Service awaiter fails on any selected pod that is running but
# unready (its notReadyAddresses: await/service.go:318-363,411-425). Readiness is the probes' and the ALB's business.
UNTIL_THE_MODEL = {SKIP_AWAIT: "true"}
PORTS = [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001},
         {"name": "metrics", "containerPort": 8002}]


def _weighted(backends: list[tuple[str, float]]) -> list[dict]:
    """An ALB forward action's target groups: integer weights 0..999 in the plan's proportions, none at zero."""
    if len(backends) > ALB_MAX_TARGET_GROUPS:
        raise ValueError(f"{len(backends)} weighted backends; an ALB forward action takes at most "
                         f"{ALB_MAX_TARGET_GROUPS}")
    total = sum(w for _, w in backends)
    return [{"serviceName": svc, "servicePort": "8000", "weight": max(1, int(round(ALB_MAX_WEIGHT * w / total)))}
            for svc, w in backends]


def pod_resources(plan, gpu: str) -> dict | None:
    """A Triton pod's requests on a MIG slice: the slice, and CPU shared out so that every slice of an instance gets
    a pod (at most the whole-GPU pod's); None on a whole GPU (the default)."""
    pool = next((p for p in plan.pools if p.gpu == gpu), None)
    if pool is None or not pool.mig_partition:
        return None
    cpu_m = min(int(POD_CPU) * 1000, (pool.vcpu - NODE_RESERVED_CPU) * 1000 // pool.gpus_per_instance)
    return {"requests": {"cpu": f"{cpu_m}m", "memory": POD_MEMORY, gpu_resource(pool): "1"},
            "limits": {"memory": POD_MEMORY, gpu_resource(pool): "1"}}


def model_prefix(environment: str, model: str) -> str:
    """The S3 key prefix of everything published for one model (its repositories, one per GPU type)."""
    return f"{environment}/{model}"


def repository_key(environment: str, model: str, gpu: str) -> str:
    """The S3 key prefix of one model's repository for one GPU type (``--model-repository=s3://<bucket>/<key>``)."""
    return f"{model_prefix(environment, model)}/{gpu}"


def model_ready_path(model: str) -> str:
    return f"/v2/models/{model}/ready"


def quantity(value: float) -> str:
    """A Kubernetes quantity in milli-units, exact for the fractional rates the planner produces."""
    return f"{int(round(value * 1000))}m"


class TritonService(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, cluster: Cluster, storage: StorageTiers, plan,
                 pools: GpuNodePools, observability: Observability, edge: Edge,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:triton:TritonService", name, None, opts)
        model, ns = settings.model_name, settings.namespace
        app = self.app = app_name(model)
        models = sorted({d.model for d in plan.deployments})
        prefixes = [model_prefix(settings.environment, m) for m in models]
        mixed = plan.mix is not None
        namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "baseline", READINESS_GATE_LABEL: "enabled"}},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))
        # Everything in the namespace waits for it: the API server refuses objects in a namespace not yet there.
        kopts = pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=[namespace])
        # Pods need GPU nodes and the device plugin that advertises nvidia.com/gpu (both in the pools component).
        on_gpus = pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=[pools, namespace])
        self._network_policies(name, app, ns, settings.vpc_cidr, kopts)

        sa = f"{app}-reader"
        reader = role(f"{name}-s3-reader", irsa_trust(cluster.oidc, ns, sa), [], pulumi.ResourceOptions(parent=self))
        aws.iam.RolePolicy(f"{name}-s3-reader", role=reader.id, policy=pulumi.Output.all(
            storage.models.arn, storage.key.arn).apply(lambda a: json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{a[0]}/{x}/*" for x in prefixes]},
                {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [a[0]],
                 "Condition": {"StringLike": {"s3:prefix": [v for x in prefixes for v in (f"{x}/*", x)]}}},
                # Triton checks the bucket with HeadBucket before listing, which S3 authorises as s3:ListBucket
                # with no prefix: without this the first check is a 403. It shows key names, never contents.
                {"Sid": "HeadBucket", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [a[0]],
                 "Condition": {"Null": {"s3:prefix": "true"}}},
                {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [a[1]]}]})),
            opts=pulumi.ResourceOptions(parent=self))
        k8s.core.v1.ServiceAccount(f"{name}-sa", metadata={
            "name": sa, "namespace": ns, "annotations": {"eks.amazonaws.com/role-arn": reader.arn}}, opts=kopts)

        markers: dict[str, aws.s3.BucketObjectv2] = {}

        def repository(model: str, gpu: str) -> tuple[pulumi.Output, aws.s3.BucketObjectv2]:
            """The repository URL Triton is given, and the marker that makes it a directory before any pod starts."""
            key = repository_key(settings.environment, model, gpu)
            if key not in markers:
                markers[key] = aws.s3.BucketObjectv2(
                    f"{name}-repo-{model}-{gpu}".lower(), bucket=storage.models.bucket, key=f"{key}/", content="",
                    content_type=REPOSITORY_MARKER_TYPE,
                    # Encrypted with the stack's key whatever the order: it may land before the bucket's default.
                    server_side_encryption="aws:kms", kms_key_id=storage.key.arn,
                    opts=pulumi.ResourceOptions(parent=self))
            return storage.models.bucket.apply(lambda b: f"s3://{b}/{key}"), markers[key]

        self.deployments = {}
        pending: list[dict] = []  # Deployments, made once the Ingress exists (below)
        backends = []
        services: list[k8s.core.v1.Service] = []
        routes: dict[str, list[tuple[str, float]]] = {m: [] for m in models}  # model -> (unit Service, weight)
        canary = settings.canary_weight if settings.canary_image else 0
        for unit in sorted(plan.units(), key=lambda u: (u[0].gpu, [d.model for d in u])):
            gpu, first = unit[0].gpu, unit[0]
            pool = unit_name(app, unit)
            # One Triton server per replica serves every model of the unit, each from its own published repository
            # (Triton takes several --model-repository); each model keeps its own batcher and instances.
            repos = [repository(d.model, gpu) for d in unit]
            select = {"track": "stable", GPU_LABEL: gpu, **({UNIT_LABEL: pool} if mixed else {})}
            # A probe and a target group's health check each take one path (an httpGet probe cannot ask for
            # several): a shared Deployment's pods are probed, and its target group checked, on its first model.
            # Its other models must be published with it; one not yet there is not waited for.
            ready = model_ready_path(first.model)
            pending.append(dict(name=pool, gpu=gpu, replicas=None, image=settings.triton_image,
                                repos=[u for u, _ in repos], track="stable", needs=[m for _, m in repos],
                                extra_labels={UNIT_LABEL: pool} if mixed else {},
                                resources=pod_resources(plan, gpu), ready_path=ready))
            services.append(self._service(pool, app, ns, select, kopts, scraped=True, health_path=ready))
            a = first.autoscaling
            # One metric per model: the HPA takes the most replicas any of them asks for, so every model stays at
            # or under the per-replica rate its target was sized at, whichever model's traffic grows.
            selector = (lambda m: {"selector": {"matchLabels": {"model": m}}}) if len(unit) > 1 or mixed else \
                (lambda m: {})
            k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{pool}-hpa", metadata={"name": pool, "namespace": ns}, spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool},
                "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": plan.autoscaling.metric, **selector(d.model)},
                                                      "target": {"type": "AverageValue", "averageValue": quantity(
                                                          d.autoscaling.target_rate_per_replica)}}} for d in unit],
                # Scale up at once (GPU nodes take minutes to arrive); scale down only after 5 quiet minutes.
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                         "policies": [{"type": "Percent", "value": 100, "periodSeconds": 60}]},
                             "scaleDown": {"stabilizationWindowSeconds": 300,
                                           "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}},
                opts=kopts)
            if a.min_replicas >= 2:
                # With one replica there is nothing to keep: a PDB would either block every node drain or allow the
                # outage anyway (a production plan keeps two per GPU type; see infra.program).
                k8s.policy.v1.PodDisruptionBudget(f"{pool}-pdb", metadata={"name": pool, "namespace": ns}, spec={
                    "maxUnavailable": 1, "selector": {"matchLabels": {"app": app, **select}}}, opts=kopts)
            backends.append((pool, first.routing_weight * (100 - canary)))
            for d in unit:
                routes[d.model].append((pool, d.routing_weight))
        if canary:
            gpu = canary_gpu(plan)  # the node groups' headroom counts the canary there (infra.gpu_pools)
            pool = f"{app}-canary"
            repo, marker = repository(models[0], gpu)
            pending.append(dict(name=pool, gpu=gpu, replicas=canary_replicas(settings), image=settings.canary_image,
                                repos=[repo], track="canary", needs=[marker], extra_labels=None,
                                resources=pod_resources(plan, gpu), ready_path=model_ready_path(models[0])))
            services.append(self._service(pool, app, ns, {"track": "canary"}, kopts, scraped=True,
                                          health_path=model_ready_path(models[0])))
            backends.append((pool, float(canary)))
        # One Service over every replica: the "equal" routing model, and the in-cluster entry point. Not scraped:
        # its pods are scraped through their pool's Service, once.
        # In a mix its pods serve different models, so its target group (the Ingress's default route: health and
        # server metadata) is checked on the server's strict readiness, which every replica passes once its models load.
        services.append(self._service(app, app, ns, {}, kopts, scraped=False,
                                      health_path=SERVER_READY_PATH if mixed else model_ready_path(models[0])))
        self.ingress = self._ingress(app, ns, edge, backends if plan.request.routing == "weighted" or canary else [],
                                     routes if mixed else {}, pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                                            depends_on=[namespace, *edge.ready, *services]),
                                     storage.alb_access_logs)
        # pulumi-kubernetes waits for the controller to publish the ALB's name in the Ingress status (the Ingress
        # awaiter: status.loadBalancer.ingress; a backend with no Endpoints object, as a use-annotation action, is
        # only a warning once endpoints settle: await/ingress.go:256-264,393-436). The controller writes it once it
        # has built the ALB, which needs every Service its actions name (aws-load-balancer-controller@v2.13.0:
        # pkg/ingress/enhanced_backend_builder.go:238-269), hence the Services above; not the pods' readiness. So
        # the Ingress stays awaited and the hostname below is there when the record is made.
        # Pods are created after the Ingress, so after the controller has made its target groups and their
        # TargetGroupBindings (its awaiter returns once the controller wrote the status, at the end of its deploy):
        # the controller injects the ALB readiness gate only into pods created while a TargetGroupBinding selects
        # them (aws-load-balancer-controller@v2.13.0 docs/deploy/pod_readiness_gate.md, "create ingress or service
        # before pod"), so the first pods carry it too. Costs the ALB's build time; the Ingress needs no pods.
        for d in pending:
            pool, needs = d.pop("name"), d.pop("needs")
            self.deployments[pool] = self._deployment(
                pool, app, ns, sa, d.pop("gpu"), d.pop("replicas"), d.pop("image"), d.pop("repos"), d.pop("track"),
                pulumi.ResourceOptions.merge(on_gpus, pulumi.ResourceOptions(depends_on=[*needs, self.ingress])), **d)
        hostname = self.ingress.status.apply(lambda s: s.load_balancer.ingress[0].hostname)
        self.dns = edge.dns_name(f"{name}-dns", hostname, pulumi.ResourceOptions(parent=self))
        self.endpoint = edge.endpoint(hostname)
        k8s.apiextensions.CustomResource(f"{app}-monitor", api_version="monitoring.coreos.com/v1",
                                         kind="ServiceMonitor", metadata={"name": app, "namespace": ns,
                                                                          "labels": {"release": PROMETHEUS_RELEASE}}, spec={
            "selector": {"matchLabels": {"app": app, SCRAPE_LABEL: "true"}},
            "endpoints": [{"port": "metrics", "interval": plan.autoscaling.scrape_interval(), "path": "/metrics"}]},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                        depends_on=[namespace, observability.prometheus]))
        self.register_outputs({})

    @staticmethod
    def _network_policies(name: str, app: str, ns: str, vpc_cidr: str, kopts) -> None:
        """Nothing in the namespace talks or is talked to unless allowed: inference from inside the VPC (the load
        balancer's addresses and in-cluster clients), metrics to Prometheus only; out, DNS and HTTPS (S3 for the
        repository, STS for IRSA, KMS)."""
        port = {p["name"]: p["containerPort"] for p in PORTS}
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", metadata={"name": "default-deny", "namespace": ns},
                                        spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=kopts)
        k8s.networking.v1.NetworkPolicy(f"{name}-triton-traffic", metadata={"name": app, "namespace": ns}, spec={
            "podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"ipBlock": {"cidr": vpc_cidr}}],
                 "ports": [{"protocol": "TCP", "port": port["http"]}, {"protocol": "TCP", "port": port["grpc"]}]},
                {"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: MONITORING_NAMESPACE}}}],
                 "ports": [{"protocol": "TCP", "port": port["metrics"]}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}]},
            opts=kopts)

    @staticmethod
    def _ingress(app: str, ns: str, edge: Edge, backends: list[tuple[str, float]],
                 routes: dict[str, list[tuple[str, float]]], opts, access_logs) -> k8s.networking.v1.Ingress:
        """With a domain, HTTPS only (TLS 1.3/1.2 policy, port 443) for that host; with none, plain HTTP on port 80
        for any host (the load balancer's own hostname). IP targets, readiness as the health check. With ``backends``
        (weighted routing or a canary), one forward action over their Services with the plan's weights; else the
        Service over every replica. With ``routes`` (a mix), each model's KServe path ``/v2/models/<model>`` goes to
        the Deployments serving it, weighted as the plan splits that model's traffic; anything else (health, server
        metadata) to the Service over every replica."""
        annotations = {
            "alb.ingress.kubernetes.io/scheme": "internet-facing",
            "alb.ingress.kubernetes.io/target-type": "ip",
            "alb.ingress.kubernetes.io/load-balancer-attributes": access_logs,  # access logs to S3 (storage.py)
            "alb.ingress.kubernetes.io/target-group-attributes":
                f"deregistration_delay.timeout_seconds={DEREGISTRATION_S}",
        }
        if edge.domain is not None:
            annotations.update({
                "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTPS": 443}]),
                "alb.ingress.kubernetes.io/certificate-arn": edge.certificate_arn,
                "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06"})
        else:
            annotations["alb.ingress.kubernetes.io/listen-ports"] = json.dumps([{"HTTP": 80}])
        backend = {"service": {"name": app, "port": {"number": 8000}}}
        paths = []
        for model, served in sorted(routes.items()):
            action = f"to-{model}".lower()[:K8S_NAME_MAX]
            annotations[f"alb.ingress.kubernetes.io/actions.{action}"] = json.dumps(
                {"type": "forward", "forwardConfig": {"targetGroups": _weighted(served)}})
            paths.append({"path": f"/v2/models/{model}", "pathType": "Prefix",
                          "backend": {"service": {"name": action, "port": {"name": "use-annotation"}}}})
        if backends and not routes:
            annotations[f"alb.ingress.kubernetes.io/actions.{WEIGHTED_ACTION}"] = json.dumps(
                {"type": "forward", "forwardConfig": {"targetGroups": _weighted(backends)}})
            backend = {"service": {"name": WEIGHTED_ACTION, "port": {"name": "use-annotation"}}}
        return k8s.networking.v1.Ingress(f"{app}-ingress", metadata={
            "name": app, "namespace": ns, "annotations": annotations}, spec={
            "ingressClassName": "alb",
            **({"tls": [{"hosts": [edge.domain]}]} if edge.domain is not None else {}),
            "rules": [{**({"host": edge.domain} if edge.domain is not None else {}), "http": {"paths": paths + [
                {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}, opts=opts)

    @staticmethod
    def _service(name: str, app: str, ns: str, extra_selector: dict, kopts, scraped: bool,
                 health_path: str) -> k8s.core.v1.Service:
        """One Service; as an Ingress backend, one target group, health-checked on ``health_path`` (a Service's
        annotation wins over the Ingress's: the controller's docs/guide/ingress/annotations.md at v2.13.0). Not
        awaited: it selects Triton pods, unready until the model is published (UNTIL_THE_MODEL)."""
        labels = {"app": app, SCRAPE_LABEL: "true" if scraped else "false"}
        return k8s.core.v1.Service(f"{name}-svc", metadata={"name": name, "namespace": ns, "labels": labels,
                                                            "annotations": {**UNTIL_THE_MODEL,
                                                                            HEALTHCHECK_PATH: health_path}}, spec={
            "selector": {"app": app, **extra_selector},
            "ports": [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]} for p in PORTS]},
            opts=kopts)

    @staticmethod
    def _deployment(name: str, app: str, ns: str, sa: str, gpu: str, replicas: int | None, image: str, repos: list,
                    track: str, kopts, extra_labels: dict | None = None,
                    resources: dict | None = None, *, ready_path: str) -> k8s.apps.v1.Deployment:
        labels = {"app": app, GPU_LABEL: gpu, "track": track, **(extra_labels or {})}
        # An HPA owns the stable pools' replica count (None here): a Deployment that also set it would take it back
        # from the HPA at every server-side apply. It starts at one pod and the HPA raises it to its minimum.
        # Not awaited: its pods are Ready only once the model is published, after `pulumi up` (UNTIL_THE_MODEL).
        return k8s.apps.v1.Deployment(f"{name}-deploy", metadata={"name": name, "namespace": ns, "labels": labels,
                                                                  "annotations": UNTIL_THE_MODEL}, spec={
            **({"replicas": replicas} if replicas is not None else {}), "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": sa,
                "nodeSelector": {GPU_LABEL: gpu},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                               "whenUnsatisfiable": "ScheduleAnyway",
                                               "labelSelector": {"matchLabels": labels}}],
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "terminationGracePeriodSeconds": GRACE_S,
                "containers": [{
                    "name": "tritonserver", "image": image,
                    # Poll the repository and never exit on a model error: the repository may hold no model yet (only
                    # its marker, REPOSITORY_MARKER_TYPE) or a bad version; the server is live and the pod unready
                    # until the model loads, instead of crash-looping. Polling also picks up new versions (hot
                    # reload).
                    "args": [*(r.apply(lambda r: f"--model-repository={r}") for r in repos), "--model-control-mode=poll",
                             f"--repository-poll-secs={REPOSITORY_POLL_S}", "--strict-readiness=true",
                             "--exit-on-error=false", f"--exit-timeout-secs={TRITON_EXIT_S}",
                             "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", *METRICS_ARGS],
                    "command": ["tritonserver"],
                    "ports": PORTS,
                    # Keep serving while the load balancer stops sending here; Triton's SIGTERM comes after.
                    "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
                    "resources": resources or {"requests": {"cpu": POD_CPU, "memory": POD_MEMORY, "nvidia.com/gpu": "1"},
                                               "limits": {"memory": POD_MEMORY, "nvidia.com/gpu": "1"}},
                    # Startup and liveness ask whether the server runs: one waiting for its model is alive and must
                    # not be restarted (Triton loads the models already there before it is live, hence 10 minutes).
                    # Readiness asks for the model, as the ALB's health check does (the Service's annotation).
                    "startupProbe": {"httpGet": {"path": LIVE_PATH, "port": "http"},
                                     "periodSeconds": 10, "failureThreshold": 60},
                    "readinessProbe": {"httpGet": {"path": ready_path, "port": "http"},
                                       "periodSeconds": 5, "failureThreshold": 2},
                    "livenessProbe": {"httpGet": {"path": LIVE_PATH, "port": "http"},
                                      "periodSeconds": 10, "failureThreshold": 3},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]}],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
                            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]}}}, opts=kopts)

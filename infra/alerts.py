"""Alerts from the plan: a PrometheusRule whose rules are the plan's promises, per Deployment and model.

A plan promises that each Deployment holds its model's P99 target up to ``max_rate_per_replica``, that the HPA scales
before that rate is reached, that the queue bound sheds only when it must, and that the GPUs run near the predicted
utilization. :func:`alert_groups` turns those promises into Prometheus alerting rules (a pure function of the plan,
tested by ``promtool test rules`` in tests/test_infra_alerts.py); :class:`PlanAlerts` wraps them in the
PrometheusRule kube-prometheus-stack's operator loads.

Series, and where their names and labels come from:
- Triton (the stack's image, nvcr.io/nvidia/tritonserver:25.01, is triton-inference-server/core@r25.01):
  ``nv_inference_request_success``, ``nv_inference_request_failure`` (label ``reason``: REJECTED, CANCELED,
  BACKEND, OTHER), ``nv_inference_pending_request_count`` and the summary ``nv_inference_request_summary_us``
  (label ``quantile``): src/metrics.cc (families), src/metric_model_reporter.cc (labels ``model``, ``version``,
  ``gpu_uuid``; the summaries exist only with ``summary_latencies=true``, see infra.triton.METRICS_ARGS).
- The ServiceMonitor scrape (prometheus-operator v0.83.0, the operator of kube-prometheus-stack 75.15.1:
  pkg/prometheus/promcfg.go generateServiceMonitorConfig, lines 1948-2030) adds ``namespace``, ``service`` (the pool
  Service, named as its Deployment), ``pod``, ``container``, ``job`` (the Service's name) and ``endpoint``. The rules
  select a Deployment's pods by ``namespace`` and ``service``, as the adapter rule selects them by namespace and pod
  (infra.observability.adapter_rules): each pool Service selects exactly its Deployment's pods (infra.triton).
- kube-state-metrics v2.16.0 (kube-prometheus-stack 75.15.1 ships chart 6.1.0, app 2.16.0):
  ``kube_horizontalpodautoscaler_status_current_replicas`` and ``..._spec_max_replicas`` with labels ``namespace``
  and ``horizontalpodautoscaler`` (docs/metrics/workload/horizontalpodautoscaler-metrics.md). The chart scrapes it
  with honorLabels: true (kube-prometheus-stack values.yaml, kube-state-metrics.prometheus.monitor.honorLabels), so
  ``namespace`` is the HPA's.
- The DCGM exporter (chart 4.1.1, NVIDIA/dcgm-exporter@4.2.3-4.1.1): ``DCGM_FI_DEV_GPU_UTIL`` (etc/default-counters.csv,
  percent), with the GPU's pod as ``pod``/``namespace`` (internal/pkg/transformation/const.go, kubernetes.go;
  DCGM_EXPORTER_KUBERNETES=true in the chart's daemonset). Its ServiceMonitor has honorLabels: false
  (deployment/values.yaml), so the scrape's own ``namespace``/``pod`` (the exporter's) win and the exporter's become
  ``exported_namespace``/``exported_pod`` (Prometheus' honor_labels). The rule maps them back and joins on the Triton
  pods of the Deployment.
"""
from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.contracts.plan import Deployment, Plan
from infra.cluster import Cluster
from infra.observability import NAMESPACE as MONITORING_NAMESPACE, PROMETHEUS_RELEASE, Observability
from infra.triton import P99_QUANTILE, unit_name

# The production bar: an error share over 0.1% is an incident for the teams this is for.
ERROR_SHARE_MAX = 0.001
# "Far under" the predicted utilization: under half of it, averaged over an hour, is a fleet bought too large (the
# prediction is at the planned rate; the HPA keeps each replica near its target, so a replica this idle is one the
# traffic does not need).
UNDER_UTILIZATION_SHARE = 0.5
UTILIZATION_WINDOW = "1h"
UTILIZATION_FOR = "15m"
# Error share over a few minutes: at a thousandth, one window of the HPA's minute is too few requests to tell.
ERROR_WINDOW = "5m"
# At its maximum is normal for a moment at a peak; for this long it means the traffic outgrew the plan.
HPA_AT_MAX_FOR = "15m"
SEVERITY = {"TritonP99OverTarget": "critical", "TritonErrorShare": "critical",
            "TritonRateOverPlannedCapacity": "warning", "TritonHpaAtMaxReplicas": "warning",
            "TritonQueueRejections": "warning", "TritonQueueFull": "warning",
            "GpuUnderPredictedUtilization": "info"}


def p99_target_ms(plan: Plan, model: str) -> float:
    """The model's P99 target: its own in a mix, the request's otherwise."""
    if plan.mix is not None:
        return next(m.p99_ms for m in plan.mix.models if m.model == model)
    return plan.request.p99_ms


def _num(x: float) -> str:
    """A plan figure as written in a rule: the shortest form that reads back as the same float (never rounded)."""
    return repr(float(x))


def _sel(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _rule(alert: str, expr: str, for_: str, deployment: str, d: Deployment, plan: Plan, summary: str,
          description: str, runbook: str) -> dict:
    a = d.autoscaling
    return {"alert": alert, "expr": expr, "for": for_,
            "labels": {"severity": SEVERITY[alert], "deployment": deployment, "model": d.model, "gpu": d.gpu},
            "annotations": {
                "summary": summary, "description": description, "runbook": runbook,
                # The plan's figures, each under its own key, for routing and for the reader.
                "deployment": deployment, "model": d.model, "gpu": d.gpu,
                "p99_target_ms": f"{_num(p99_target_ms(plan, d.model))}",
                "max_rate_per_replica": f"{_num(a.max_rate_per_replica)}",
                "target_rate_per_replica": f"{_num(a.target_rate_per_replica)}",
                "planned_rate_per_replica": f"{_num(d.rate_per_replica)}",
                "predicted_utilization": f"{_num(d.predicted.utilization)}",
                "min_replicas": str(a.min_replicas), "max_replicas": str(a.max_replicas),
                "max_queue_size": str(d.triton.max_queue_size),
                "queue_timeout_microseconds": str(d.triton.queue_timeout_microseconds),
                "plan_created_at": plan.created_at}}


def unit_rules(plan: Plan, namespace: str, deployment: str, unit: list[Deployment],
               labels: dict[str, str] | None = None) -> list[dict]:
    """The rules for one Deployment (a serving unit): the Triton ones per model it serves, the HPA and GPU ones once
    (the HPA and the GPU are the Deployment's, shared by its models). ``labels``: see :func:`alert_groups`."""
    spec = plan.autoscaling
    w = spec.promql_window()
    pods = dict(labels) if labels is not None else dict(namespace=namespace, service=deployment)
    rules = []
    for d in unit:
        m = dict(**pods, model=d.model)
        target = p99_target_ms(plan, d.model)
        ok = f"rate({spec.source_series}{_sel(**m)}[{w}])"
        bad = f'rate(nv_inference_request_failure{_sel(**m)}[{w}])'
        rules.append(_rule(
            "TritonP99OverTarget",
            # Triton's summary is already a quantile over a sliding minute (prometheus-cpp v1.0.1, Triton's pin in
            # triton-inference-server/third_party@r25.01: Summary max_age 60 s, 5 age buckets); averaged over the
            # HPA's window, per replica: quantiles of different pods cannot be merged, and one slow replica (a noisy
            # neighbour, a bad node) is what this should name. Triton measures from its frontend to the response, so
            # this is the server's share of the end-to-end target: it fires only when that share alone misses.
            f"max by (namespace, service, pod, model) (avg_over_time(nv_inference_request_summary_us"
            f"{_sel(**m, quantile=P99_QUANTILE)}[{w}])) > {_num(target * 1000)}",
            w, deployment, d, plan,
            f"{d.model} on {deployment}: a replica's P99 is over the plan's {_num(target)} ms",
            f"Triton's P99 for {d.model} on one pod of {deployment} ({d.gpu}) stayed over the plan's target "
            f"{_num(target)} ms for {w}. The plan predicted P99 {_num(d.predicted.p99_ms)} ms at "
            f"{_num(d.rate_per_replica)} req/s per replica, and holds the target up to "
            f"{_num(d.autoscaling.max_rate_per_replica)}.",
            "If TritonRateOverPlannedCapacity fires too, the traffic outgrew the plan: re-plan at the observed peak. "
            "If the rate is within the plan, the service got slower (model version, driver, noisy neighbour, node): "
            "compare the pod with its peers, then refit the calibration (planner fit) and re-plan."))
        rules.append(_rule(
            "TritonRateOverPlannedCapacity",
            # The HPA's own view: the per-pod rate of the HPA metric's counter, averaged over the Deployment's pods
            # (an AverageValue Pods metric), over the HPA's window.
            f"avg by (namespace, service, model) (sum by (namespace, service, pod, model) ({ok})) "
            f"> {_num(d.autoscaling.max_rate_per_replica)}",
            w, deployment, d, plan,
            f"{d.model} on {deployment}: per-replica rate over the plan's capacity",
            f"Each replica of {deployment} serves more {d.model} requests than max_rate_per_replica "
            f"{_num(d.autoscaling.max_rate_per_replica)} req/s, where the plan's simulated P99 reaches {_num(target)} "
            f"ms. The HPA should have scaled at {_num(d.autoscaling.target_rate_per_replica)}: it lags (GPU nodes take "
            f"minutes) or "
            f"is at max_replicas {d.autoscaling.max_replicas}.",
            "Check TritonHpaAtMaxReplicas and the HPA's events (kubectl describe hpa). At max: re-plan at the observed "
            "peak (planner recommend) and raise the pools. Lagging: re-plan with the observed ramp (a calibration's "
            "ramp_per_min) so the target leaves room for the scale-up lag."))
        rules.append(_rule(
            "TritonQueueRejections",
            # Triton counts a request rejected by the queue policy's timeout as a failure with reason REJECTED
            # (core@r25.01 src/dynamic_batch_scheduler.cc FinishRejectedCancelledRequests, src/infer_stats.cc). One
            # turned away because the queue held max_queue_size is answered 503 before it is counted anywhere
            # (src/scheduler_utils.cc PolicyQueue::Enqueue, src/infer_request.cc Run): TritonQueueFull watches that.
            f'sum by (namespace, service, model) (rate(nv_inference_request_failure'
            f'{_sel(**m, reason="REJECTED")}[{w}])) > 0',
            w, deployment, d, plan,
            f"{d.model} on {deployment}: the queue policy is rejecting requests",
            f"Triton rejected {d.model} requests on {deployment} that waited longer than the plan's queue timeout "
            f"({d.triton.queue_timeout_microseconds} µs): the circuit breaker is shedding load it could not serve "
            f"within {_num(target)} ms.",
            "The replicas are past their capacity: see TritonRateOverPlannedCapacity and TritonHpaAtMaxReplicas. "
            "If the rate is within the plan, the service got slower: refit and re-plan."))
        if d.triton.max_queue_size:
            rules.append(_rule(
                "TritonQueueFull",
                # The pending count is every request Triton holds that has not started executing (core@r25.01
                # src/infer_request.cc SetState: up on PENDING, down on EXECUTING or a failed enqueue), at least the
                # queue's size: at the bound, the next request is refused uncounted.
                f"max by (namespace, service, pod, model) (max_over_time(nv_inference_pending_request_count"
                f"{_sel(**m)}[{w}])) >= {d.triton.max_queue_size}",
                "0s", deployment, d, plan,
                f"{d.model} on {deployment}: a replica's queue reached its bound",
                f"A replica of {deployment} held {d.triton.max_queue_size} pending {d.model} requests, the plan's "
                f"max_queue_size: Triton answers the next ones 503 (Exceeds maximum queue size), which no Triton "
                f"metric counts.",
                "As for TritonQueueRejections: capacity or a slower service. The load balancer's 503 count shows "
                "how many were turned away."))
        rules.append(_rule(
            "TritonErrorShare",
            f"sum by (namespace, service, model) (rate(nv_inference_request_failure{_sel(**m)}[{ERROR_WINDOW}])) / "
            f"(sum by (namespace, service, model) (rate({spec.source_series}{_sel(**m)}[{ERROR_WINDOW}])) + "
            f"sum by (namespace, service, model) (rate(nv_inference_request_failure{_sel(**m)}[{ERROR_WINDOW}]))) "
            f"> {_num(ERROR_SHARE_MAX)}",
            ERROR_WINDOW, deployment, d, plan,
            f"{d.model} on {deployment}: more than {ERROR_SHARE_MAX:.1%} of requests fail",
            f"Over {ERROR_WINDOW}, more than {ERROR_SHARE_MAX:.1%} of {d.model}'s requests on {deployment} failed in "
            "Triton (all reasons: REJECTED is the queue policy, BACKEND the model, CANCELED the client).",
            "Read the reason label: REJECTED, see TritonQueueRejections; BACKEND, the model or its inputs (Triton's "
            "log, the last model version published: roll back); CANCELED, clients timing out."))
    first = unit[0]
    rules.append(_rule(
        "TritonHpaAtMaxReplicas",
        f"max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas"
        f"{_sel(namespace=namespace, horizontalpodautoscaler=deployment)}) >= on (namespace, horizontalpodautoscaler) "
        f"max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas"
        f"{_sel(namespace=namespace, horizontalpodautoscaler=deployment)})",
        HPA_AT_MAX_FOR, deployment, first, plan,
        f"{deployment}: the HPA is at its maximum, {first.autoscaling.max_replicas} replicas",
        f"The HPA of {deployment} ({first.gpu}, serving {', '.join(d.model for d in unit)}) has run at "
        f"max_replicas {first.autoscaling.max_replicas} for {HPA_AT_MAX_FOR}: more traffic cannot be absorbed.",
        "Traffic outgrew the plan: re-plan at the observed peak (planner recommend --qps-curve from the observed "
        "traffic) and apply the new plan's pools and HPA bounds."))
    if next(p for p in plan.pools if p.gpu == first.gpu).mig_partition is None:
        # DCGM_FI_DEV_GPU_UTIL is a whole GPU's: a MIG slice has none of its own (left to the profiling fields).
        predicted = first.predicted.utilization * 100
        gpu_util = (
            f'label_replace(label_replace(avg_over_time(DCGM_FI_DEV_GPU_UTIL{_sel(exported_namespace=namespace)}'
            f'[{UTILIZATION_WINDOW}]), "namespace", "$1", "exported_namespace", "(.+)"), '
            f'"pod", "$1", "exported_pod", "(.+)")')
        rules.append(_rule(
            "GpuUnderPredictedUtilization",
            f"avg by (namespace, service) ({gpu_util} * on (namespace, pod) group_left (service) "
            f"group by (namespace, pod, service) ({spec.source_series}{_sel(**pods)})) "
            f"< {_num(predicted * UNDER_UTILIZATION_SHARE)}",
            UTILIZATION_FOR, deployment, first, plan,
            f"{deployment}: GPUs far under the plan's predicted utilization",
            f"The GPUs of {deployment} ({first.gpu}) averaged under {UNDER_UTILIZATION_SHARE:.0%} of the plan's "
            f"predicted {predicted:.0f}% utilization (at {_num(first.rate_per_replica)} req/s per replica) over "
            f"{UTILIZATION_WINDOW}: the fleet is bought larger than the traffic needs.",
            "If the HPA sits at min_replicas, the minimum (or the reserved pools) is too high for the traffic: re-plan "
            "at the observed traffic (planner recommend --qps-curve) and lower min_replicas or the reservations. If "
            "the rate per replica is at the plan's but utilization is low, the service got faster: refit."))
    return rules


def alert_groups(plan: Plan, namespace: str, app: str, labels: dict[str, str] | None = None) -> list[dict]:
    """One rule group per Deployment the stack deploys (``infra.triton``'s names), evaluated at the scrape
    interval the plan assumed.

    ``labels``: the matchers that select the Triton series instead of the ServiceMonitor's namespace and Service (a
    server Prometheus scrapes directly, such as ``serving local``: e.g. ``{"job": "triton"}``; planner check's
    ``--selector``). They select every Deployment alike, so they suit a plan of one Deployment."""
    groups = []
    for unit in sorted(plan.units(), key=lambda u: (u[0].gpu, [d.model for d in u])):
        deployment = unit_name(app, unit)
        groups.append({"name": f"gpufleet-{deployment}", "interval": plan.autoscaling.scrape_interval(),
                       "rules": unit_rules(plan, namespace, deployment, unit, labels)})
    return groups


class PlanAlerts(pulumi.ComponentResource):
    """The PrometheusRule, in Prometheus' own namespace with the label the chart's ruleSelector asks for (its
    default: the Helm release's name; prometheus-community/helm-charts@kube-prometheus-stack-75.15.1
    templates/prometheus/prometheus.yaml and values.yaml ruleSelectorNilUsesHelmValues)."""

    def __init__(self, name: str, plan: Plan, namespace: str, app: str, cluster: Cluster,
                 observability: Observability, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:alerts:PlanAlerts", name, None, opts)
        # The PrometheusRule CRD comes with kube-prometheus-stack.
        k8s.apiextensions.CustomResource(
            f"{name}-rules", api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
            metadata={"name": f"gpufleet-{app}", "namespace": MONITORING_NAMESPACE,
                      "labels": {"release": PROMETHEUS_RELEASE}},
            spec={"groups": alert_groups(plan, namespace, app)},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=[observability.prometheus]))
        self.register_outputs({})

"""kube-prometheus-stack (Prometheus, Grafana, Alertmanager), the DCGM exporter for GPU metrics, prometheus-adapter
serving the HPA's Triton metric, and Grafana dashboards for Triton and DCGM (ConfigMaps the Grafana sidecar loads)."""
from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.contracts.autoscaling import AutoscalingSpec
from infra.cluster import Cluster
from infra.settings import StackSettings
from infra.storage import GP3_CLASS

NAMESPACE = "monitoring"
# kube-prometheus-stack's Helm release. The chart's Prometheus selects ServiceMonitors and PrometheusRules carrying
# ``release: <this>`` (its *SelectorNilUsesHelmValues defaults; see infra.alerts.PlanAlerts).
PROMETHEUS_RELEASE = "monitoring"


def adapter_rules(spec: AutoscalingSpec) -> list[dict]:
    """The prometheus-adapter rule that serves the plan's HPA metric per pod: the rate of the Triton counter the
    planner sized with, over the window it assumed."""
    return [{
        "seriesQuery": f'{spec.source_series}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{spec.source_series}$", "as": spec.metric},
        "metricsQuery": f"sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[{spec.promql_window()}])) by (<<.GroupBy>>)",
    }]


def _panel(title: str, expr: str, unit: str, y: int, x: int = 0) -> dict:
    return {"type": "timeseries", "title": title, "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"expr": expr, "legendFormat": "{{pod}}", "refId": "A"}]}


def triton_dashboard(spec: AutoscalingSpec) -> dict:
    """Triton's panels over the window the HPA metric uses, so the dashboard shows what the HPA sees."""
    w = spec.promql_window()
    ok = f"sum(rate({spec.source_series}[{w}])) by (pod)"
    return {"title": "Triton (gpufleet)", "uid": "gpufleet-triton", "schemaVersion": 39, "panels": [
        _panel("Requests/s per pod (the HPA metric)", ok, "reqps", 0),
        _panel("Mean batch size", f"sum(rate(nv_inference_count[{w}])) by (pod) / "
               f"sum(rate(nv_inference_exec_count[{w}])) by (pod)", "none", 0, 12),
        _panel("Queue time per request (µs)", f"sum(rate(nv_inference_queue_duration_us[{w}])) by (pod) / "
               f"clamp_min({ok}, 1)", "µs", 8),
        _panel("Compute time per request (µs)", f"sum(rate(nv_inference_compute_infer_duration_us[{w}])) by (pod) / "
               f"clamp_min({ok}, 1)", "µs", 8, 12),
        _panel("Failures/s", f"sum(rate(nv_inference_request_failure[{w}])) by (pod)", "reqps", 16)]}


DCGM_DASHBOARD = {"title": "GPUs, DCGM (gpufleet)", "uid": "gpufleet-dcgm", "schemaVersion": 39, "panels": [
    _panel("GPU utilization", "avg(DCGM_FI_DEV_GPU_UTIL) by (Hostname, gpu)", "percent", 0),
    _panel("GPU memory used (MiB)", "avg(DCGM_FI_DEV_FB_USED) by (Hostname, gpu)", "decmbytes", 0, 12),
    _panel("SM clock (MHz)", "avg(DCGM_FI_DEV_SM_CLOCK) by (Hostname, gpu)", "none", 8),
    _panel("Power (W)", "avg(DCGM_FI_DEV_POWER_USAGE) by (Hostname, gpu)", "watt", 8, 12)]}


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, cluster: Cluster, autoscaling: AutoscalingSpec,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:observability:Observability", name, None, opts)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": NAMESPACE},
                                   opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))
        # Everything below lives in the namespace: Helm installs only into one that exists (no createNamespace), and
        # the API server refuses objects in a missing one. Nothing else orders them after it (the name is a string).
        kopts = pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=[ns])
        # Charts run pods (nodes, CNI, DNS) and Prometheus claims a volume (the EBS CSI driver).
        after_cluster = pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                               depends_on=[*cluster.ready, ns])
        retention = "30d" if settings.environment == "prod" else "7d"
        self.prometheus = k8s.helm.v3.Release(f"{name}-kube-prometheus-stack", name=PROMETHEUS_RELEASE,
                            namespace=NAMESPACE,
                            chart="kube-prometheus-stack", version="75.15.1",
                            repository_opts={"repo": "https://prometheus-community.github.io/helm-charts"},
                            values={
                                "prometheus": {"prometheusSpec": {
                                    "retention": retention,
                                    "serviceMonitorSelectorNilUsesHelmValues": False,
                                    "storageSpec": {"volumeClaimTemplate": {"spec": {
                                        "storageClassName": GP3_CLASS, "accessModes": ["ReadWriteOnce"],
                                        "resources": {"requests": {"storage": "50Gi"}}}}}}},
                                # Empty: the Grafana chart generates the admin password and keeps it across
                                # upgrades, instead of the chart's published "prom-operator".
                                "grafana": {"adminPassword": "",
                                            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard",
                                                                       "searchNamespace": "ALL"}}}},
                            opts=after_cluster)
        # Charts below render monitoring.coreos.com objects, whose CRDs come with kube-prometheus-stack.
        after_crds = pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                            depends_on=[*cluster.ready, ns, self.prometheus])
        k8s.helm.v3.Release(f"{name}-dcgm-exporter", name="dcgm-exporter", namespace=NAMESPACE,
                            chart="dcgm-exporter", version="4.1.1",
                            repository_opts={"repo": "https://nvidia.github.io/dcgm-exporter/helm-charts"},
                            values={"serviceMonitor": {"enabled": True,
                                                       "additionalLabels": {"release": PROMETHEUS_RELEASE}},
                                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                     "effect": "NoSchedule"}]},
                            opts=after_crds)
        self.adapter = k8s.helm.v3.Release(
            f"{name}-prometheus-adapter", name="prometheus-adapter", namespace=NAMESPACE,
            chart="prometheus-adapter", version="4.14.1",
            repository_opts={"repo": "https://prometheus-community.github.io/helm-charts"},
            values={"prometheus": {"url": "http://monitoring-kube-prometheus-prometheus.monitoring.svc", "port": 9090},
                    "rules": {"default": False, "custom": adapter_rules(autoscaling)}}, opts=after_crds)
        for key, dash in (("triton", triton_dashboard(autoscaling)), ("dcgm", DCGM_DASHBOARD)):
            k8s.core.v1.ConfigMap(f"{name}-dashboard-{key}", metadata={
                "name": f"gpufleet-dashboard-{key}", "namespace": NAMESPACE, "labels": {"grafana_dashboard": "1"}},
                data={f"{key}.json": json.dumps(dash)}, opts=kopts)
        self.register_outputs({})

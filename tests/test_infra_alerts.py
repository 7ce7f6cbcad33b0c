"""The alert rules rendered from the plan (issue 28, item 1), evaluated by Prometheus' own rule engine: ``promtool
test rules`` over the rules the code renders for the dev stack's plan. Each rule gets real input series (the names and
labels Triton, kube-state-metrics and the DCGM exporter export, as a ServiceMonitor scrape labels them) once at a
level that breaks the plan's promise (the alert must fire, with the plan's figures) and once just inside it (nothing
fires).

Where the series come from (the rules cite the same sources):
- Triton (nvcr.io/nvidia/tritonserver:25.01 = triton-inference-server/core@r25.01): ``src/metrics.cc`` names the
  families; ``src/metric_model_reporter.cc`` their labels (model, version, gpu_uuid on a GPU; reason on failures) and
  the summary switch; ``tests/data/triton/metrics-summary.txt`` is the bundled tritonserver's /metrics with the stack's
  flags, from which the Triton label sets below are read.
- The scrape adds namespace, service, pod, container, endpoint, job, instance (prometheus-operator's ServiceMonitor).
- kube-state-metrics v2.16.0 (docs/metrics/workload/horizontalpodautoscaler-metrics.md), scraped with honorLabels.
- dcgm-exporter 4.1.1 (chart 4.1.1): the GPU's pod as ``pod``/``namespace``, renamed exported_* by the scrape.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gpufleet.contracts.plan import read_plan
from infra.alerts import alert_groups
from infra.settings import ROOT, settings_from_config, stack_file_config
from infra.alerts import p99_target_ms
from infra.triton import MIX_NAME, app_name, unit_name

from .conftest import prometheus_tool

METRICS_SAMPLE = Path(__file__).parent / "data" / "triton" / "metrics-summary.txt"
POD_SUFFIX = "-5d8f9c7b6d-x2k4q"  # a ReplicaSet pod's name: <deployment>-<pod-template-hash>-<random>


@pytest.fixture(scope="module")
def promtool() -> str:
    return prometheus_tool("promtool")


@pytest.fixture(scope="module")
def dev():
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = read_plan(ROOT / settings.plan_path)
    return settings, plan, alert_groups(plan, settings.namespace, app_name(plan.deployments[0].model))


@pytest.fixture(scope="module")
def mix():
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = read_plan(ROOT / "infra" / "plans" / "mix.plan.json")
    return settings, plan, alert_groups(plan, settings.namespace, app_name(MIX_NAME))


def triton_labels(family: str, **extra: str) -> list[str]:
    """The label names Triton itself puts on ``family`` (read from the captured /metrics), plus those given."""
    names = set()
    for line in METRICS_SAMPLE.read_text().splitlines():
        m = re.match(rf"{family}\{{(.*)\}} ", line)
        if m:
            names |= {kv.split("=")[0] for kv in m.group(1).split(",")}
    assert names, f"{family} is not in {METRICS_SAMPLE.name}"
    return sorted(names | set(extra))


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def scrape(settings, deployment: str) -> dict[str, str]:
    """What a ServiceMonitor scrape of one Triton pod adds to every series."""
    pod = deployment + POD_SUFFIX
    return {"namespace": settings.namespace, "service": deployment, "pod": pod, "job": deployment,
            "endpoint": "metrics", "container": "tritonserver", "instance": "10.40.12.7:8002"}


def triton_series(settings, deployment, model, family, **extra) -> str:
    own = {"model": model, "version": "1", "gpu_uuid": "GPU-3f1c2a77-0b5e-4c1d-9a43-5c7e1d2b9f10", **extra}
    names = triton_labels(family, **extra)
    assert set(names) - {"gpu_uuid"} <= set(own), names  # gpu_uuid: only on GPU instances (GetMetricLabels)
    return series(family, {**{k: v for k, v in own.items() if k in names or k == "gpu_uuid"},
                           **scrape(settings, deployment)})


def rules_named(groups: list[dict], alert: str) -> list[dict]:
    found = [r for g in groups for r in g["rules"] if r["alert"] == alert]
    assert found, f"no {alert} rule rendered"
    return found


def deployment_of(plan, rule):
    return next(d for d in plan.deployments if d.model == rule["labels"]["model"])


def counter(per_s: float, interval_s: float, n: int) -> str:
    return f"0+{per_s * interval_s!r}x{n}"


def run_promtool(promtool, tmp_path, groups, cases, interval_s, eval_time) -> None:
    """One promtool run: each case is (input series, alert name, expected alerts) at ``eval_time``; fails with
    promtool's output. Only the rule under test is loaded, in its rendered group (name, interval): the others would
    cost evaluation time and test nothing here."""
    (alertname,) = {c[1] for c in cases}
    only = [{**g, "rules": [r for r in g["rules"] if r["alert"] == alertname and r["labels"] == cases[0][3]]}
            for g in groups]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [g for g in only if g["rules"]]},
                                                        sort_keys=False))
    tests = []
    for input_series, alertname, expected, _ in cases:
        tests.append({"interval": f"{interval_s:g}s", "input_series": input_series, "alert_rule_test": [
            {"eval_time": eval_time, "alertname": alertname, "exp_alerts": expected}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"],
                                                         "evaluation_interval": f"{interval_s:g}s",
                                                         "tests": tests}, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def fired(rule, **labels) -> list[dict]:
    return [{"exp_labels": {**rule["labels"], **labels}, "exp_annotations": rule["annotations"]}]


def check(promtool, tmp_path, groups, rule, loud, quiet, labels, interval_s, eval_time):
    run_promtool(promtool, tmp_path, groups, [(loud, rule["alert"], fired(rule, **labels), rule["labels"]),
                                              (quiet, rule["alert"], [], rule["labels"])], interval_s, eval_time)


def test_p99_over_the_plans_target_fires_and_within_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "TritonP99OverTarget"):
        d = deployment_of(plan, rule)
        name = triton_series(settings, rule["labels"]["deployment"], d.model, "nv_inference_request_summary_us",
                             quantile="0.99")
        target_us = p99_target_ms(plan, d.model) * 1000
        loud = [{"series": name, "values": f"{target_us * 1.2!r}x80"}]
        quiet = [{"series": name, "values": f"{target_us * 0.9!r}x80"}]
        s = scrape(settings, rule["labels"]["deployment"])
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=s["namespace"], service=s["service"], pod=s["pod"]), interval, "15m")


def test_rate_per_replica_over_max_rate_fires_and_under_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "TritonRateOverPlannedCapacity"):
        d = deployment_of(plan, rule)
        dep = rule["labels"]["deployment"]
        name = triton_series(settings, dep, d.model, "nv_inference_request_success")
        other = name.replace(POD_SUFFIX, "-5d8f9c7b6d-q7wz2")
        top = d.autoscaling.max_rate_per_replica
        # Two replicas, the average over the HPA's window past max_rate: the plan's capacity is exceeded.
        loud = [{"series": name, "values": counter(top * 1.25, interval, 80)},
                {"series": other, "values": counter(top * 1.05, interval, 80)}]
        quiet = [{"series": name, "values": counter(top * 1.05, interval, 80)},
                 {"series": other, "values": counter(top * 0.85, interval, 80)}]
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=settings.namespace, service=dep), interval, "15m")


def test_hpa_at_its_max_replicas_fires_and_below_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "TritonHpaAtMaxReplicas"):
        dep = rule["labels"]["deployment"]
        d = deployment_of(plan, rule)
        ksm = {"namespace": settings.namespace, "horizontalpodautoscaler": dep, "job": "kube-state-metrics",
               "service": "monitoring-kube-state-metrics", "endpoint": "http", "container": "kube-state-metrics",
               "instance": "10.40.3.9:8080", "pod": "monitoring-kube-state-metrics-7c9b5d8f4-h2xkp"}
        top = d.autoscaling.max_replicas
        spec = {"series": series("kube_horizontalpodautoscaler_spec_max_replicas", ksm), "values": f"{top}x100"}
        loud = [spec, {"series": series("kube_horizontalpodautoscaler_status_current_replicas", ksm),
                       "values": f"{top}x100"}]
        quiet = [spec, {"series": series("kube_horizontalpodautoscaler_status_current_replicas", ksm),
                        "values": f"{top - 1}x100"}]
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=settings.namespace, horizontalpodautoscaler=dep), interval, "20m")


def test_queue_rejections_fire_and_none_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "TritonQueueRejections"):
        d = deployment_of(plan, rule)
        dep = rule["labels"]["deployment"]
        by_reason = {r: triton_series(settings, dep, d.model, "nv_inference_request_failure", reason=r)
                     for r in ("REJECTED", "CANCELED", "BACKEND", "OTHER")}
        ok = {"series": triton_series(settings, dep, d.model, "nv_inference_request_success"),
              "values": counter(d.autoscaling.target_rate_per_replica, interval, 80)}
        flat = {r: {"series": s, "values": "0x80"} for r, s in by_reason.items()}
        # Two requests a second turned away by the queue policy's timeout; the quiet case fails some for other
        # reasons (a backend error is not the queue's doing).
        failing = {r: {"series": s, "values": counter(2, interval, 80)} for r, s in by_reason.items()}
        loud = [ok, *{**flat, "REJECTED": failing["REJECTED"]}.values()]
        quiet = [ok, *{**flat, "BACKEND": failing["BACKEND"]}.values()]
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=settings.namespace, service=dep), interval, "15m")


def test_queue_at_its_bound_fires_and_below_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    rules = rules_named(groups, "TritonQueueFull")
    for rule in rules:
        d = deployment_of(plan, rule)
        dep = rule["labels"]["deployment"]
        name = triton_series(settings, dep, d.model, "nv_inference_pending_request_count")
        bound = d.triton.max_queue_size
        loud = [{"series": name, "values": f"0x40 {bound} 0x39"}]
        quiet = [{"series": name, "values": f"0x40 {bound - 1} 0x39"}]
        s = scrape(settings, dep)
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=s["namespace"], service=dep, pod=s["pod"]), interval, "10m15s")


def test_error_share_over_a_thousandth_fires_and_under_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "TritonErrorShare"):
        d = deployment_of(plan, rule)
        dep = rule["labels"]["deployment"]
        rate = d.autoscaling.target_rate_per_replica
        ok = {"series": triton_series(settings, dep, d.model, "nv_inference_request_success"),
              "values": counter(rate, interval, 120)}
        bad = triton_series(settings, dep, d.model, "nv_inference_request_failure", reason="BACKEND")
        loud = [ok, {"series": bad, "values": counter(rate * 0.002, interval, 120)}]
        quiet = [ok, {"series": bad, "values": counter(rate * 0.0005, interval, 120)}]
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=settings.namespace, service=dep), interval, "25m")


def test_gpu_far_under_the_predicted_utilization_for_an_hour_fires_and_near_it_is_quiet(promtool, dev, tmp_path):
    settings, plan, groups = dev
    interval = plan.autoscaling.scrape_interval_s
    for rule in rules_named(groups, "GpuUnderPredictedUtilization"):
        dep = rule["labels"]["deployment"]
        d = next(x for x in plan.deployments if rule["labels"]["gpu"] == x.gpu)
        pod = scrape(settings, dep)["pod"]
        dcgm = {"gpu": "0", "UUID": "GPU-3f1c2a77-0b5e-4c1d-9a43-5c7e1d2b9f10", "device": "nvidia0",
                "modelName": "Tesla T4", "Hostname": "ip-10-40-12-7.ec2.internal",
                "DCGM_FI_DRIVER_VERSION": "570.133.20",
                # The exporter's own labels for the GPU's pod, renamed by a scrape that does not honour labels.
                "exported_pod": pod, "exported_namespace": settings.namespace, "exported_container": "tritonserver",
                # The scrape's target labels: the exporter's pod.
                "namespace": "monitoring", "pod": "dcgm-exporter-7xk2p", "service": "dcgm-exporter",
                "job": "dcgm-exporter", "endpoint": "metrics", "container": "exporter", "instance": "10.40.12.7:9400"}
        ok = {"series": triton_series(settings, dep, d.model, "nv_inference_request_success"),
              "values": counter(d.rate_per_replica, interval, 330)}
        predicted = d.predicted.utilization * 100
        loud = [ok, {"series": series("DCGM_FI_DEV_GPU_UTIL", dcgm), "values": f"{round(predicted * 0.3)}x330"}]
        quiet = [ok, {"series": series("DCGM_FI_DEV_GPU_UTIL", dcgm), "values": f"{round(predicted * 0.8)}x330"}]
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=settings.namespace, service=dep), interval, "80m")


def test_every_rule_carries_the_plans_figures_and_a_runbook(dev):
    """Each alert says which Deployment and model broke which promise, with the plan's numbers beside it."""
    _, plan, groups = dev
    rules = [r for g in groups for r in g["rules"]]
    assert {r["alert"] for r in rules} == {"TritonP99OverTarget", "TritonRateOverPlannedCapacity",
                                           "TritonHpaAtMaxReplicas", "TritonQueueRejections", "TritonQueueFull",
                                           "TritonErrorShare", "GpuUnderPredictedUtilization"}
    for r in rules:
        d = next(x for x in plan.deployments if x.model == r["labels"]["model"])
        a = r["annotations"]
        assert a["runbook"] and a["summary"] and a["description"]
        assert a["deployment"] == r["labels"]["deployment"] and a["model"] == d.model
        assert float(a["p99_target_ms"]) == p99_target_ms(plan, d.model) == plan.request.p99_ms
        assert float(a["max_rate_per_replica"]) == d.autoscaling.max_rate_per_replica
        assert float(a["predicted_utilization"]) == d.predicted.utilization


def test_a_mix_alerts_each_model_at_its_own_p99_target(promtool, mix, tmp_path):
    """In a mix, each model keeps its own target (MixPlan.models[].p99_ms): a model with a looser target than the
    tightest stays quiet at a P99 the tightest would call late."""
    settings, plan, groups = mix
    interval = plan.autoscaling.scrape_interval_s
    own = {m.model: m.p99_ms for m in plan.mix.models}
    assert len(set(own.values())) > 1
    rules = rules_named(groups, "TritonP99OverTarget")
    assert sorted(r["labels"]["model"] for r in rules) == sorted(own)
    for rule in rules:
        dep, model = rule["labels"]["deployment"], rule["labels"]["model"]
        name = triton_series(settings, dep, model, "nv_inference_request_summary_us", quantile="0.99")
        loud = [{"series": name, "values": f"{own[model] * 1000 * 1.2!r}x80"}]
        quiet = [{"series": name, "values": f"{own[model] * 1000 * 0.9!r}x80"}]
        s = scrape(settings, dep)
        check(promtool, tmp_path, groups, rule, loud, quiet,
              dict(namespace=s["namespace"], service=dep, pod=s["pod"]), interval, "15m")


def test_a_shared_deployment_has_one_hpa_and_one_gpu_rule(mix):
    """The HPA and the GPU belong to the Deployment, not to each model it serves: one rule each per Deployment."""
    _, plan, groups = mix
    deployments = sorted(unit_name(app_name(MIX_NAME), u) for u in plan.units())
    for alert in ("TritonHpaAtMaxReplicas", "GpuUnderPredictedUtilization"):
        assert sorted(r["labels"]["deployment"] for r in rules_named(groups, alert)) == deployments

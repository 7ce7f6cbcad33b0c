"""Triton's own view of a step, from its Prometheus endpoint (``/metrics``, port 8002 by default).

Triton exports cumulative counters per model and version; a step's figures are the difference between a scrape at
its start and one at its end:

- ``nv_inference_request_success`` / ``_failure``: requests;
- ``nv_inference_count`` over ``nv_inference_exec_count``: inferences per model execution, the mean batch size the
  dynamic batcher formed;
- ``nv_inference_queue_duration_us``, ``nv_inference_compute_input/infer/output_duration_us`` and
  ``nv_inference_request_duration_us``: cumulative microseconds, divided by successful requests for a per-request
  mean (the form Triton's own k8s-onprem HPA uses for ``avg_time_queue_us``).

It also exports gauges, which a scrape at the boundaries cannot average over a step; the controller samples them
every :data:`GAUGE_INTERVAL_S` during the run (:func:`gauges`) and :func:`step_figures` takes each step's mean and
maximum:

- ``nv_cpu_utilization``: the whole host's CPU busy share, 0-1, over all cores and every process on the machine
  (the load generator's too where it shares the host), not Triton's own. Read at the version nvidia-pytriton 0.7.0
  bundles (Triton 2.51.0; triton-inference-server/core branch r24.10, commit bfec7c6, src/metrics.cc):
  ``ParseCpuInfo`` reads the aggregate ``cpu`` line of /proc/stat, ``CpuUtilization`` divides busy jiffies (user,
  nice, system, irq, softirq, steal) by busy plus idle and iowait since the previous poll, help text "CPU
  utilization rate [0.0 - 1.0]" (the bundled libtritonserver carries the same string);
- ``nv_gpu_utilization``: per GPU (label ``gpu_uuid``), DCGM's utilization times 0.01 (same file,
  ``PollDcgmMetrics``); only on a GPU build with a GPU. A step records the busiest GPU's.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
            "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
            "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
            "nv_inference_compute_output_duration_us")


GAUGES = ("nv_cpu_utilization", "nv_gpu_utilization")
# Triton polls its CPU and GPU gauges every metrics_interval_ms / 2 (src/metrics.cc, StartPollingThread, r24.10;
# --metrics-interval-ms defaults to 2000): sampling at that period sees each new value about once.
GAUGE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Scrape:
    """Counter values for one model (summed over its versions), and when they were read."""

    at_epoch: float
    values: dict[str, float]


def parse(text: str, model: str) -> dict[str, float]:
    totals = {name: 0.0 for name in COUNTERS}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Triton exports counters without the _total suffix; prometheus_client's parser adds it to the samples.
            name = sample.name[:-6] if family.type == "counter" and sample.name.endswith("_total") else sample.name
            if name in totals and sample.labels.get("model") == model:
                totals[name] += sample.value
    return totals


def scrape(url: str, model: str, at_epoch: float, timeout_s: float = 2.0) -> Scrape | None:
    """One scrape; None when the endpoint cannot be read (the step then has no server-side figures)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return Scrape(at_epoch, parse(text, model))


@dataclass(frozen=True)
class GaugeSample:
    """The utilization gauges at one moment; a gauge the server does not export is absent."""

    at_epoch: float
    values: dict[str, float]


def parse_gauges(text: str) -> dict[str, float]:
    """The host's CPU utilization and the busiest GPU's, 0-1, from a /metrics page (gauges carry no model label)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in GAUGES:
            rest = line.rsplit("}", 1)[1] if "{" in line else line[len(name):]
            try:  # the exposition format: name{labels} value [timestamp]
                value = float(rest.split()[0])
            except (IndexError, ValueError):
                continue
            found[name] = max(found.get(name, value), value)
    return found


def gauges(url: str, at_epoch: float, timeout_s: float = 1.0) -> GaugeSample | None:
    """One sample of the gauges; None when the endpoint cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return GaugeSample(at_epoch, parse_gauges(text))


def _utilization(samples: list[GaugeSample], name: str) -> tuple[float | None, float | None]:
    values = [g.values[name] for g in samples if name in g.values]
    return (sum(values) / len(values), max(values)) if values else (None, None)


def step_figures(start: Scrape | None, end: Scrape | None,
                 samples: list[GaugeSample] = ()) -> dict[str, float | None] | None:
    """Per-step server figures from two scrapes, and the gauges sampled between them; None if either scrape is
    missing."""
    if start is None or end is None:
        return None
    within = [g for g in samples if start.at_epoch < g.at_epoch <= end.at_epoch]
    cpu_mean, cpu_max = _utilization(within, "nv_cpu_utilization")
    gpu_mean, gpu_max = _utilization(within, "nv_gpu_utilization")
    d = {k: end.values[k] - start.values[k] for k in COUNTERS}
    ok, execs = d["nv_inference_request_success"], d["nv_inference_exec_count"]

    def per_request(key: str) -> float | None:
        return d[key] / ok if ok > 0 else None

    return {
        "seconds": end.at_epoch - start.at_epoch,
        "request_success": ok,
        "request_failure": d["nv_inference_request_failure"],
        "inference_count": d["nv_inference_count"],
        "execution_count": execs,
        "mean_batch_size": d["nv_inference_count"] / execs if execs > 0 else None,
        "queue_us_per_request": per_request("nv_inference_queue_duration_us"),
        "compute_input_us_per_request": per_request("nv_inference_compute_input_duration_us"),
        "compute_infer_us_per_request": per_request("nv_inference_compute_infer_duration_us"),
        "compute_output_us_per_request": per_request("nv_inference_compute_output_duration_us"),
        "request_us_per_request": per_request("nv_inference_request_duration_us"),
        "utilization_samples": sum(1 for g in within if "nv_cpu_utilization" in g.values),
        "cpu_utilization_mean": cpu_mean, "cpu_utilization_max": cpu_max,
        "gpu_utilization_mean": gpu_mean, "gpu_utilization_max": gpu_max,
    }

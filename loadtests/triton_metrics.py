"""Triton's own view of a step, from its Prometheus endpoint (``/metrics``, port 8002 by default).

Triton exports cumulative counters per model and version; a step's figures are the difference between a scrape at
its start and one at its end:

- ``nv_inference_request_success`` / ``_failure``: requests;
- ``nv_inference_count`` over ``nv_inference_exec_count``: inferences per model execution, the mean batch size the
  dynamic batcher formed;
- ``nv_inference_queue_duration_us``, ``nv_inference_compute_input/infer/output_duration_us`` and
  ``nv_inference_request_duration_us``: cumulative microseconds, divided by successful requests for a per-request
  mean (the form Triton's own k8s-onprem HPA uses for ``avg_time_queue_us``).
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


def step_figures(start: Scrape | None, end: Scrape | None) -> dict[str, float | None] | None:
    """Per-step server figures from two scrapes; None if either is missing."""
    if start is None or end is None:
        return None
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
    }

"""Synthetic Triton history for a real Prometheus: one replica's requests (each one's finish time, latency, queue
wait and batch), scraped every ``scrape_s`` the way Triton exposes them (core@r25.01: counters
nv_inference_request_success, nv_inference_count, nv_inference_exec_count, nv_inference_queue_duration_us,
nv_inference_compute_{input,infer,output}_duration_us, nv_inference_request_duration_us; nv_inference_request_failure
by reason; the summary nv_inference_request_summary_us over a sliding minute with quantiles 0.5/0.9/0.99,
gpufleet.deployed.METRICS_ARGS; the gauge nv_gpu_utilization, per GPU, no model label), as OpenMetrics lines for
`promtool tsdb create-blocks-from openmetrics`."""
from __future__ import annotations

import numpy as np

SUMMARY_AGE_S = 60  # prometheus-cpp's Summary max_age, Triton's (infra.alerts)


def model_series(job: str, model: str, done: np.ndarray, lat: np.ndarray, queue: np.ndarray, batch: np.ndarray,
                 start: float, end: float, scrape_s: float, scrape: str = "", instance: str | None = None) -> list[str]:
    """One model's series on one replica from ``start`` to ``end``; the arrays are per request (seconds; ``batch``
    the size of the batch it ran in). ``scrape``: more labels, as a ServiceMonitor's scrape adds them; ``instance``:
    the replica's scrape address (default the job's)."""
    order = np.argsort(done)
    done, lat, queue, batch = done[order], lat[order], queue[order], batch[order]
    compute = lat - queue
    labels = f'job="{job}",instance="{instance or f"{job}:8002"}"{scrape},model="{model}",version="1"'
    series: dict[str, list[str]] = {}

    def add(name: str, extra: str, value: float, t: float):
        series.setdefault(f"{name}{{{labels}{extra}}}", []).append(f"{value!r} {t:.3f}")

    for t in np.arange(start + scrape_s, end + 1e-9, scrape_s):
        upto = int(np.searchsorted(done, t, side="right"))
        add("nv_inference_request_success", "", float(upto), t)
        add("nv_inference_count", "", float(upto), t)
        add("nv_inference_exec_count", "", float(np.sum(1.0 / batch[:upto])), t)
        add("nv_inference_queue_duration_us", "", float(queue[:upto].sum() * 1e6), t)
        add("nv_inference_compute_input_duration_us", "", 0.0, t)
        add("nv_inference_compute_infer_duration_us", "", float(compute[:upto].sum() * 1e6), t)
        add("nv_inference_compute_output_duration_us", "", 0.0, t)
        add("nv_inference_request_duration_us", "", float(lat[:upto].sum() * 1e6), t)
        add("nv_inference_request_failure", ',reason="REJECTED"', 0.0, t)
        recent = lat[int(np.searchsorted(done, t - SUMMARY_AGE_S, side="right")):upto]
        for q in ("0.5", "0.9", "0.99"):
            if len(recent):
                add("nv_inference_request_summary_us", f',quantile="{q}"', float(np.quantile(recent, float(q)) * 1e6),
                    t)
    return [f"{key} {sample}" for key, samples in series.items() for sample in samples]


def gpu_series(job: str, busy: list[float], start: float, window_s: float, scrape_s: float,
               scrape: str = "", instance: str | None = None) -> list[str]:
    """nv_gpu_utilization of the replica's GPU: ``busy[k]`` through window ``k``."""
    end = start + len(busy) * window_s
    sel = f'{{job="{job}",instance="{instance or f"{job}:8002"}"{scrape},gpu_uuid="GPU-0"}}'
    return [f"nv_gpu_utilization{sel} {busy[min(int((t - start - 1e-9) // window_s), len(busy) - 1)]!r} {t:.3f}"
            for t in np.arange(start + scrape_s, end + 1e-9, scrape_s)]


def openmetrics(lines: list[str]) -> str:
    """One family's samples together, as OpenMetrics asks; promtool keeps the names as written (untyped: no
    _total)."""
    return "\n".join(sorted(lines, key=lambda line: line.split("{", 1)[0])) + "\n# EOF\n"

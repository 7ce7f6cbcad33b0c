"""HPA thresholds that hold the P99 target while new GPU nodes start.

A replica holds P99 <= target up to ``max_rate`` req/s (found by simulation). The HPA must add replicas early
enough that, by the time they serve, traffic still rising at the worst ramp has not pushed the old replicas past
``max_rate``. Between the moment per-replica traffic crosses the HPA's trigger and the moment new replicas serve:

* the metric lags: Prometheus scrapes every ``scrape_interval_s`` and the HPA metric is a ``rate()`` over
  ``rate_window_s``, which trails a change by about half its window; the HPA then acts on its next sync
  (``hpa_sync_s``, 15 s by default in kube-controller-manager);
* the HPA does nothing until the metric exceeds its target by its tolerance (10% by default);
* the new pod waits for a GPU node: ``scale_up_lag_s``, 4-8 minutes for a GPU node from the Cluster Autoscaler's
  decision to a ready Triton (instance launch, driver and device plugin, image pull, model load).

With traffic compounding at ``ramp_per_min`` (0.10 = +10% a minute) the trigger rate must satisfy
``target * (1 + tolerance) * (1 + ramp_per_min) ** (reaction_s / 60) <= max_rate``; :func:`hpa_target` returns
the largest such target. The fleet is sized so that each replica carries at most this target in steady state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import PlannerInputError

HPA_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance default
HPA_SYNC_S = 15.0  # --horizontal-pod-autoscaler-sync-period default
SCRAPE_INTERVAL_S = 30.0  # kube-prometheus-stack's default ServiceMonitor interval
RATE_WINDOW_S = 60.0  # the HPA metric is rate(nv_inference_request_success[1m])


@dataclass(frozen=True)
class ScalingLag:
    """How fast traffic may rise and how long new capacity takes to serve."""

    scale_up_lag_s: float
    ramp_per_min: float
    tolerance: float = HPA_TOLERANCE
    hpa_sync_s: float = HPA_SYNC_S
    scrape_interval_s: float = SCRAPE_INTERVAL_S
    rate_window_s: float = RATE_WINDOW_S

    def __post_init__(self) -> None:
        for name in ("scale_up_lag_s", "ramp_per_min", "tolerance", "hpa_sync_s", "scrape_interval_s",
                     "rate_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise PlannerInputError(f"{name.replace('_', '-')} must be a number >= 0, got {value}")

    @property
    def metric_delay_s(self) -> float:
        """Worst-case age of what the HPA sees: a scrape interval, half the rate window, one sync period."""
        return self.scrape_interval_s + self.rate_window_s / 2 + self.hpa_sync_s

    @property
    def reaction_s(self) -> float:
        return self.metric_delay_s + self.scale_up_lag_s

    def growth(self) -> float:
        """Traffic at the end of the reaction time over traffic at its start, at the worst ramp."""
        return (1.0 + self.ramp_per_min) ** (self.reaction_s / 60.0)

    def hpa_target(self, max_rate: float) -> float:
        """The per-replica rate to scale on so that P99 holds through a scale-up at the worst ramp."""
        return max_rate / ((1.0 + self.tolerance) * self.growth())

    def basis(self, max_rate: float) -> str:
        return (f"target = max_rate {max_rate:,.3f} / ((1 + HPA tolerance {self.tolerance:g}) x (1 + ramp "
                f"{self.ramp_per_min:g}/min) ^ (reaction {self.reaction_s:.0f} s / 60)); reaction = scale-up lag "
                f"{self.scale_up_lag_s:.0f} s + metric delay {self.metric_delay_s:.0f} s (scrape "
                f"{self.scrape_interval_s:g} s, half the {self.rate_window_s:g} s rate window, HPA sync "
                f"{self.hpa_sync_s:g} s). max_rate is where simulated P99 meets the target.")

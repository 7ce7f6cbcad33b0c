"""How a Triton Deployment autoscales: the one spec the planner computes with and ``infra`` renders from the plan.

The HPA scales on a per-pod request rate that prometheus-adapter serves as ``metric``: the ``rate()`` of Triton's
``source_series`` over ``rate_window_s``, scraped every ``scrape_interval_s``. The planner sizes the fleet against
the lag this chain adds (:meth:`AutoscalingSpec.hpa_target`), so the scrape interval and window that infra deploys
must be the ones the planner assumed; both read them from here (through the plan).

Lag-aware targets. A replica holds the P99 target up to ``max_rate``. Between per-replica traffic crossing the HPA's
trigger and new replicas serving: the metric lags (one scrape, about half the ``rate()`` window, one HPA sync); the
HPA waits for the metric to exceed its target by its tolerance; the new pod waits ``scale_up_lag_s`` for a GPU node
(instance launch, driver and device plugin, image pull, model load: 4-8 minutes). With traffic compounding at
``ramp_per_min`` the trigger must satisfy ``target * (1 + tolerance) * (1 + ramp) ** (reaction_s / 60) <= max_rate``.
"""
from __future__ import annotations

from pydantic import Field

from gpufleet.contracts.model import Strict

# The HPA's metric, as prometheus-adapter names it, and the Triton counter it is the rate of.
HPA_METRIC = "triton_inference_requests_per_second"
SOURCE_SERIES = "nv_inference_request_success"
# kube-controller-manager's --horizontal-pod-autoscaler-tolerance and --horizontal-pod-autoscaler-sync-period
# defaults; EKS does not let a user change either, so the planner must assume them.
HPA_TOLERANCE = 0.1
HPA_SYNC_S = 15.0
SCRAPE_INTERVAL_S = 15.0  # the interval infra's ServiceMonitor sets on Triton's /metrics
RATE_WINDOW_S = 60.0  # rate(...[1m]): four scrapes, enough for rate() to survive one missed scrape
DEFAULT_SCALE_UP_LAG_S = 360.0  # a GPU node from the autoscaler's decision to a ready Triton: 4-8 minutes is typical
DEFAULT_RAMP_PER_MIN = 0.02  # `planner fit`'s default: traffic growing 2% a minute at worst


class AutoscalingSpec(Strict):
    """The HPA metric, how it is measured, and the lag and ramp its targets allow for."""

    metric: str = HPA_METRIC
    source_series: str = SOURCE_SERIES
    rate_window_s: float = Field(default=RATE_WINDOW_S, gt=0)
    scrape_interval_s: float = Field(default=SCRAPE_INTERVAL_S, gt=0)
    tolerance: float = Field(default=HPA_TOLERANCE, ge=0)
    hpa_sync_s: float = Field(default=HPA_SYNC_S, gt=0)
    scale_up_lag_s: float = Field(default=DEFAULT_SCALE_UP_LAG_S, ge=0,
                                  description="a new GPU replica from the HPA's decision to serving")
    ramp_per_min: float | None = Field(default=None, ge=0, description="traffic growth per minute the targets "
                                       "absorb (0.02 = +2%/min); null: targets are the planned rates, not lag-aware")

    @property
    def lag_aware(self) -> bool:
        return self.ramp_per_min is not None

    @property
    def metric_delay_s(self) -> float:
        """Worst-case age of what the HPA sees: a scrape interval, half the rate window, one sync period."""
        return self.scrape_interval_s + self.rate_window_s / 2 + self.hpa_sync_s

    @property
    def reaction_s(self) -> float:
        return self.metric_delay_s + self.scale_up_lag_s

    def promql_window(self) -> str:
        """The ``rate()`` range selector, e.g. ``1m`` or ``90s``."""
        seconds = int(round(self.rate_window_s))
        return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"

    def scrape_interval(self) -> str:
        return f"{int(round(self.scrape_interval_s))}s"

    def growth(self) -> float:
        """Traffic at the end of the reaction time over traffic at its start, at the worst ramp."""
        return (1.0 + (self.ramp_per_min or 0.0)) ** (self.reaction_s / 60.0)

    def hpa_target(self, max_rate: float) -> float:
        """The per-replica rate to scale on so that P99 holds through a scale-up at the worst ramp."""
        return max_rate / ((1.0 + self.tolerance) * self.growth())

    def sizing_rate(self, max_rate: float) -> float:
        """The per-replica rate the fleet is sized for: the HPA target. Without a ramp it is still below
        ``max_rate`` by the HPA's tolerance: the HPA acts only once the metric passes its target by more than the
        tolerance, so a target at ``max_rate`` would start scaling after P99 had passed the latency target."""
        return self.hpa_target(max_rate)

    def basis(self, max_rate: float) -> str:
        return (f"target = max_rate {max_rate:,.3f} / ((1 + HPA tolerance {self.tolerance:g}) x (1 + ramp "
                f"{self.ramp_per_min or 0.0:g}/min) ^ (reaction {self.reaction_s:.0f} s / 60)); reaction = scale-up "
                f"lag {self.scale_up_lag_s:.0f} s + metric delay {self.metric_delay_s:.0f} s (scrape "
                f"{self.scrape_interval_s:g} s, half the {self.rate_window_s:g} s rate window, HPA sync "
                f"{self.hpa_sync_s:g} s). max_rate is where simulated P99 meets the target.")

"""The plan against production: Triton's series in Prometheus, in windows, compared with what the plan predicts.

``planner check`` reads, per Deployment of a plan and per model it serves, each window's per-replica request rate,
Triton's P50/P90/P99 (its latency summary, ``gpufleet.deployed.METRICS_ARGS``), mean queue time, mean batch size
(``nv_inference_count / nv_inference_exec_count``), rejections and GPU utilization, and compares the P99 with the
planner's own simulation of that replica AT THE RATE SEEN in the window: a replica that runs below the plan's rate is
faster than the plan's P99 by design, so only the prediction at the observed rate can say whether the service itself
changed. ``planner fit --prometheus`` turns the same windows into the steps of a stress result (marked
``schedule_kind: production``); ``planner demand`` writes the observed traffic as a demand curve.

What is compared, and why:
* Triton's summary measures a request from its HTTP/gRPC frontend to the response (core@r25.01
  src/infer_stats.cc: request duration), so it is compared with the simulated queue + service time, the plan's
  per-request ``overhead_ms`` (network, client, pre/post-processing outside Triton) left out.
* Two signals per window: the P99 (the promise) and the mean service time per request, Triton's compute
  input + infer + output durations per request (each request of a batch counts the batch's execution, as the
  simulation's time in batch does: triton-inference-server/core src/infer_stats.cc UpdateSuccessWithDuration adds
  each successful request's compute durations, and nv_inference_exec_count once per batch in
  UpdateInferBatchStatsWithDuration; read at commit 05295b7, the snapshot's, r25.01 not in it), far less noisy than
  a tail.
* Each against a band: the spread of that figure over simulated windows of the same rate and length
  (:data:`SAMPLING_SIGMAS` standard deviations), widened by the calibration's parameter uncertainty where the plan
  was made with one (its draws carried through the P99's gradient at the observed rate), never narrower than
  :data:`DRIFT_TOLERANCE` either side.
* Per window, ``slower`` (a signal above its band), ``faster`` (one below, none above) or ``matches``; a
  Deployment's verdict is its most recent judged window's, so a check every window reports a drift within one
  window of its start. A shared Deployment's windows are predicted at every one of its models' rates in that
  window (:class:`SharedPredictor`: the co-location simulation the mix planner sized it with).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.demand import write_demand_curve
from gpufleet.contracts.plan import Deployment, Plan
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import (MIN_REQUESTS_FOR_P99, LatencySummary, ServerFigures, StepResult,
                                              StressResult, Target)
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.deployed import METRICS_ARGS, P99_QUANTILE, stack_app, unit_name
from gpufleet.prometheus import Prometheus
from planner.capacity import CapacitySearch
from planner.colocate import UNMEASURED_WAYS, ModelDemand, corun_speed, simulate_runs
from planner.simulate import Workload
from planner.errors import PlannerInputError
from planner.uncertainty import CalibratedModel

# A window's P99 is a sample: a matching server's varies from window to window, the more so the fewer requests and
# the heavier the load (a queue's bursts). The band holds SAMPLING_SIGMAS standard deviations of the P99 the model
# gives over SAMPLING_REPLICATIONS simulated windows of the same rate and length (a false alarm in a few thousand
# windows, were the P99 normal), and at least DRIFT_TOLERANCE either side: what the simulation of a real server can
# be trusted to. The drift to catch (the issue's: 20% in service time) moves the P99 by at least as much.
DRIFT_TOLERANCE = 0.10
SAMPLING_SIGMAS = 3.0
SAMPLING_REPLICATIONS = 12
MAX_WINDOW_REQUESTS = 20_000  # as planner.fit replays a step: more adds time, not precision
# Peak traffic under this share of what the plan sized the Deployment for: bought too large (the alerts' "far
# under" the predicted utilization, infra.alerts.UNDER_UTILIZATION_SHARE, is the same half).
OVERBOUGHT_SHARE = 0.5
# Exit status of a check that finds something to do (drift, over capacity, over-bought): distinct from a failure at
# run time (1) and from bad input (2), so a scheduler can tell "act on the plan" from "the check could not run".
EXIT_FINDING = 3
# Triton's summary at a scrape is over the minute before it (prometheus-cpp v1.0.1, Triton's pin in
# triton-inference-server/third_party@r25.01: Summary max_age 60 s, 5 age buckets; see infra.alerts). A window's P99
# averages only the scrapes whose minute lies inside the window: the first minute's scrapes still hold the previous
# window's requests (a window after a rise in traffic would read low). Windows of a minute or less take the last
# scrape's.
SUMMARY_AGE_S = 60.0
# The shortest range that still holds one scrape (the stacks scrape every 15 s; Prometheus' own default is 1 m).
LAST_SCRAPE_S = 15.0
# The neutral parameters (no calibration): the profile as measured, nothing added.
NEUTRAL = (0.0, 0.0, 0.0, 1.0)
QUANTILES = {"p50": "0.5", "p90": "0.9", "p99": P99_QUANTILE}
# A shared Deployment's P99 depends on its other models' batches on the same GPU: each window is predicted by the
# co-location simulation the mix planner sizes it with (planner.colocate), at every model's rate in that window. A
# window in which another model of the replica has no rate cannot be predicted: SHARED_UNKNOWN.
SHARED_UNKNOWN = "shared: another model's rate unknown"
# A Deployment with no series in the range: not deployed, not scraped, or labelled otherwise. Where every Deployment
# of the plan has none, the labels are wrong (bad input, exit 2); where some have, the others are a finding.
NO_SERIES = "no series"
# Windows that cannot confirm the promise: too few requests for a P99, or none exported (the summaries off). A
# Deployment whose windows are all such is not passed as matching its plan; the action says what would judge it.
TOO_LITTLE_TRAFFIC = "too little traffic"
NO_P99 = "no P99 (summary_latencies off?)"
UNJUDGED_ACTIONS = {
    TOO_LITTLE_TRAFFIC: f"judge over longer windows (--window): each needs {MIN_REQUESTS_FOR_P99} requests",
    NO_P99: f"turn on Triton's latency summaries ({' '.join(METRICS_ARGS)})",
    SHARED_UNKNOWN: "find the series of every model the Deployment serves: a shared replica's P99 depends on them all",
}
# Counters per request, as loadtests.triton_metrics differences them over a step.
COMPUTE = ("input", "infer", "output")


@dataclass
class Window:
    """One window of one model on one Deployment: figures per replica (rates) or per request (times)."""

    end: float  # unix seconds; the window is (end - seconds, end]
    seconds: float
    replicas: float | None = None
    rate: float | None = None  # successful requests/s per replica
    quantiles_ms: dict[str, float] = field(default_factory=dict)  # Triton's summary, p50/p90/p99
    queue_ms: float | None = None
    mean_batch: float | None = None
    compute_us: dict[str, float] = field(default_factory=dict)  # input/infer/output per request
    request_us: float | None = None
    failures: dict[str, float] = field(default_factory=dict)  # reason -> requests/s per replica
    gpu_utilization: float | None = None  # 0-1, Triton's nv_gpu_utilization, mean over the Deployment's GPUs

    @property
    def requests(self) -> float:
        return (self.rate or 0.0) * self.seconds

    @property
    def rejected(self) -> float:
        return self.failures.get("REJECTED", 0.0)


@dataclass(frozen=True)
class Span:
    """Which windows to read: ``count`` windows of ``window_s`` ending at ``end``."""

    window_s: float
    count: int
    end: float

    @classmethod
    def of(cls, window_s: float, range_s: float, end: float | None = None) -> "Span":
        if range_s < window_s:
            raise PlannerInputError(f"--range ({range_s:g} s) is shorter than one --window ({window_s:g} s)")
        return cls(window_s, int(range_s // window_s), time.time() if end is None else end)

    @property
    def start(self) -> float:
        return self.end - (self.count - 1) * self.window_s

    @property
    def promql(self) -> str:
        return f"{self.window_s:.0f}s"

    @property
    def summary_promql(self) -> str:
        """The range over which a window's summary scrapes are averaged (:data:`SUMMARY_AGE_S`)."""
        return f"{max(self.window_s - SUMMARY_AGE_S, LAST_SCRAPE_S):.0f}s"


def selector(base: str, model: str | None = None, **extra: str) -> str:
    parts = [base] if base else []
    if model is not None:
        parts.append(f'model="{model}"')
    parts += [f'{k}="{v}"' for k, v in extra.items()]
    return "{" + ",".join(parts) + "}"


def deployment_matchers(plan: Plan, unit: list[Deployment], namespace: str) -> str:
    """The labels infra's ServiceMonitor scrape puts on a Deployment's series (namespace, and the pool Service named
    as the Deployment: infra.alerts selects them the same way)."""
    return f'namespace="{namespace}",service="{unit_name(stack_app(plan), unit)}"'


class Telemetry:
    """Triton's series for one selector, read into windows."""

    def __init__(self, prom: Prometheus, span: Span):
        self.prom = prom
        self.span = span

    def _by_time(self, query: str, label: str | None = None) -> dict[float, dict[str | None, float]]:
        s = self.span
        out: dict[float, dict[str | None, float]] = {}
        for series in self.prom.query_range(query, s.start, s.end, s.window_s):
            key = series.labels.get(label) if label else None
            for t, v in series.points:
                out.setdefault(round(t, 3), {})[key] = v
        return out

    def windows(self, base: str, model: str) -> list[Window]:
        w, sel = self.span.promql, selector(base, model)

        def rate(name: str, extra: str = "") -> str:
            return f"sum(rate({name}{sel[:-1]}{extra}}}[{w}]))"

        ok = rate("nv_inference_request_success")
        # Per replica: the pods that served in the window (a direct scrape has no pod label: its instance then).
        replicas = self._by_time(f"count(sum by (pod, instance) (rate(nv_inference_request_success{sel}[{w}])))")
        if not replicas:
            return []
        total = self._by_time(ok)
        quantiles = self._by_time(
            f"avg by (quantile) (avg_over_time(nv_inference_request_summary_us"
            f"{sel[:-1]},quantile=~\"{'|'.join(QUANTILES.values())}\"}}[{self.span.summary_promql}])) / 1000",
            "quantile")
        queue = self._by_time(f"{rate('nv_inference_queue_duration_us')} / {ok} / 1000")
        batch = self._by_time(f"{rate('nv_inference_count')} / {rate('nv_inference_exec_count')}")
        compute = {c: self._by_time(f"{rate(f'nv_inference_compute_{c}_duration_us')} / {ok}") for c in COMPUTE}
        request = self._by_time(f"{rate('nv_inference_request_duration_us')} / {ok}")
        failures = self._by_time(f"sum by (reason) (rate(nv_inference_request_failure{sel}[{w}]))", "reason")
        gpu = self._by_time(f"avg(avg_over_time(nv_gpu_utilization{selector(base)}[{w}]))")
        out = []
        for t in sorted(replicas):
            n = replicas[t][None]
            win = Window(end=t, seconds=self.span.window_s, replicas=n)
            if t in total:
                win.rate = total[t][None] / n
            by_name = {v: k for k, v in QUANTILES.items()}
            win.quantiles_ms = {by_name[q]: v for q, v in quantiles.get(t, {}).items() if q in by_name}
            win.queue_ms = queue.get(t, {}).get(None)
            win.mean_batch = batch.get(t, {}).get(None)
            win.compute_us = {c: compute[c][t][None] for c in COMPUTE if t in compute[c]}
            win.request_us = request.get(t, {}).get(None)
            win.failures = {str(r): v / n for r, v in failures.get(t, {}).items()}
            win.gpu_utilization = gpu.get(t, {}).get(None)
            out.append(win)
        return out

    def demand(self, base: str, model: str) -> list[tuple[float, float]]:
        """Requests/s arriving for ``model`` over every replica the selector names, one row per window: served plus
        failed (rejected ones included; Triton's 503 at a full queue is counted nowhere, see infra.alerts)."""
        w, sel = self.span.promql, selector(base, model)
        got = self._by_time(f"sum(rate(nv_inference_request_success{sel}[{w}])) + "
                            f"(sum(rate(nv_inference_request_failure{sel}[{w}])) or vector(0))")
        s = self.span
        # A point at t is the window (t - w, t]: the row starts at t - w. No series at a point: nothing served.
        ends = [s.start + i * s.window_s for i in range(s.count)]
        return [(t - s.window_s, got.get(round(t, 3), {}).get(None, 0.0)) for t in ends]


class Predictor:
    """The plan's model of one replica: P99 at any rate (queue + service, simulated), with the calibration's band."""

    def __init__(self, profile: LatencyProfile, cfg: BatchingConfig, calibration: Calibration | None):
        if calibration is None:
            self.model = CalibratedModel(profile, NEUTRAL)
        else:
            self.model = CalibratedModel.from_calibration(profile, calibration)
        self.cfg = cfg
        self.search = CapacitySearch(self.model.replica())
        self.saturation = self.search.model.saturation_rate(cfg)
        # Central differences of one standard deviation per parameter the draws move (overhead_ms is outside Triton).
        self.shifted: list[tuple[int, float, CapacitySearch, CapacitySearch]] = []
        d = self.model.draws
        for j in range(1, len(self.model.values)):
            sd = float(d[:, j].std()) if len(d) else 0.0
            if sd > 0:
                up, down = self.model.values.copy(), self.model.values.copy()
                up[j] += sd
                down[j] = max(down[j] - sd, 0.0 if j < 3 else 1e-6)
                self.shifted.append((j, float(up[j] - down[j]), CapacitySearch(self.model.replica(up)),
                                     CapacitySearch(self.model.replica(down))))

    def predict_window(self, win: "Window") -> "Prediction | None":
        return self.predict(win.rate, win.requests)

    def predict(self, rate: float, requests: float) -> "Prediction | None":
        """Server-side P99 and mean service time per request at ``rate`` per replica, each with its band, for a
        window of ``requests``; None past saturation (no steady state to predict)."""
        if rate >= self.saturation:
            return None
        nominal = self.search.simulate(rate, self.cfg)
        p = nominal.quantile_ms(0.99)
        service = _service_ms(nominal)
        n = int(min(max(requests, MIN_REQUESTS_FOR_P99), MAX_WINDOW_REQUESTS))
        model = self.search.model
        runs = [Workload.poisson(n, seed=20261203 + r).run(rate, self.cfg, model.service, model.speedup)
                for r in range(SAMPLING_REPLICATIONS)]
        sampling = SAMPLING_SIGMAS * float(np.std([r.quantile_ms(0.99) for r in runs], ddof=1))
        low, high = p - sampling, p + sampling
        if self.shifted:
            grad = np.zeros(len(self.model.values))
            for j, width, up, down in self.shifted:
                grad[j] = (up.simulate(rate, self.cfg).quantile_ms(0.99)
                           - down.simulate(rate, self.cfg).quantile_ms(0.99)) / width
            spread = p + (self.model.draws - self.model.values) @ grad
            c = self.model.confidence
            cal_low, cal_high = (float(np.quantile(spread, q)) for q in ((1 - c) / 2, (1 + c) / 2))
            # The parameters' uncertainty and the window's sampling, independent: their widths add in quadrature.
            low = p - math.hypot(p - min(cal_low, p), p - low)
            high = p + math.hypot(max(cal_high, p) - p, high - p)
        s_sampling = SAMPLING_SIGMAS * float(np.std([_service_ms(r) for r in runs], ddof=1))
        return Prediction(_band(p, low, high), _band(service, service - s_sampling, service + s_sampling))


class SharedPredictor:
    """The plan's model of one shared replica: each model's P99 and service time at the rates all of its models see
    in one window, by the co-location simulation the mix planner sized it with (:func:`planner.colocate.simulate_runs`:
    the co-run speed ``serving profile --corun`` measured, else both ways an unmeasured GPU may be shared, batches
    taking turns and processor sharing at no gain, the higher P99 as the nominal and the band over both). The band is
    the window's sampling (SAMPLING_SIGMAS standard deviations over SAMPLING_REPLICATIONS windows of its length) and
    DRIFT_TOLERANCE at least; a calibration's parameter uncertainty is not carried here (its nominal costs are)."""

    def __init__(self, models: list[str], profiles: list[LatencyProfile], cfgs: list[BatchingConfig],
                 calibrations: list[Calibration | None], speed: list[float] | None):
        self.models = models
        self.replicas = [(CalibratedModel(p, NEUTRAL) if c is None else CalibratedModel.from_calibration(p, c))
                         .replica() for p, c in zip(profiles, calibrations)]
        self.cfgs = cfgs
        self.ways = ((speed, False),) if speed is not None else UNMEASURED_WAYS
        self._by_end: dict[float, list[Prediction | None]] = {}

    def view(self, index: int, windows: list[list["Window"]]) -> "SharedView":
        return SharedView(self, index, [{round(w.end, 3): w for w in ws} for ws in windows])

    def predict_at(self, end: float, wins: list["Window"]) -> list["Prediction | None"]:
        """Every model's prediction in the window ending at ``end`` (``wins``: each model's window there); None for
        all past the GPU's saturation, where the device load of the rates seen sums to one or more."""
        key = round(end, 3)
        if key not in self._by_end:
            self._by_end[key] = self._predict([w.rate for w in wins], max(w.requests for w in wins))
        return self._by_end[key]

    def _predict(self, rates: list[float], requests: float) -> list["Prediction | None"]:
        """A model with no traffic in the window takes no GPU time: the others are simulated without it (and it
        gets no prediction; :func:`judge` finds too little traffic first)."""
        load = sum(r / m.saturation_rate(c) for r, m, c in zip(rates, self.replicas, self.cfgs))
        if load >= 1.0:
            return [None] * len(rates)
        active = [i for i, r in enumerate(rates) if r > 0]
        demands = [ModelDemand(self.models[i], rates[i], math.inf) for i in active]
        replicas, cfgs = [self.replicas[i] for i in active], [self.cfgs[i] for i in active]
        n = int(min(max(requests, MIN_REQUESTS_FOR_P99), MAX_WINDOW_REQUESTS))
        p99, service, low, high, s_low, s_high = ({i: [] for i in active} for _ in range(6))
        for speed, turns in self.ways:
            nominal = simulate_runs(demands, replicas, cfgs, 1.0, speed, turns)
            runs = [simulate_runs(demands, replicas, cfgs, 1.0, speed, turns, seed=20261203 + r, requests=n)
                    for r in range(SAMPLING_REPLICATIONS)]
            for k, res in enumerate(nominal):
                i = active[k]
                p, sv = res.quantile_ms(0.99), _service_ms(res)
                sampling = SAMPLING_SIGMAS * float(np.std([way[k].quantile_ms(0.99) for way in runs], ddof=1))
                s_sampling = SAMPLING_SIGMAS * float(np.std([_service_ms(way[k]) for way in runs], ddof=1))
                p99[i].append(p)
                service[i].append(sv)
                low[i].append(p - sampling)
                high[i].append(p + sampling)
                s_low[i].append(sv - s_sampling)
                s_high[i].append(sv + s_sampling)
        return [Prediction(_band(max(p99[i]), min(low[i]), max(high[i])),
                           _band(max(service[i]), min(s_low[i]), max(s_high[i]))) if i in p99 else None
                for i in range(len(rates))]


@dataclass
class SharedView:
    """One model's predictor on a shared replica: its window's prediction at every model's rate in that window."""

    shared: SharedPredictor
    index: int
    by_end: list[dict[float, "Window"]]

    def predict_window(self, win: "Window") -> "Prediction | None | str":
        key = round(win.end, 3)
        wins = [ws.get(key) for ws in self.by_end]
        if any(w is None or w.rate is None for w in wins):
            return SHARED_UNKNOWN
        return self.shared.predict_at(win.end, wins)[self.index]


def _service_ms(run) -> float:
    """Mean time a request spends in its batch (arrival to finish less the queue): what Triton's compute durations
    add up to per request (each request of a batch counts the batch's execution; planner.fit compares the same)."""
    return float(np.mean(run.latency_s - run.queue_s)) * 1000.0


def _band(nominal: float, low: float, high: float) -> tuple[float, float, float]:
    """The band never narrower than DRIFT_TOLERANCE either side."""
    return nominal, min(low, nominal * (1 - DRIFT_TOLERANCE)), max(high, nominal * (1 + DRIFT_TOLERANCE))


@dataclass(frozen=True)
class Prediction:
    p99: tuple[float, float, float]  # ms: nominal, band low, band high
    service: tuple[float, float, float]  # ms per request in its batch


@dataclass
class Judged:
    window: Window
    predicted: Prediction | None
    verdict: str  # matches / slower / faster / over capacity / too little traffic / no P99 / shared: ... unknown
    service_ms: float | None = None  # observed: Triton's compute input + infer + output per request


@dataclass
class Finding:
    deployment: str
    model: str
    gpu: str
    plan: Deployment
    judged: list[Judged]
    verdict: str  # of the latest judged window; NO_SERIES: Prometheus holds none for it in the range
    ratio: float | None  # observed / predicted P99 in that window
    capacity: str  # "within", "over capacity", "over-bought"
    peak_rate: float | None  # per replica
    peak_total: float | None
    action: str

    @property
    def acts(self) -> bool:
        return self.action != "nothing"


def _side(x: float | None, band: tuple[float, float, float]) -> int:
    return 0 if x is None else 1 if x > band[2] else -1 if x < band[1] else 0


def judge(win: Window, predictor: Predictor) -> Judged:
    """A window against the prediction at its own rate. Two signals: the P99 (the promise) and the mean service time
    per request (Triton's compute durations: the service itself, far less noisy than a tail). Slower if either is
    above its band; faster if one is below and neither above."""
    p99 = win.quantiles_ms.get("p99")
    service = sum(win.compute_us.values()) / 1000.0 if len(win.compute_us) == len(COMPUTE) else None
    if win.rate is None or win.requests < MIN_REQUESTS_FOR_P99:
        return Judged(win, None, TOO_LITTLE_TRAFFIC)
    # No P99 in the window but the service time: judged on that alone. A model version published moments ago has a
    # summary with no observation yet, whose quantiles read NaN (prometheus-cpp), and a NaN scrape makes the window's
    # average NaN: a check run right after a rollout must still see the new version's service time.
    if p99 is None and service is None:
        return Judged(win, None, NO_P99)
    pred = predictor.predict_window(win)
    if pred is None:
        return Judged(win, None, "over capacity")
    if isinstance(pred, str):
        return Judged(win, None, pred)
    sides = (_side(p99, pred.p99), _side(service, pred.service))
    verdict = "slower" if 1 in sides else "faster" if -1 in sides else "matches"
    return Judged(win, pred, verdict, service)


def check_deployment(deployment: str, d: Deployment, windows: list[Window],
                     predictor: "Predictor | SharedView") -> Finding:
    """One model on one Deployment (a shared one's through its view of the shared replica)."""
    a = d.autoscaling
    judged = [judge(w, predictor) for w in windows]
    drift = [j for j in judged if j.verdict in ("matches", "slower", "faster")]
    last = drift[-1] if drift else None
    rates = [w.rate for w in windows if w.rate is not None]
    totals = [w.rate * (w.replicas or 1) for w in windows if w.rate is not None]
    peak, peak_total = (max(rates), max(totals)) if rates else (None, None)
    if peak is not None and peak > a.max_rate_per_replica:
        capacity = "over capacity"
    elif peak_total is not None and peak_total < OVERBOUGHT_SHARE * d.rate_per_replica * d.replicas:
        capacity = "over-bought"
    else:
        capacity = "within"
    verdict = last.verdict if last else (NO_SERIES if not windows else judged[-1].verdict)
    p99 = last.window.quantiles_ms.get("p99") if last else None
    ratio = p99 / last.predicted.p99[0] if p99 is not None else None
    actions = []
    if verdict in ("slower", "faster"):
        actions.append("refit (planner fit --prometheus), then re-plan")
    if capacity != "within":
        actions.append("re-plan at the observed peak (planner demand, then recommend --qps-curve)")
    if verdict == NO_SERIES:
        actions.append("find its series: is it deployed and scraped, under these labels?")
    if verdict in UNJUDGED_ACTIONS:
        actions.append(UNJUDGED_ACTIONS[verdict])
    return Finding(deployment, d.model, d.gpu, d, judged, verdict, ratio, capacity, peak, peak_total,
                   "; ".join(actions) or "nothing")


def profile_for(profiles: dict[tuple[str, str], LatencyProfile], model: str, gpu: str) -> LatencyProfile:
    try:
        return profiles[(model, gpu)]
    except KeyError:
        raise PlannerInputError(f"no latency profile of {model} on {gpu}: pass the one the plan was made with "
                                "(--profile)") from None


def calibration_for(calibrations: list[Calibration], model: str, gpu: str) -> Calibration | None:
    return next((c for c in calibrations if c.model == model and c.gpu == gpu), None)


def check_plan(plan: Plan, telemetry: Telemetry, profiles: dict[tuple[str, str], LatencyProfile],
               calibrations: list[Calibration], namespace: str, base: str | None) -> list[Finding]:
    """Every Deployment and model of the plan, against its windows. ``base``: label matchers replacing the
    namespace/service ones (a cluster labelled otherwise; with several Deployments it must tell them apart by model)."""
    out = []
    for unit in plan.units():
        name = unit_name(stack_app(plan), unit)
        matchers = base if base is not None else deployment_matchers(plan, unit, namespace)
        windows = [telemetry.windows(matchers, d.model) for d in unit]
        if len(unit) == 1:
            d = unit[0]
            views = [Predictor(profile_for(profiles, d.model, d.gpu), d.triton.latency_shape,
                               calibration_for(calibrations, d.model, d.gpu))]
        else:
            gpu = unit[0].gpu
            names = [d.model for d in unit]
            unit_profiles = [profile_for(profiles, m, gpu) for m in names]  # a missing one: one line, exit 2
            speed = corun_speed(tuple(names), gpu, sum(d.triton.instance_count for d in unit), profiles)
            shared = SharedPredictor(names, unit_profiles,
                                     [d.triton.latency_shape for d in unit],
                                     [calibration_for(calibrations, m, gpu) for m in names], speed)
            views = [shared.view(i, windows) for i in range(len(unit))]
        for d, wins, view in zip(unit, windows, views):
            out.append(check_deployment(name, d, wins, view))
    if all(f.verdict == NO_SERIES for f in out):
        s = telemetry.span
        where = base if base is not None else f'namespace="{namespace}",service=<Deployment>'
        raise PlannerInputError(
            f"Prometheus at {telemetry.prom.url} holds no nv_inference_request_success{{{where},model=...}} for any "
            f"Deployment of the plan between {_utc(s.start - s.window_s)} and {_utc(s.end)}: check --namespace or "
            "--selector against the series' labels, and --end/--range")
    return out


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def windows_result(windows: list[Window], model: str, cfg: BatchingConfig, source: str, query: str) -> StressResult:
    """Production windows as the steps of a stress result (one replica's figures per step), for ``planner fit``.
    Marked ``schedule_kind: production`` and ``arrival: null``: nobody scheduled these requests, and their arrivals
    are whatever the clients sent (the fit replays each window as Poisson at its rate)."""
    if not windows:
        raise PlannerInputError("no window of the range has traffic for this selector")
    start = windows[0].end - windows[0].seconds
    steps = []
    for i, w in enumerate(windows):
        if w.rate is None:
            continue
        ok = int(round(w.requests))
        rejected = int(round(w.rejected * w.seconds))
        errors = int(round(sum(v for r, v in w.failures.items() if r != "REJECTED") * w.seconds))
        q = w.quantiles_ms
        compute = {c: w.compute_us.get(c) for c in COMPUTE}
        steps.append(StepResult(
            index=len(steps), name=datetime.fromtimestamp(w.end, timezone.utc).strftime("%H:%M:%S"),
            warmup=False, start_s=max(w.end - w.seconds - start, 0.0), duration_s=w.seconds, offered_rate=w.rate
            if w.rate > 0 else None, achieved_rate=w.rate, sent=ok + errors + rejected, ok=ok, errors=errors,
            rejected=rejected, late_sends=0, dropped=0, lag_p99_ms=None,
            latency_ms=LatencySummary(p50=q.get("p50"), p90=q.get("p90"), p95=None, p99=q.get("p99"), p999=None,
                                      mean=None if w.request_us is None else w.request_us / 1000, max=None),
            server=ServerFigures(
                seconds=w.seconds, request_success=w.requests, request_failure=sum(w.failures.values()) * w.seconds,
                inference_count=w.requests,  # one image per request (fit refuses others)
                execution_count=w.requests / w.mean_batch if w.mean_batch else 0.0,
                mean_batch_size=w.mean_batch, queue_us_per_request=None if w.queue_ms is None else w.queue_ms * 1000,
                compute_input_us_per_request=compute["input"], compute_infer_us_per_request=compute["infer"],
                compute_output_us_per_request=compute["output"], request_us_per_request=w.request_us,
                gpu_utilization_mean=None if w.gpu_utilization is None else min(max(w.gpu_utilization, 0.0), 1.0))))
    if not steps:
        raise PlannerInputError("no window of the range has traffic for this selector")
    started = datetime.fromtimestamp(start, timezone.utc)
    return StressResult(
        schema_version=1, tool={"name": "planner fit --prometheus", "prometheus": source, "query": query,
                                "window_s": f"{windows[0].seconds:g}"},
        mode="open-loop", arrival=None, schedule_kind="production", seed=None,
        started_at=started.isoformat(timespec="seconds"), start_epoch_s=start, late_threshold_ms=0.0, workers=1,
        users=1, target=Target(host=source, protocol="http", model=model, model_version="", input_name="",
                               input_shape=[], datatype="", request_batch=1, metrics_url=None, triton=cfg),
        steps=steps, stopped={"reason": "completed", "step": len(steps) - 1})


def write_demand(rows: list[tuple[float, float]], path: Path) -> None:
    """The observed traffic as a demand curve (time as UTC ISO 8601, one row per window)."""
    write_demand_curve(path, [datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") for t, _ in rows],
                       [max(q, 0.0) for _, q in rows])


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _f(x: float | None, fmt: str = ",.1f") -> str:
    return "-" if not finite(x) else format(x, fmt)


def render_check(findings: list[Finding], span: Span, console) -> None:
    from gpufleet.tables import Column, print_table

    def columns(headers, left):
        return [Column(h, "left" if h in left else "right", prose=h in ("action",)) for h in headers]

    for f in findings:
        rows = []
        for j in f.judged:
            w = j.window
            rows.append([datetime.fromtimestamp(w.end, timezone.utc).strftime("%H:%M"), _f(w.replicas, ".0f"),
                         _f(w.rate), _f(w.quantiles_ms.get("p99"), ".2f"),
                         "-" if j.predicted is None else f"{j.predicted.p99[0]:.2f}",
                         "-" if j.predicted is None else f"{j.predicted.p99[1]:.2f}-{j.predicted.p99[2]:.2f}",
                         _f(j.service_ms, ".2f"), "-" if j.predicted is None else
                         f"{j.predicted.service[0]:.2f} ({j.predicted.service[1]:.2f}-{j.predicted.service[2]:.2f})",
                         _f(w.queue_ms, ".2f"), _f(w.mean_batch, ".2f"), _f(w.rejected * w.seconds, ".0f"),
                         "-" if w.gpu_utilization is None else f"{w.gpu_utilization:.0%}", j.verdict])
        print_table(console, f"{f.deployment} · {f.model} on {f.gpu}: windows of {span.window_s:g} s (per replica; "
                    "P99 Triton's, ms; predicted at the rate seen, queue + service)",
                    columns(("window end UTC", "replicas", "req/s", "P99", "P99 pred", "band", "service ms",
                             "service pred (band)", "queue ms",
                             "batch", "rejected", "GPU", "verdict"), ("window end UTC", "verdict")), rows)
    rows = []
    for f in findings:
        a = f.plan.autoscaling
        rows.append([f.deployment, f.model, f.gpu, f.verdict, "-" if f.ratio is None else f"{f.ratio - 1:+.0%}",
                     f"{_f(f.peak_rate)} / {a.max_rate_per_replica:,.1f}", f.capacity, f.action])
    print_table(console, "The plan against production",
                columns(("deployment", "model", "GPU", "P99 vs plan", "drift", "peak req/s per replica / max",
                         "capacity", "action"), ("deployment", "model", "GPU", "P99 vs plan", "capacity", "action")),
                rows, keys=1)

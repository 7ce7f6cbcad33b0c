"""The master's (or single process's) side of a stress run: step boundaries, early stops, the result.

At each step boundary the controller scrapes Triton's ``/metrics``, and in between it samples Triton's utilization
gauges (:data:`loadtests.triton_metrics.GAUGE_INTERVAL_S`); for a shape that stops early (a ramp) it asks
the shape for a verdict on the finished step, once the step's last responses have had time to arrive; when every
user (or worker) is done it writes the stress-result JSON (:mod:`gpufleet.contracts.stress_result`) and quits.
"""
from __future__ import annotations

import datetime as _dt
import time

import gevent
from locust.runners import MasterRunner

from gpufleet.contracts.stress_result import (
    SCHEMA_VERSION, LatencySummary, ServerFigures, StepResult, StressResult, Target, write_stress_result)
from loadtests import triton_metrics
from loadtests.process import MSG_STOP, RUN
from loadtests.recorder import StepStats, combined

# After a step ends, its verdict waits this long for the step's responses (and, distributed, the workers' reports,
# sent every 3 s by Locust) to arrive; one process waits at most 2 s, less with a shorter request timeout. A P99
# bound is judged sooner as well: once the bound has passed since the step's end (the shape's judge_after_s), every
# request over it is either recorded or still unanswered past it, which the verdict counts; a process then needs
# only the moment its last responses take to be recorded (JUDGE_MARGIN_S), a master the workers' next report.
# (Locust 2.47.0, locust/runners.py: WORKER_REPORT_INTERVAL = 3.0, the installed pin.)
MASTER_SETTLE_S = 3.5
LOCAL_SETTLE_S = 2.0
JUDGE_MARGIN_S = 0.2
# Once the schedule is over: how often the controller looks whether every user or worker is done, and how long past
# the request timeout it waits for them before writing what it has.
DONE_POLL_S = 0.05
DONE_SLACK_S = 10.0


def run(environment) -> None:
    """The controller greenlet: scrape at step boundaries, stop a shape past its bounds, end the run."""
    s = RUN.settings
    plan = s.shape.plan()
    runner = environment.runner
    distributed = isinstance(runner, MasterRunner)
    RUN.scrapes = [_scrape()]
    sampler = gevent.spawn(_sample_gauges) if s.scrape_url else None
    settle = MASTER_SETTLE_S if distributed else min(LOCAL_SETTLE_S, s.timeout_s)
    bound = s.shape.judge_after_s() + (MASTER_SETTLE_S if distributed else JUDGE_MARGIN_S)
    judge_at = sorted({settle, bound} if s.shape.judge_after_s() > 0 else {settle})
    for i, step in enumerate(plan):
        gevent.sleep(max(0.0, RUN.t0 + step.start_s + step.duration_s - time.perf_counter()))
        RUN.scrapes.append(_scrape())
        if RUN.stop.is_set():
            break
        if s.shape.stops_early and i < len(plan) - 1 and not step.warmup:
            gevent.spawn(_judge_step, environment, i, judge_at)
    deadline = time.perf_counter() + s.timeout_s + DONE_SLACK_S
    expected_workers = runner.worker_count if distributed else 0
    while time.perf_counter() < deadline:
        if RUN.all_workers_reported(expected_workers) if distributed else RUN.done.is_set():
            break
        gevent.sleep(DONE_POLL_S)
    if sampler is not None:
        sampler.kill()
    write_result(environment)
    runner.quit()


def _scrape():
    url = RUN.settings.scrape_url
    return triton_metrics.scrape(url, RUN.settings.model, time.time()) if url else None


def _sample_gauges() -> None:
    """Sample the utilization gauges until killed: a gauge read at the boundaries says nothing of the step between."""
    url = RUN.settings.scrape_url
    while True:
        sample = triton_metrics.gauges(url, time.time())
        if sample is not None:
            RUN.gauges.append(sample)
        gevent.sleep(triton_metrics.GAUGE_INTERVAL_S)


def _judge_step(environment, i: int, judge_at: list[float]) -> None:
    """Judge step ``i`` at each of these delays after its end (seconds, ascending), until a verdict stops the run."""
    waited = 0.0
    for delay in judge_at:
        gevent.sleep(delay - waited)
        waited = delay
        stats = RUN.recorder.steps.get(i)
        if RUN.stop.is_set():
            return
        if stats is None:
            continue
        earlier = [RUN.recorder.steps.get(j) or StepStats() for j in range(i)]
        verdict = RUN.settings.shape.verdict(stats, RUN.recorder.pending(i), earlier)
        if verdict:
            RUN.stopped = {"reason": verdict.split(":")[0], "detail": verdict, "at_step": i}
            RUN.stop.set()
            if isinstance(environment.runner, MasterRunner):
                environment.runner.send_message(MSG_STOP, None)
            return


def _summary(stats: StepStats) -> LatencySummary:
    h = stats.latency
    if h.get_total_count() == 0:
        return LatencySummary(p50=None, p90=None, p95=None, p99=None, p999=None, mean=None, max=None)
    q = {k: h.get_value_at_percentile(p) / 1000.0 for k, p in
         (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9))}
    return LatencySummary(**q, mean=h.get_mean_value() / 1000.0, max=h.get_max_value() / 1000.0)


def write_result(environment) -> None:
    import locust

    s, t = RUN.settings, RUN.target
    open_loop = s.shape.open_loop
    plan = s.shape.plan()
    if s.shape.measured_windows and RUN.stopped.get("at_step") is None and RUN.recorder.steps:
        # The last window is never judged while the run goes on (nothing follows it); judged here, with every
        # answer in, a measurement that settled in its last window says so.
        i = min(max(RUN.recorder.steps), len(plan) - 1)
        verdict = s.shape.verdict(RUN.recorder.steps[i], None,
                                  [RUN.recorder.steps.get(j) or StepStats() for j in range(i)])
        if verdict:
            RUN.stopped = {"reason": verdict.split(":")[0], "detail": verdict, "at_step": i}
    last = RUN.stopped.get("at_step")
    users = max(1, environment.parsed_options.num_users or 1)
    scr = RUN.scrapes

    def step_result(index, name, warmup, start_s, duration_s, rate, stats, first, end):
        """Steps ``first`` .. ``end - 1`` of the plan as one reported step."""
        server = triton_metrics.step_figures(scr[first], scr[end], RUN.gauges) if end < len(scr) else None
        lag99 = stats.lag.get_value_at_percentile(99) / 1000.0 if stats.lag.get_total_count() else None
        return StepResult(
            index=index, name=name, warmup=warmup, start_s=start_s,
            duration_s=duration_s, offered_rate=rate, concurrency=None if open_loop else users,
            achieved_rate=stats.ok / duration_s, sent=stats.sent, ok=stats.ok, errors=stats.errors,
            rejected=stats.rejected, error_kinds=stats.error_kinds, late_sends=stats.late if open_loop else 0,
            dropped=stats.dropped, lag_p99_ms=lag99 if open_loop else None, latency_ms=_summary(stats),
            server=ServerFigures(**server) if server else None)

    steps, ran = [], []
    for i, planned in enumerate(plan):
        if last is not None and i > last:
            break  # partly run after the stop decision: not a measurement of its rate
        stats = RUN.recorder.steps.get(i) or StepStats()
        ran.append((planned, stats))
        steps.append(step_result(i, planned.name, planned.warmup, planned.start_s, planned.duration_s, planned.rate,
                                 stats, i, i + 1))
    windows = s.shape.measurement_windows(len(ran), str(RUN.stopped.get("reason")))
    if windows and ran:
        # The measurement is the last windows together (perf_analyzer reports its stable windows so); the windows
        # themselves stay in the file, marked for readers to skip.
        tail = ran[-windows:]
        first = len(ran) - len(tail)
        steps = [st.model_copy(update={"warmup": True}) for st in steps]
        steps.append(step_result(len(ran), f"step@{tail[0][0].rate:g}rps", False, tail[0][0].start_s,
                                 sum(p.duration_s for p, _ in tail), tail[0][0].rate,
                                 combined([st for _, st in tail]), first, len(ran)))
    result = StressResult(
        schema_version=SCHEMA_VERSION, tool={"name": "gpufleet loadtests", "locust": locust.__version__},
        mode="open-loop" if open_loop else "closed-loop", arrival=s.arrival if open_loop else None,
        schedule_kind=s.shape.kind, seed=s.seed if open_loop else None,
        started_at=_dt.datetime.fromtimestamp(RUN.start_epoch, _dt.timezone.utc).isoformat(timespec="milliseconds"),
        start_epoch_s=RUN.recorder.start_epoch or RUN.start_epoch, late_threshold_ms=s.late_ms,
        workers=max(1, getattr(environment.runner, "worker_count", 1) or 1), users=users,
        target=Target(host=t.base_url if s.protocol == "http" else s.grpc_url, protocol=s.protocol, model=t.model,
                      model_version=t.version, input_name=t.input_name, input_shape=list(t.sample_shape),
                      datatype=t.datatype, request_batch=s.request_batch, metrics_url=s.scrape_url or None,
                      triton=RUN.batching),
        steps=steps, stopped=dict(RUN.stopped), locust_files=s.locust_files)
    write_stress_result(result, s.result_path)

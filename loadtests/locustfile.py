"""Locust file for stress runs against Triton (KServe v2), open-loop or closed-loop.

Run it through ``loadtests run`` (which checks the arguments and builds this command line), or directly::

    locust -f loadtests/locustfile.py OpenLoopUser --headless -u 1 -r 1 --run-time 70s \\
        --host http://127.0.0.1:8000 --gf-model detector --gf-schedule "50@10w,100@30,200@30;steps" \\
        --gf-result out/result.json --csv out/locust --json-file out/locust

Distributed, the same file and arguments on the master, and workers that only name the master::

    locust -f loadtests/locustfile.py OpenLoopUser --master --expect-workers 4 --headless -u 4 -r 4 ... (as above)
    locust -f loadtests/locustfile.py OpenLoopUser --worker --master-host <master>     # x 4

**Open loop** (``OpenLoopUser``): each user runs its share of a Poisson (or constant) arrival schedule. A scheduler
greenlet sleeps until each send time and spawns the request in its own greenlet, so sends never wait for earlier
responses. Latency is counted from the scheduled time, and sends that leave more than ``--gf-late-ms`` late are
counted, as are sends dropped because ``--gf-max-in-flight`` requests were outstanding. **Closed loop**
(``ClosedLoopUser``): each user sends back to back, for finding the maximum throughput; latency from the actual send.

Each process records per-step HdrHistograms (:mod:`loadtests.recorder`); workers send theirs with Locust's stats
reports and a final ``gf_done`` message. The master (or the single process) scrapes Triton's ``/metrics`` at each
step boundary, ends a ramp when a step's P99 or error share passes its bound, and writes the stress-result JSON
(:mod:`gpufleet.contracts.stress_result`) when the run ends. Locust's own request stats carry the same latencies, per step name.
"""
from __future__ import annotations

import datetime as _dt
import gc
import itertools
import json
import socket
import time
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from locust import User, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from gpufleet.contracts.triton import BatchingConfig
from gpufleet.triton import loaded_batching
from loadtests import kserve, triton_metrics
from loadtests.recorder import StepRecorder
from gpufleet.contracts.stress_result import (
    SCHEMA_VERSION, LatencySummary, ServerFigures, StepResult, StressResult, Target,
    write_stress_result)
from loadtests.schedule import Schedule, arrivals


@events.init_command_line_parser.add_listener
def _arguments(parser):
    g = parser.add_argument_group("gpufleet", "Triton stress-run settings")
    g.add_argument("--gf-model", default="", help="Model name on the server.")
    g.add_argument("--gf-version", default="", help="Model version (default: the server's choice).")
    g.add_argument("--gf-protocol", default="http", choices=["http", "grpc"], help="KServe v2 over HTTP or gRPC.")
    g.add_argument("--gf-grpc-url", default="", help="host:port of Triton's gRPC endpoint (protocol grpc).")
    g.add_argument("--gf-schedule", default="", help="Open loop: rate@seconds[w],...;kind (w marks the warm-up).")
    g.add_argument("--gf-arrival", default="poisson", choices=["poisson", "constant"], help="Arrival process.")
    g.add_argument("--gf-seed", type=int, default=0, help="Seed of the arrival times.")
    # Workers do not receive Locust's own -u from the master, so the number of generators sharing the rate travels
    # as a custom argument, which they do receive.
    g.add_argument("--gf-generators", type=int, default=0, help="Users sharing the rate (default: -u).")
    g.add_argument("--gf-duration", type=float, default=30.0, help="Closed loop: seconds to run.")
    g.add_argument("--gf-request-batch", type=int, default=1, help="Images per request.")
    g.add_argument("--gf-late-ms", type=float, default=1.0, help="A send later than this is counted late.")
    g.add_argument("--gf-max-in-flight", type=int, default=10000, help="Per process; beyond it sends are dropped.")
    g.add_argument("--gf-timeout-s", type=float, default=30.0, help="Request timeout.")
    g.add_argument("--gf-connections", type=int, default=512, help="HTTP connections per user.")
    g.add_argument("--gf-metrics-url", default="", help="Triton /metrics URL to scrape per step ('' = none).")
    g.add_argument("--gf-p99-bound-ms", type=float, default=0.0, help="Ramp: stop after a step with a higher P99.")
    g.add_argument("--gf-max-error-share", type=float, default=1.0, help="Ramp: stop after a step with more errors.")
    g.add_argument("--gf-result", default="", help="Where the master writes the stress-result JSON.")
    g.add_argument("--gf-locust-files", default="", help="JSON of Locust's own output paths, for the record.")


@dataclass
class Options:
    model: str
    version: str
    protocol: str
    grpc_url: str
    schedule: Schedule | None
    arrival: str
    seed: int
    duration_s: float
    request_batch: int
    late_s: float
    max_in_flight: int
    timeout_s: float
    connections: int
    metrics_url: str
    p99_bound_ms: float
    max_error_share: float
    result: str
    locust_files: dict

    @classmethod
    def from_env(cls, env) -> "Options":
        o = env.parsed_options
        return cls(o.gf_model, o.gf_version, o.gf_protocol, o.gf_grpc_url,
                   Schedule.from_text(o.gf_schedule) if o.gf_schedule else None, o.gf_arrival, o.gf_seed,
                   o.gf_duration, o.gf_request_batch, o.gf_late_ms / 1000.0, o.gf_max_in_flight, o.gf_timeout_s,
                   o.gf_connections, o.gf_metrics_url, o.gf_p99_bound_ms, o.gf_max_error_share, o.gf_result,
                   json.loads(o.gf_locust_files) if o.gf_locust_files else {})


@dataclass
class ProcessState:
    """What one Locust process holds for the run."""

    opts: Options | None = None
    target: kserve.Target | None = None
    batching: BatchingConfig | None = None  # the served model's Triton batching settings, for the result
    recorder: StepRecorder = field(default_factory=StepRecorder)
    t0: float | None = None  # perf_counter() of the schedule's zero in this process
    start_epoch: float | None = None
    users: itertools.count = field(default_factory=itertools.count)
    active_users: int = 0
    in_flight: int = 0
    stop: Event = field(default_factory=Event)
    done: Event = field(default_factory=Event)
    scrapes: list = field(default_factory=list)
    stopped: dict = field(default_factory=lambda: {"reason": "completed", "at_step": None})
    merged: dict = field(default_factory=dict)  # worker id -> payloads merged
    announced: dict = field(default_factory=dict)  # worker id -> payloads it sent in all (from its gf_done)
    mode: str = "open-loop"


RUN = ProcessState()


def _zero() -> None:
    if RUN.t0 is None:
        RUN.t0 = time.perf_counter()
        RUN.start_epoch = time.time()
        RUN.recorder.start_epoch = RUN.start_epoch


@events.test_start.add_listener
def _on_test_start(environment, **_):
    global RUN
    RUN = ProcessState(opts=Options.from_env(environment))
    RUN.recorder = StepRecorder(RUN.opts.late_s)
    RUN.mode = "closed-loop" if "ClosedLoopUser" in {u.__name__ for u in environment.user_classes} else "open-loop"
    if not RUN.opts.model:
        raise ValueError("--gf-model is required")
    RUN.target = kserve.resolve(environment.host, RUN.opts.model, RUN.opts.version)
    RUN.batching = loaded_batching(environment.host, RUN.opts.model, RUN.opts.version)
    # A full collection over Locust's and gevent's objects takes milliseconds, and every send scheduled meanwhile
    # leaves late. Freezing what exists now and collecting young objects less often keeps pauses short.
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message("gf_stop", lambda msg, **kw: RUN.stop.set())
    else:
        _zero()
        if isinstance(runner, MasterRunner):
            runner.register_message("gf_done", _on_worker_done)
        gevent.spawn(_controller, environment)


@events.report_to_master.add_listener
def _on_report(client_id, data, **_):
    data["gf"] = RUN.recorder.drain()


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_):
    if "gf" in data:
        RUN.recorder.merge(data["gf"])
        RUN.merged[client_id] = RUN.merged.get(client_id, 0) + 1


def _on_worker_done(msg, **_):
    # A periodic report drained before this message may still be in transit behind it (the reporter greenlet can
    # yield between draining and sending), so completion is "every payload up to this one merged", not "done seen".
    RUN.recorder.merge(msg.data)
    RUN.merged[msg.node_id] = RUN.merged.get(msg.node_id, 0) + 1
    RUN.announced[msg.node_id] = msg.data["seq"]


def _all_workers_reported(expected: int) -> bool:
    return len(RUN.announced) >= expected and all(RUN.merged.get(w, 0) >= n for w, n in RUN.announced.items())


# --- users -------------------------------------------------------------------------------------------------------

class _Sender:
    """Sends one request and records it; one per user, shared by that user's request greenlets."""

    def __init__(self, environment):
        self.env = environment
        t = RUN.target
        frames = kserve.camera_frames(t, count=8, batch=RUN.opts.request_batch, seed=RUN.opts.seed)
        self.n = itertools.count()
        if RUN.opts.protocol == "grpc":
            _grpc_cooperates_with_gevent()
            import tritonclient.grpc as grpcclient
            self.grpc = grpcclient.InferenceServerClient(RUN.opts.grpc_url)
            self.inputs = []
            for f in frames:
                inp = grpcclient.InferInput(t.input_name, list(f.shape), t.datatype)
                inp.set_data_from_numpy(f)
                self.inputs.append(inp)
        else:
            from geventhttpclient import HTTPClient
            self.http = HTTPClient.from_url(t.base_url, concurrency=RUN.opts.connections,
                                            connection_timeout=RUN.opts.timeout_s, network_timeout=RUN.opts.timeout_s)
            # A frame is tens of kB: with Nagle on, the last partial segment waits for the server's delayed ACK
            # (40 ms on Linux) and every request looks 40 ms slower than it is.
            self.http._connection_pool.after_connect = _no_delay
            self.bodies = kserve.http_bodies(t, frames)

    def send(self, step: int, name: str, scheduled: float) -> None:
        """Send, then record latency from ``scheduled`` (a perf_counter time).

        The caller counts the request in flight *before* spawning this: a greenlet spawned but not yet started must
        already count, or a user could declare itself drained while its last request has not left.
        """
        exc, size = None, 0
        try:
            k = next(self.n)
            if RUN.opts.protocol == "grpc":
                result = self.grpc.infer(RUN.target.model, [self.inputs[k % len(self.inputs)]],
                                         model_version=RUN.target.version, client_timeout=RUN.opts.timeout_s)
                size = len(result.get_response().raw_output_contents[0]) if result.get_response().raw_output_contents else 0
            else:
                body, json_size = self.bodies[k % len(self.bodies)]
                resp = self.http.request("POST", RUN.target.infer_path, body=body, headers={
                    "Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"})
                try:
                    data = resp.read()
                    header_len = resp.get("inference-header-content-length")
                finally:
                    resp.release()
                size = len(data)
                if resp.status_code != 200:
                    raise _RequestError(f"http-{resp.status_code}")
                header = json.loads(data[:int(header_len)] if header_len else data)
                if "outputs" not in header:
                    raise _RequestError("bad-response")
        except _RequestError as e:
            exc = e
        except gevent.Timeout as e:
            exc = _RequestError("timeout", e)
        except Exception as e:  # the server's or the network's failure is a measurement, not a crash
            exc = _RequestError(_error_kind(e), e)
        finally:
            RUN.in_flight -= 1
        latency = time.perf_counter() - scheduled
        if exc is None:
            RUN.recorder.success(step, latency)
        else:
            RUN.recorder.failure(step, exc.kind)
        self.env.events.request.fire(request_type=RUN.opts.protocol.upper(), name=name,
                                     response_time=latency * 1000.0, response_length=size, exception=exc,
                                     context={})


_GRPC_READY = False


def _grpc_cooperates_with_gevent() -> None:
    """Without this, a gRPC call blocks the whole gevent loop: one request in flight at a time, a closed loop."""
    global _GRPC_READY
    if not _GRPC_READY:
        from grpc.experimental import gevent as grpc_gevent
        grpc_gevent.init_gevent()
        _GRPC_READY = True


def _no_delay(sock) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _RequestError(Exception):
    def __init__(self, kind: str, cause: BaseException | None = None):
        super().__init__(kind if cause is None else f"{kind}: {cause}")
        self.kind = kind


def _error_kind(e: BaseException) -> str:
    text = str(e).lower()
    if "timed out" in text or "timeout" in text or "deadline" in text:
        return "timeout"
    return type(e).__name__


# gevent's loop sleeps in whole milliseconds (epoll's timeout), rounded up, so a sleep can end up to 1 ms past its
# time. Aiming _EARLY_S before the send time bounds the lag to 1 ms - _EARLY_S (plus loop overhead) without spinning;
# a send may then leave up to _EARLY_S early, and its latency is counted from the later of its schedule and the send.
_EARLY_S = 0.0003


def _wait_until(due: float) -> None:
    delay = due - time.perf_counter()
    if delay > _EARLY_S:
        gevent.sleep(delay - _EARLY_S)


def _drain(deadline: float) -> None:
    while RUN.in_flight > 0 and time.perf_counter() < deadline:
        gevent.sleep(0.01)


class OpenLoopUser(User):
    """Runs its share of the arrival schedule: sends at scheduled times, never waiting for responses."""

    def __init__(self, environment):
        super().__init__(environment)
        self.local_index = next(RUN.users)

    @task
    def run_schedule(self):
        opts, schedule = RUN.opts, RUN.opts.schedule
        if schedule is None:
            raise StopUser()
        _zero()
        RUN.active_users += 1
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else 0
        o = self.environment.parsed_options
        share = max(1, o.gf_generators or o.num_users or 1)
        sender = _Sender(self.environment)
        names = [s.name for s in schedule.steps]
        cap = opts.max_in_flight
        try:
            for t, step in arrivals(schedule, opts.arrival, opts.seed, share, worker * 1000 + self.local_index):
                if RUN.stop.is_set():
                    break
                due = RUN.t0 + t
                _wait_until(due)
                if RUN.in_flight >= cap:
                    RUN.recorder.dropped(step)
                    continue
                now = time.perf_counter()
                RUN.recorder.sent(step, now - due)
                RUN.in_flight += 1
                gevent.spawn(sender.send, step, names[step], max(due, now))
            _drain(time.perf_counter() + opts.timeout_s + 1)
        finally:
            RUN.active_users -= 1
            if RUN.active_users == 0:
                _process_done(self.environment)
        raise StopUser()


class ClosedLoopUser(User):
    """Sends back to back for ``--gf-duration`` seconds: the closed-loop (concurrency) mode."""

    @task
    def run_closed(self):
        _zero()
        RUN.active_users += 1
        sender = _Sender(self.environment)
        end = RUN.t0 + RUN.opts.duration_s
        try:
            while time.perf_counter() < end and not RUN.stop.is_set():
                now = time.perf_counter()
                RUN.recorder.sent(0, 0.0)
                RUN.in_flight += 1
                sender.send(0, "closed-loop", now)
        finally:
            RUN.active_users -= 1
            if RUN.active_users == 0:
                _process_done(self.environment)
        raise StopUser()


def _process_done(environment) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message("gf_done", RUN.recorder.drain())
    RUN.done.set()


# --- the master's (or single process's) side ---------------------------------------------------------------------

def _step_plan() -> list[tuple[str, float, float, float | None, bool]]:
    """(name, start_s, duration_s, offered_rate, warmup) per step."""
    if RUN.mode == "closed-loop":
        return [("closed-loop", 0.0, RUN.opts.duration_s, None, False)]
    sched = RUN.opts.schedule
    return [(s.name, start, s.duration_s, s.rate, s.warmup) for s, start in zip(sched.steps, sched.starts())]


def _controller(environment) -> None:
    """Scrape at step boundaries, stop a ramp past its bounds, end the run when every user is done."""
    plan = _step_plan()
    runner = environment.runner
    metrics = RUN.opts.metrics_url
    RUN.scrapes = [triton_metrics.scrape(metrics, RUN.opts.model, time.time()) if metrics else None]
    expected_workers = runner.worker_count if isinstance(runner, MasterRunner) else 0
    settle = 3.5 if isinstance(runner, MasterRunner) else min(2.0, RUN.opts.timeout_s)
    for i, (_, start, duration, _, _) in enumerate(plan):
        end = RUN.t0 + start + duration
        gevent.sleep(max(0.0, end - time.perf_counter()))
        RUN.scrapes.append(triton_metrics.scrape(metrics, RUN.opts.model, time.time()) if metrics else None)
        if RUN.stop.is_set():
            break
        if _is_ramp() and i < len(plan) - 1:
            gevent.spawn(_judge_step, environment, i, settle)
    # Wait for the users (or workers) to finish and report, bounded by the request timeout.
    deadline = time.perf_counter() + RUN.opts.timeout_s + 10
    while time.perf_counter() < deadline:
        if isinstance(runner, MasterRunner):
            if _all_workers_reported(expected_workers):
                break
        elif RUN.done.is_set():
            break
        gevent.sleep(0.05)
    _write_result(environment)
    runner.quit()


def _is_ramp() -> bool:
    return RUN.mode == "open-loop" and RUN.opts.schedule.kind == "ramp" and (
        RUN.opts.p99_bound_ms > 0 or RUN.opts.max_error_share < 1.0)


def _judge_step(environment, i: int, settle: float) -> None:
    gevent.sleep(settle)
    if RUN.stop.is_set():
        return
    s = RUN.recorder.steps.get(i)
    if s is None or RUN.opts.schedule.steps[i].warmup:
        return
    p99 = s.quantile_ms(0.99)
    done = s.ok + s.errors + s.dropped
    share = (s.errors + s.dropped) / done if done else 0.0
    reason = None
    if RUN.opts.p99_bound_ms > 0 and p99 is not None and p99 > RUN.opts.p99_bound_ms:
        reason = f"p99-bound: {p99:.1f} ms > {RUN.opts.p99_bound_ms:g} ms"
    elif share > RUN.opts.max_error_share:
        reason = f"error-share: {share:.3f} > {RUN.opts.max_error_share:g}"
    if reason:
        RUN.stopped = {"reason": reason.split(":")[0], "detail": reason, "at_step": i}
        RUN.stop.set()
        if isinstance(environment.runner, MasterRunner):
            environment.runner.send_message("gf_stop", None)


def _summary(stats) -> LatencySummary:
    h = stats.latency
    if h.get_total_count() == 0:
        return LatencySummary(p50=None, p90=None, p95=None, p99=None, p999=None, mean=None, max=None)
    q = {k: h.get_value_at_percentile(p) / 1000.0 for k, p in
         (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9))}
    return LatencySummary(**q, mean=h.get_mean_value() / 1000.0, max=h.get_max_value() / 1000.0)


def _write_result(environment) -> None:
    if not RUN.opts.result:
        return
    plan = _step_plan()
    last = RUN.stopped.get("at_step")
    steps = []
    for i, (name, start, duration, rate, warmup) in enumerate(plan):
        if last is not None and i > last:
            break  # partly run after the stop decision: not a measurement of its rate
        s = RUN.recorder.steps.get(i) or RUN.recorder._get(i)
        scr = RUN.scrapes
        server = triton_metrics.step_figures(scr[i], scr[i + 1]) if i + 1 < len(scr) else None
        lag99 = s.lag.get_value_at_percentile(99) / 1000.0 if s.lag.get_total_count() else None
        steps.append(StepResult(
            index=i, name=name, warmup=warmup, start_s=start, duration_s=duration, offered_rate=rate,
            concurrency=environment.parsed_options.num_users if RUN.mode == "closed-loop" else None,
            achieved_rate=s.ok / duration, sent=s.sent, ok=s.ok, errors=s.errors, error_kinds=s.error_kinds,
            late_sends=s.late if RUN.mode == "open-loop" else 0, dropped=s.dropped,
            lag_p99_ms=lag99 if RUN.mode == "open-loop" else None, latency_ms=_summary(s),
            server=ServerFigures(**server) if server else None))
    import locust
    t = RUN.target
    result = StressResult(
        schema_version=SCHEMA_VERSION, tool={"name": "gpufleet loadtests", "locust": locust.__version__},
        mode=RUN.mode, arrival=RUN.opts.arrival if RUN.mode == "open-loop" else None,
        schedule_kind=RUN.opts.schedule.kind if RUN.mode == "open-loop" else "closed-loop",
        seed=RUN.opts.seed if RUN.mode == "open-loop" else None,
        started_at=_dt.datetime.fromtimestamp(RUN.start_epoch, _dt.timezone.utc).isoformat(timespec="milliseconds"),
        start_epoch_s=RUN.recorder.start_epoch or RUN.start_epoch, late_threshold_ms=RUN.opts.late_s * 1000,
        workers=max(1, getattr(environment.runner, "worker_count", 1) or 1),
        users=max(1, environment.parsed_options.num_users or 1),
        target=Target(host=t.base_url if RUN.opts.protocol == "http" else RUN.opts.grpc_url,
                      protocol=RUN.opts.protocol, model=t.model, model_version=t.version, input_name=t.input_name,
                      input_shape=list(t.sample_shape), datatype=t.datatype, request_batch=RUN.opts.request_batch,
                      metrics_url=RUN.opts.metrics_url or None,
                      triton=RUN.batching),
        steps=steps, stopped={k: v for k, v in RUN.stopped.items()}, locust_files=RUN.opts.locust_files)
    write_stress_result(result, RUN.opts.result)

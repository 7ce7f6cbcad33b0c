"""The Locust users that send load: open loop (sends at scheduled times) and closed loop (back to back).

**Open loop** (:class:`OpenLoopUser`): each user runs its share of the shape's arrival schedule. It sleeps until
each send time and spawns the request in its own greenlet, so sends never wait for earlier responses. Latency is
counted from the scheduled time; sends that leave more than ``late_ms`` late are counted, and so are sends dropped
because ``max_in_flight`` requests were outstanding. **Closed loop** (:class:`ClosedLoopUser`): each user sends
back to back, for finding the maximum throughput; latency from the actual send.
"""
from __future__ import annotations

import itertools
import json
import socket
import time

import gevent
from locust import User, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from gpufleet.triton import is_load_shed
from loadtests import kserve
from loadtests.process import MSG_DONE, RUN
from loadtests.schedule import arrivals

# Distinct frames each user cycles through (so no cache keyed on the payload serves them all).
FRAMES_PER_USER = 8
# gevent's loop sleeps in whole milliseconds (epoll's timeout), rounded up, so a sleep can end up to 1 ms past its
# time. Aiming EARLY_S before the send time bounds the lag to 1 ms - EARLY_S (plus loop overhead) without spinning;
# a send may then leave up to EARLY_S early, and its latency is counted from the later of its schedule and the send.
EARLY_S = 0.0003
# How often a finished user looks whether its last requests have returned, and how long past the request timeout
# it waits for them.
DRAIN_POLL_S = 0.01
DRAIN_SLACK_S = 1.0
# Generators on different workers draw distinct arrival streams: index = worker * this + local user.
USERS_PER_WORKER_STRIDE = 1000
CLOSED_LOOP_STEP = 0
# The kind of a request the server's queue policy turned away (counted apart from errors).
REJECTED = "rejected"


class RequestSender:
    """Sends one request and records it; one per user, shared by that user's request greenlets."""

    def __init__(self, environment):
        self.env = environment
        s, t = RUN.settings, RUN.target
        frames = kserve.camera_frames(t, count=FRAMES_PER_USER, batch=s.request_batch, seed=s.seed)
        self.n = itertools.count()
        if s.protocol == "grpc":
            _grpc_cooperates_with_gevent()
            import tritonclient.grpc as grpcclient
            self.grpc = grpcclient.InferenceServerClient(s.grpc_url)
            self.inputs = []
            for f in frames:
                inp = grpcclient.InferInput(t.input_name, list(f.shape), t.datatype)
                inp.set_data_from_numpy(f)
                self.inputs.append(inp)
        else:
            from geventhttpclient import HTTPClient
            self.http = HTTPClient.from_url(t.base_url, concurrency=s.connections,
                                            connection_timeout=s.timeout_s, network_timeout=s.timeout_s)
            # A frame is tens of kB: with Nagle on, the last partial segment waits for the server's delayed ACK
            # (40 ms on Linux) and every request looks 40 ms slower than it is.
            self.http._connection_pool.after_connect = _no_delay
            self.bodies = kserve.http_bodies(t, frames)

    def send(self, step: int, name: str, scheduled: float) -> None:
        """Send, then record latency from ``scheduled`` (a perf_counter time).

        The caller counts the request in flight *before* spawning this: a greenlet spawned but not yet started must
        already count, or a user could declare itself drained while its last request has not left.
        """
        s = RUN.settings
        exc, size = None, 0
        token = RUN.recorder.begin(step, scheduled)
        try:
            k = next(self.n)
            if s.protocol == "grpc":
                result = self.grpc.infer(RUN.target.model, [self.inputs[k % len(self.inputs)]],
                                         model_version=RUN.target.version, client_timeout=s.timeout_s)
                raw = result.get_response().raw_output_contents
                size = len(raw[0]) if raw else 0
            else:
                size = self._http(k)
        except RequestError as e:
            exc = e
        except gevent.Timeout as e:
            exc = RequestError("timeout", e)
        except Exception as e:  # the server's or the network's failure is a measurement, not a crash
            exc = RequestError(_error_kind(e), e)
        finally:
            RUN.in_flight -= 1
            RUN.recorder.end(step, token)
        latency = time.perf_counter() - scheduled
        if exc is None:
            RUN.recorder.success(step, latency)
        elif exc.kind == REJECTED:
            RUN.recorder.rejected(step)
        else:
            RUN.recorder.failure(step, exc.kind)
        self.env.events.request.fire(request_type=s.protocol.upper(), name=name, response_time=latency * 1000.0,
                                     response_length=size, exception=exc, context={})

    def _http(self, k: int) -> int:
        body, json_size = self.bodies[k % len(self.bodies)]
        resp = self.http.request("POST", RUN.target.infer_path, body=body, headers={
            "Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"})
        try:
            data = resp.read()
            header_len = resp.get("inference-header-content-length")
        finally:
            resp.release()
        if resp.status_code != 200:
            raise RequestError(REJECTED if is_load_shed(data) else f"http-{resp.status_code}")
        header = json.loads(data[:int(header_len)] if header_len else data)
        if "outputs" not in header:
            raise RequestError("bad-response")
        return len(data)


class RequestError(Exception):
    def __init__(self, kind: str, cause: BaseException | None = None):
        super().__init__(kind if cause is None else f"{kind}: {cause}")
        self.kind = kind


def _error_kind(e: BaseException) -> str:
    if is_load_shed(str(e)):
        return REJECTED
    text = str(e).lower()
    if "timed out" in text or "timeout" in text or "deadline" in text:
        return "timeout"
    return type(e).__name__


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


def _wait_until(due: float) -> None:
    delay = due - time.perf_counter()
    if delay > EARLY_S:
        gevent.sleep(delay - EARLY_S)


def _drain(deadline: float) -> None:
    while RUN.in_flight > 0 and time.perf_counter() < deadline:
        gevent.sleep(DRAIN_POLL_S)


def _user_finished(environment) -> None:
    RUN.active_users -= 1
    if RUN.active_users == 0:
        if isinstance(environment.runner, WorkerRunner):
            environment.runner.send_message(MSG_DONE, RUN.recorder.drain())
        RUN.done.set()


class OpenLoopUser(User):
    """Runs its share of the arrival schedule: sends at scheduled times, never waiting for responses."""

    def __init__(self, environment):
        super().__init__(environment)
        self.local_index = next(RUN.users)

    @task
    def run_schedule(self):
        s = RUN.settings
        schedule = s.shape.schedule()
        RUN.zero()
        RUN.active_users += 1
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else 0
        sender = RequestSender(self.environment)
        names = [step.name for step in schedule.steps]
        index = worker * USERS_PER_WORKER_STRIDE + self.local_index
        try:
            for t, step in arrivals(schedule, s.arrival, s.seed, s.locust_users, index):
                if RUN.stop.is_set():
                    break
                due = RUN.t0 + t
                _wait_until(due)
                if RUN.in_flight >= s.max_in_flight:
                    RUN.recorder.dropped(step)
                    continue
                now = time.perf_counter()
                RUN.recorder.sent(step, now - due)
                RUN.in_flight += 1
                gevent.spawn(sender.send, step, names[step], max(due, now))
            _drain(time.perf_counter() + s.timeout_s + DRAIN_SLACK_S)
        finally:
            _user_finished(self.environment)
        raise StopUser()


class ClosedLoopUser(User):
    """Sends back to back for the shape's duration: the closed-loop (concurrency) mode."""

    @task
    def run_closed(self):
        RUN.zero()
        RUN.active_users += 1
        sender = RequestSender(self.environment)
        (step,) = RUN.settings.shape.plan()
        end = RUN.t0 + step.duration_s
        try:
            while time.perf_counter() < end and not RUN.stop.is_set():
                now = time.perf_counter()
                RUN.recorder.sent(CLOSED_LOOP_STEP, 0.0)
                RUN.in_flight += 1
                sender.send(CLOSED_LOOP_STEP, step.name, now)
        finally:
            _user_finished(self.environment)
        raise StopUser()

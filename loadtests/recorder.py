"""Per-step latency recording that merges exactly across Locust workers.

Each process keeps, per step, an HdrHistogram of latency counted from the scheduled send time and one of the
schedule lag (how late the send left), plus counts. Workers ship what they gathered since their last report with
Locust's stats report (:meth:`StepRecorder.drain`), and the master adds it up (:meth:`StepRecorder.merge`), so
percentiles are those of all requests, not an average of per-worker percentiles.

Requests still unanswered are kept too (:meth:`StepRecorder.begin`/:meth:`StepRecorder.end`): a request in flight
for ``a`` seconds will take at least ``a``, so its age so far is a lower bound of its latency. A ramp's verdict
counts them (:meth:`StepRecorder.pending`), or the slower the server, the fewer responses, and the less a P99 bound
could ever trip. Each report carries a snapshot of its process's unanswered ages, which replaces that process's
previous one on the master.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant digits: 0.1% resolution, enough to compare P99s within 5%.
LOWEST_US, HIGHEST_US, DIGITS = 1, 600_000_000, 3


def new_histogram() -> HdrHistogram:
    """An empty histogram at the recorder's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


@dataclass
class StepStats:
    latency: HdrHistogram = field(default_factory=new_histogram)  # successes only, µs from the scheduled time
    lag: HdrHistogram = field(default_factory=new_histogram)  # µs between the scheduled and the actual send
    sent: int = 0
    ok: int = 0
    errors: int = 0
    late: int = 0
    dropped: int = 0  # never sent: the in-flight cap was reached
    rejected: int = 0  # refused by the server at its queue bound: shed on purpose, not an error
    error_kinds: dict[str, int] = field(default_factory=dict)

    def quantile_ms(self, q: float) -> float | None:
        if self.latency.get_total_count() == 0:
            return None
        return self.latency.get_value_at_percentile(q * 100) / 1000.0


def combined(parts: list[StepStats]) -> StepStats:
    """Several steps' figures as one step's: histograms added, counts summed."""
    out = StepStats()
    for p in parts:
        out.latency.add(p.latency)
        out.lag.add(p.lag)
        for name in ("sent", "ok", "errors", "late", "dropped", "rejected"):
            setattr(out, name, getattr(out, name) + getattr(p, name))
        for k, v in p.error_kinds.items():
            out.error_kinds[k] = out.error_kinds.get(k, 0) + v
    return out


def _us(seconds: float) -> int:
    return min(max(int(round(seconds * 1e6)), LOWEST_US), HIGHEST_US)


class StepRecorder:
    """Counts and histograms per step index."""

    def __init__(self, late_threshold_s: float = 0.001):
        self.late_threshold_s = late_threshold_s
        self.steps: dict[int, StepStats] = {}
        self.start_epoch: float | None = None
        self.drains = 0  # payloads handed out so far; the last one says how many there were in all
        self.in_flight: dict[int, dict[int, float]] = {}  # step -> {token: scheduled perf_counter time}
        self.remote_in_flight: dict[str, dict[int, HdrHistogram]] = {}  # source -> step -> ages at its last report
        self._tokens = itertools.count()

    def _get(self, step: int) -> StepStats:
        s = self.steps.get(step)
        if s is None:
            s = self.steps[step] = StepStats()
        return s

    def sent(self, step: int, lag_s: float) -> None:
        """A send left ``lag_s`` after its schedule (negative: early, recorded as on time)."""
        s = self._get(step)
        s.sent += 1
        s.lag.record_value(_us(lag_s))
        if lag_s > self.late_threshold_s:
            s.late += 1

    def begin(self, step: int, scheduled: float) -> int:
        """A request of ``step`` scheduled at ``scheduled`` (perf_counter) is in flight; returns its token."""
        token = next(self._tokens)
        self.in_flight.setdefault(step, {})[token] = scheduled
        return token

    def end(self, step: int, token: int) -> None:
        """That request was answered (or failed); record its outcome with the methods below."""
        self.in_flight.get(step, {}).pop(token, None)

    def _ages(self, now: float) -> dict[int, HdrHistogram]:
        out = {}
        for step, started in self.in_flight.items():
            if started:
                h = out[step] = new_histogram()
                for t in started.values():
                    h.record_value(_us(now - t))
        return out

    def pending(self, step: int, now: float | None = None) -> HdrHistogram:
        """How long the step's unanswered requests have waited so far: this process's now, the workers' at their
        last report (older, so still lower bounds)."""
        h = new_histogram()
        own = self._ages(time.perf_counter() if now is None else now).get(step)
        for part in [own, *(s.get(step) for s in self.remote_in_flight.values())]:
            if part is not None:
                h.add(part)
        return h

    def dropped(self, step: int) -> None:
        self._get(step).dropped += 1

    def success(self, step: int, latency_s: float) -> None:
        s = self._get(step)
        s.ok += 1
        s.latency.record_value(_us(latency_s))

    def rejected(self, step: int) -> None:
        self._get(step).rejected += 1

    def failure(self, step: int, kind: str) -> None:
        s = self._get(step)
        s.errors += 1
        s.error_kinds[kind] = s.error_kinds.get(kind, 0) + 1

    def drain(self) -> dict:
        """What was recorded since the last drain, as plain data for Locust's report; then start afresh.

        Each payload carries its sequence number (``seq``, from 1), so a receiver can tell when it has them all.
        """
        self.drains += 1
        out = {"start_epoch": self.start_epoch, "seq": self.drains, "steps": {},
               "in_flight": {str(i): h.encode().decode() for i, h in self._ages(time.perf_counter()).items()}}
        for i, s in self.steps.items():
            out["steps"][str(i)] = {
                "latency": s.latency.encode().decode() if s.latency.get_total_count() else None,
                "lag": s.lag.encode().decode() if s.lag.get_total_count() else None,
                "sent": s.sent, "ok": s.ok, "errors": s.errors, "late": s.late, "dropped": s.dropped,
                "rejected": s.rejected, "error_kinds": dict(s.error_kinds)}
        self.steps = {}
        return out

    def merge(self, data: dict, source: str = "") -> None:
        """Add a process's recordings; its unanswered ages replace those of its previous report."""
        self.remote_in_flight[source] = {int(k): HdrHistogram.decode(v.encode())
                                         for k, v in data.get("in_flight", {}).items()}
        if data.get("start_epoch") is not None:
            self.start_epoch = min(filter(None, [self.start_epoch, data["start_epoch"]]))
        for key, d in data.get("steps", {}).items():
            s = self._get(int(key))
            for name in ("latency", "lag"):
                if d[name]:
                    getattr(s, name).add(HdrHistogram.decode(d[name].encode()))
            s.sent += d["sent"]
            s.ok += d["ok"]
            s.errors += d["errors"]
            s.late += d["late"]
            s.dropped += d["dropped"]
            s.rejected += d["rejected"]
            for k, v in d["error_kinds"].items():
                s.error_kinds[k] = s.error_kinds.get(k, 0) + v

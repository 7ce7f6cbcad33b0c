"""Per-step latency recording that merges exactly across Locust workers.

Each process keeps, per step, an HdrHistogram of latency counted from the scheduled send time and one of the
schedule lag (how late the send left), plus counts. Workers ship what they gathered since their last report with
Locust's stats report (:meth:`StepRecorder.drain`), and the master adds it up (:meth:`StepRecorder.merge`), so
percentiles are those of all requests, not an average of per-worker percentiles.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant digits: 0.1% resolution, enough to compare P99s within 5%.
LOWEST_US, HIGHEST_US, DIGITS = 1, 600_000_000, 3


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


@dataclass
class StepStats:
    latency: HdrHistogram = field(default_factory=_histogram)  # successes only, µs from the scheduled time
    lag: HdrHistogram = field(default_factory=_histogram)  # µs between the scheduled and the actual send
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


def _us(seconds: float) -> int:
    return min(max(int(round(seconds * 1e6)), LOWEST_US), HIGHEST_US)


class StepRecorder:
    """Counts and histograms per step index."""

    def __init__(self, late_threshold_s: float = 0.001):
        self.late_threshold_s = late_threshold_s
        self.steps: dict[int, StepStats] = {}
        self.start_epoch: float | None = None
        self.drains = 0  # payloads handed out so far; the last one says how many there were in all

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
        out = {"start_epoch": self.start_epoch, "seq": self.drains, "steps": {}}
        for i, s in self.steps.items():
            out["steps"][str(i)] = {
                "latency": s.latency.encode().decode() if s.latency.get_total_count() else None,
                "lag": s.lag.encode().decode() if s.lag.get_total_count() else None,
                "sent": s.sent, "ok": s.ok, "errors": s.errors, "late": s.late, "dropped": s.dropped,
                "rejected": s.rejected, "error_kinds": dict(s.error_kinds)}
        self.steps = {}
        return out

    def merge(self, data: dict) -> None:
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

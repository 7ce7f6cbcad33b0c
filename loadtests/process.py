"""What one Locust process holds during a stress run, and the messages its processes exchange.

Every Locust process (a single one, a master, or a worker) has one :data:`RUN`, begun afresh at each test start.
Between processes, three things travel:

- with each of Locust's periodic stats reports, a worker adds :data:`REPORT_KEY`: the per-step recordings since its
  last report (:meth:`loadtests.recorder.StepRecorder.drain`, numbered by ``seq``);
- :data:`MSG_DONE` (worker to master): the last recordings, once its users have finished; its ``seq`` says how many
  payloads that worker sent in all;
- :data:`MSG_STOP` (master to workers): a ramp passed its bound; stop sending.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from gevent.event import Event

from gpufleet.contracts.triton import BatchingConfig
from loadtests import kserve
from loadtests.recorder import StepRecorder
from loadtests.settings import StressSettings

MSG_DONE = "gf_done"
MSG_STOP = "gf_stop"
REPORT_KEY = "gf"


@dataclass
class ProcessState:
    settings: StressSettings | None = None
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
    scrapes: list = field(default_factory=list)  # Triton's counters at each step boundary (None: not scraped)
    gauges: list = field(default_factory=list)  # Triton's utilization gauges, sampled through the run
    stopped: dict = field(default_factory=lambda: {"reason": "completed", "at_step": None})
    merged: dict = field(default_factory=dict)  # worker id -> payloads merged
    announced: dict = field(default_factory=dict)  # worker id -> payloads it sent in all (from its MSG_DONE)

    def begin(self, settings: StressSettings) -> None:
        """Forget any earlier run in this process and take these settings."""
        self.__init__(settings=settings, recorder=StepRecorder(settings.late_ms / 1000.0))

    def zero(self) -> None:
        """Fix the schedule's zero in this process, once (the first user, or the controller, to get here)."""
        if self.t0 is None:
            self.t0 = time.perf_counter()
            self.start_epoch = time.time()
            self.recorder.start_epoch = self.start_epoch

    def merge_report(self, worker: str, payload: dict) -> None:
        self.recorder.merge(payload, worker)
        self.merged[worker] = self.merged.get(worker, 0) + 1

    def worker_done(self, worker: str, payload: dict) -> None:
        # A periodic report drained before this message may still be in transit behind it (the reporter greenlet
        # can yield between draining and sending), so completion is "every payload up to this one merged", not
        # "done seen".
        self.merge_report(worker, payload)
        self.announced[worker] = payload["seq"]

    def all_workers_reported(self, expected: int) -> bool:
        return len(self.announced) >= expected and all(
            self.merged.get(w, 0) >= n for w, n in self.announced.items())


RUN = ProcessState()

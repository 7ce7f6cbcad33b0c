"""Locust file for stress runs against Triton (KServe v2): it wires Locust's events to the stress run's parts.

Run it through ``loadtests run``, which validates the settings and builds the command line; it prints that command,
so a run can be repeated by hand. The settings travel as one JSON argument (``--gf-settings``,
:class:`loadtests.settings.StressSettings`), which Locust hands on to its workers::

    locust -f loadtests/locustfile.py OpenLoopUser --headless -u 1 -r 1 --run-time 100s \\
        --host http://127.0.0.1:8000 --gf-settings '{"model": "detector", "shape": {"kind": "steps", ...}, ...}'

Distributed: the same on the master with ``--master --expect-workers N``, and workers that only name the master
(``locust -f loadtests/locustfile.py OpenLoopUser --worker --master-host <master>``).

The parts, one job each: :mod:`loadtests.users` sends (open or closed loop); :mod:`loadtests.recorder` records
per-step HdrHistograms that merge exactly across workers; :mod:`loadtests.controller` (on the master or the single
process) scrapes Triton at step boundaries, stops a ramp past its bounds and writes the stress-result JSON;
:mod:`loadtests.process` holds each process's state and names the messages between processes.
"""
from __future__ import annotations

import gc

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from gpufleet.triton import loaded_batching
from loadtests import controller, kserve
from loadtests.process import MSG_DONE, MSG_STOP, REPORT_KEY, RUN
from loadtests.settings import SETTINGS_ARG, StressSettings
from loadtests.users import ClosedLoopUser, OpenLoopUser

__all__ = ["ClosedLoopUser", "OpenLoopUser"]

# A full collection over Locust's and gevent's objects takes milliseconds, and every send scheduled meanwhile
# leaves late. Freezing what exists at the start and collecting young objects less often keeps pauses short.
GC_THRESHOLDS = (50_000, 50, 1000)


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument(SETTINGS_ARG, default="", help="The stress run's settings as JSON (loadtests run writes it).")


@events.test_start.add_listener
def _on_test_start(environment, **_):
    text = environment.parsed_options.gf_settings
    if not text:
        raise ValueError(f"{SETTINGS_ARG} is required: run through `loadtests run`, which writes it")
    RUN.begin(StressSettings.model_validate_json(text))
    s = RUN.settings
    RUN.target = kserve.resolve(s.host, s.model, s.version)
    RUN.batching = loaded_batching(s.host, s.model, s.version)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_STOP, lambda msg, **kw: RUN.stop.set())
        return
    RUN.zero()
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_DONE, lambda msg, **kw: RUN.worker_done(msg.node_id, msg.data))
    gevent.spawn(controller.run, environment)


@events.report_to_master.add_listener
def _on_report(client_id, data, **_):
    data[REPORT_KEY] = RUN.recorder.drain()


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_):
    if REPORT_KEY in data:
        RUN.merge_report(client_id, data[REPORT_KEY])

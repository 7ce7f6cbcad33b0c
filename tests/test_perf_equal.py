"""The planner's shortcuts answer exactly as the computations they stand for (issue 26's timings).

Each shortcut is checked against the plain computation it replaces, still in the code: a capacity probe that gives up
against the full run's P99; the one-instance simulator loop against the general (processor-sharing) one with one
instance; the day replay's P99 from presorted latency tables against ``mixture_quantile`` on the raw samples.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.day import LatencyTable, Replay
from planner.simulate import Workload, _simulate_shared, simulate
from planner.survival import mixture_quantile
from tests.synthetic import affine_profile

MODEL = ReplicaModel.from_profile(affine_profile())
WORK = Workload.poisson(4_000, seed=3)
CONFIGS = [BatchingConfig(max_batch_size=b, max_queue_delay_microseconds=d, preferred_batch_sizes=p)
           for b, d, p in [(1, 0, ()), (8, 0, ()), (16, 0, ()), (16, 2000, ()), (16, 500, (4, 8)), (8, 10000, ())]]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_give_up_decides_as_the_full_run(cfg):
    """At bounds on both sides of the full run's P99, down to the next float, the probe answers as the full run."""
    saturation = MODEL.saturation_rate(cfg)
    for share in (0.3, 0.8, 0.97, 1.3):
        rate = share * saturation
        p99_s = WORK.run(rate, cfg, MODEL.service, MODEL.speedup).quantile_ms(0.99) / 1000.0
        for bound in (p99_s * 0.5, p99_s * 0.99, np.nextafter(p99_s, 0), p99_s, np.nextafter(p99_s, 1), p99_s * 1.01):
            assert WORK.p99_exceeds(rate, cfg, MODEL.service, float(bound), MODEL.speedup) == (p99_s > bound)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_one_instance_loop_serves_as_the_general_one(cfg):
    """Every request's latency and queueing time equal the processor-sharing simulation's with one instance."""
    for share in (0.2, 0.9, 1.2):
        arrivals = WORK.unit_arrivals / (share * MODEL.saturation_rate(cfg))
        one = simulate(arrivals, cfg, MODEL.service, WORK.draws)
        general = _simulate_shared(arrivals, cfg, MODEL.service, WORK.draws, [0.0, 1.0], 0.05)
        assert np.array_equal(one.latency_s, general.latency_s)
        assert np.array_equal(one.queue_s, general.queue_s)
        assert one.mean_batch_size == general.mean_batch_size


def _table(rng, n_points: int, discrete: bool) -> LatencyTable:
    """Latency samples with many ties (drawn from a few values, as a lightly loaded replica repeats its service
    table) or none."""
    values = np.round(rng.uniform(5.0, 50.0, 40), 3)
    samples = [rng.choice(values, 300) if discrete else rng.uniform(5.0, 50.0, 300) for _ in range(n_points)]
    return LatencyTable(np.linspace(1.0, 100.0, n_points), samples)


@pytest.mark.parametrize("discrete", [True, False], ids=["ties", "no-ties"])
def test_replay_p99_is_the_mixture_quantile_of_the_raw_samples(discrete):
    """Per window, the replay's P99 equals mixture_quantile over the steps' raw samples and summed rates."""
    rng = np.random.default_rng(11)
    tables = {"A": _table(rng, 6, discrete), "B": _table(rng, 6, discrete)}
    times = np.arange(0.0, 3600.0, 15.0)
    for trial in range(60):
        # Repeated rates give equal weights to different grid points; a grid index of 6 is past the table's top.
        rate = {g: rng.choice([10.0, 20.0, 33.3], len(times)) if trial % 2 else rng.uniform(0.0, 50.0, len(times))
                for g in tables}
        grid = {g: rng.integers(0, 6 if trial % 3 else 7, len(times)) for g in tables}
        played = Replay(times, rate, {}, {}, grid)
        start, end = sorted(rng.uniform(0.0, 3600.0, 2))
        sel = (times >= start) & (times < end)
        weights: dict[tuple[str, int], float] = {}
        total = overloaded = 0.0
        for g in tables:
            for k, r in zip(grid[g][sel], rate[g][sel]):
                total += r
                if k >= 6:
                    overloaded += r
                else:
                    weights[(g, int(k))] = weights.get((g, int(k)), 0.0) + r
        if total <= 0:
            expected = 0.0
        elif overloaded > 0.01 * total:
            expected = None
        else:
            keys = sorted(weights)
            expected = mixture_quantile([tables[g].samples[k] for g, k in keys], [weights[x] for x in keys], 0.99)
        assert played.p99_ms(tables, start, end) == expected


def test_p99_within_decides_as_numpys_quantile_at_every_bound_that_matters():
    """colocate.p99_within settles most share-search steps by counting; it must answer as np.quantile(x, 0.99) <= b
    does, at bounds on, just under and just over the order statistics around the P99's position, for sample sizes
    whose position 0.99 (n - 1) is and is not a whole number, with and without ties."""
    from planner.colocate import p99_within
    rng = np.random.default_rng(5)
    for n in (1, 2, 99, 100, 101, 201, 1001, 5000, 5001):
        for ties in (False, True):
            x = rng.exponential(1.0, n)
            if ties:
                x = np.round(x, 1)
            srt = np.sort(x)
            k = int(0.99 * (n - 1))
            for j in range(max(k - 3, 0), min(k + 4, n)):
                for b in (srt[j], np.nextafter(srt[j], -np.inf), np.nextafter(srt[j], np.inf)):
                    assert p99_within(x, b) == (float(np.quantile(x, 0.99)) <= b), (n, ties, j, b)
            q = float(np.quantile(x, 0.99))
            for b in (q, np.nextafter(q, -np.inf), np.nextafter(q, np.inf)):
                assert p99_within(x, b) == (q <= b), (n, ties, b)

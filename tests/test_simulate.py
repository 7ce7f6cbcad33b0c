"""The batcher simulation against queueing closed forms, and against Triton's batching rules."""
import math

import numpy as np
import pytest

from planner.service import ServiceTime
from gpufleet.contracts.triton import BatchingConfig
from planner.simulate import Workload, simulate


def constant(seconds):
    return ServiceTime.from_quantile_function(lambda b, u: np.full_like(u, seconds * b), max_batch_size=8)


def exponential(mean_s):
    return ServiceTime.from_quantile_function(lambda b, u: -mean_s * np.log1p(-u), max_batch_size=1, grid=1 << 16)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_batch_one_deterministic_service_matches_md1_pollaczek_khinchine_mean(rho):
    service_s = 0.002
    rate = rho / service_s
    result = Workload.poisson(200_000, seed=11).run(rate, BatchingConfig(max_batch_size=1), constant(service_s))
    expected_wait = rho * service_s / (2 * (1 - rho))
    assert result.queue_s.mean() == pytest.approx(expected_wait, rel=0.05)
    assert result.latency_s.mean() == pytest.approx(expected_wait + service_s, rel=0.03)


def erlang_c(c, a):
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("servers,rho", [(2, 0.8), (4, 0.85)])
def test_exponential_service_on_c_instances_matches_erlang_c_tail(servers, rho):
    mean_s = 0.004
    mu = 1 / mean_s
    lam = rho * servers * mu
    cfg = BatchingConfig(max_batch_size=1, instance_count=servers)
    independent = [0.0] + [float(n) for n in range(1, servers + 1)]  # instances that do not share a GPU
    result = Workload.poisson(300_000, seed=5).run(lam, cfg, exponential(mean_s), independent)
    c_prob = erlang_c(servers, lam / mu)
    theta = servers * mu - lam
    for t in (0.5 / theta, 1.5 / theta, 3.0 / theta):
        expected = c_prob * math.exp(-theta * t)
        assert (result.queue_s > t).mean() == pytest.approx(expected, rel=0.08)
    w99 = math.log(c_prob / 0.01) / theta
    assert np.quantile(result.queue_s, 0.99) == pytest.approx(w99, rel=0.06)


def test_shared_gpu_instances_give_no_throughput_without_measured_speedup():
    service = constant(0.001)
    one = Workload.poisson(20_000, seed=2).run(800, BatchingConfig(max_batch_size=1), service)
    two = Workload.poisson(20_000, seed=2).run(800, BatchingConfig(max_batch_size=1, instance_count=2), service, [0, 1.0, 1.0])
    # Processor sharing with no speedup: the same work, so the same mean sojourn as one FIFO server or worse.
    assert two.latency_s.mean() >= one.latency_s.mean() * 0.98


def test_queue_delay_holds_a_lone_request_then_sends_it_alone():
    arrivals = np.array([0.0, 1.0])
    res = simulate(arrivals, BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000), constant(0.001), np.zeros(2), warmup_fraction=0)
    assert res.queue_s.tolist() == pytest.approx([0.002, 0.002])
    assert res.mean_batch_size == 1


def test_trigger_size_sends_before_the_delay_expires():
    arrivals = np.array([0.0, 0.0001, 0.0002, 0.0003])
    cfg = BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=10_000)
    res = simulate(arrivals, cfg, constant(0.001), np.zeros(4), warmup_fraction=0)
    assert res.mean_batch_size == 4
    assert res.latency_s[0] == pytest.approx(0.0003 + 0.004)


def test_preferred_size_takes_the_largest_preferred_batch_the_queue_fills():
    # Seven requests queue while the first batch runs; with preferred {2, 4} the next batch takes 4, not 7.
    arrivals = np.array([0.0] + [0.0001 * i for i in range(1, 8)])
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=0, preferred_batch_sizes=(2, 4))
    res = simulate(arrivals, cfg, constant(0.001), np.zeros(8), warmup_fraction=0)
    # batches: [1] at t=0, then 4 at t=1 ms, then 2 at t=5 ms, then 1 at t=7 ms
    assert res.mean_batch_size == pytest.approx(8 / 4)


def test_preferred_size_above_max_batch_is_rejected():
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        BatchingConfig(max_batch_size=4, preferred_batch_sizes=(8,))


@pytest.mark.parametrize("cfg", [
    BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1),
    BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(), instance_count=1),
    BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=500, preferred_batch_sizes=(4,), instance_count=1),
    BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1),
])
def test_the_one_instance_path_is_the_shared_path_with_one_instance(cfg):
    """The fast path for one model instance must batch and time every request as the general simulation does."""
    from planner.simulate import _simulate_shared, simulate
    service = ServiceTime.from_quantile_function(lambda b, u: 0.004 + 0.001 * b + 0.002 * u, 8)
    rng = np.random.default_rng(5)
    arrivals = np.cumsum(rng.exponential(1 / 700.0, 5000))
    draws = rng.random(5000)
    fast = simulate(arrivals, cfg, service, draws)
    general = _simulate_shared(arrivals, cfg, service, draws, None, 0.05)
    np.testing.assert_allclose(fast.latency_s, general.latency_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.queue_s, general.queue_s, rtol=0, atol=1e-12)
    assert fast.mean_batch_size == general.mean_batch_size and fast.mean_batch_size > 1.0 or cfg.max_batch_size == 1
    assert fast.busy_fraction == pytest.approx(general.busy_fraction, rel=1e-9)

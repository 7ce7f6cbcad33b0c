"""Several models on one GPU: the co-located simulator against cases with exact answers, and the mix planner."""
import json

import numpy as np
import pytest

from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.catalog import pools_for, read_catalog
from planner.colocate import SHARE_STEPS, ModelDemand, bundle_share, plan_mix, simulate_p99
from planner.mixbrute import partitions
from planner.profiles import load_profiles
from planner.simulate import simulate, simulate_colocated


def cfg(batch=4, delay=2000, instances=1):
    return BatchingConfig(max_batch_size=batch, max_queue_delay_microseconds=delay, preferred_batch_sizes=(),
                          instance_count=instances)


@pytest.fixture(scope="module")
def profiles():
    return load_profiles([])


def arrivals(rate, n, seed):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0 / rate, n)), rng.random(n)


def test_one_model_alone_is_the_single_model_simulation(profiles):
    model = ReplicaModel.from_profile(profiles[("yolov8s-1280x720", "L4")])
    for c, speed in ((cfg(), None), (cfg(instances=2), [0.0, 1.0, 1.6])):
        arr, u = arrivals(250.0, 8000, 1)
        solo = simulate(arr, c, model.service, u, speed)
        (co,) = simulate_colocated([arr], [c], [model.service], [u], speed)
        np.testing.assert_allclose(co.latency_s, solo.latency_s)
        assert co.mean_batch_size == solo.mean_batch_size
        # A second model with nothing to serve changes nothing.
        co2 = simulate_colocated([arr, np.array([])], [c, cfg()], [model.service, model.service], [u, np.array([])],
                                 None if speed is None else speed + [1.6])
        np.testing.assert_allclose(co2[0].latency_s, solo.latency_s)


def test_with_independent_servers_models_do_not_interfere(profiles):
    a = ReplicaModel.from_profile(profiles[("yolov8s-1280x720", "T4")])
    b = ReplicaModel.from_profile(profiles[("yolov8n-640", "T4")])
    (arr_a, u_a), (arr_b, u_b) = arrivals(60.0, 4000, 2), arrivals(200.0, 6000, 3)
    together = simulate_colocated([arr_a, arr_b], [cfg(), cfg(8, 1000)], [a.service, b.service], [u_a, u_b],
                                  [0.0, 1.0, 2.0])  # two batches at once: each at full speed
    np.testing.assert_allclose(together[0].latency_s, simulate(arr_a, cfg(), a.service, u_a).latency_s)
    np.testing.assert_allclose(together[1].latency_s, simulate(arr_b, cfg(8, 1000), b.service, u_b).latency_s)


def test_sharing_the_gpu_slows_each_model_as_the_other_loads_it(profiles):
    a = ReplicaModel.from_profile(profiles[("yolov8s-1280x720", "T4")])
    b = ReplicaModel.from_profile(profiles[("yolov8n-640", "T4")])
    arr_a, u_a = arrivals(50.0, 4000, 4)
    p99 = []
    for rate_b in (1.0, 100.0, 300.0):
        arr_b, u_b = arrivals(rate_b, 4000, 5)
        res = simulate_colocated([arr_a, arr_b], [cfg(), cfg(8, 1000)], [a.service, b.service], [u_a, u_b])
        p99.append(res[0].quantile_ms(0.99))
    assert p99[0] < p99[1] < p99[2]


def test_giving_up_early_never_changes_the_verdict(profiles):
    a = ReplicaModel.from_profile(profiles[("yolov8s-1280x720", "T4")])
    b = ReplicaModel.from_profile(profiles[("yolov8n-640", "T4")])
    gave_up = held = 0
    for seed, rate_a in enumerate((20.0, 60.0, 80.0, 95.0, 110.0)):
        (arr_a, u_a), (arr_b, u_b) = arrivals(rate_a, 3000, 10 + seed), arrivals(150.0, 3000, 20 + seed)
        args = ([arr_a, arr_b], [cfg(), cfg(8, 1000)], [a.service, b.service], [u_a, u_b])
        for turns in (False, True):
            full = simulate_colocated(*args, turns=turns)
            p99 = [r.quantile_ms(0.99) / 1000.0 for r in full]
            for bounds in ([0.1, 0.05], [0.05, 0.02], [p99[0], 1.0], [p99[0] * 0.999, 1.0], [1.0, p99[1] * 0.999]):
                quick = simulate_colocated(*args, turns=turns, give_up_above_s=bounds)
                if quick is None:
                    gave_up += 1
                    assert any(p > bd for p, bd in zip(p99, bounds))
                else:
                    held += 1
                    for q, f in zip(quick, full):
                        np.testing.assert_array_equal(q.latency_s, f.latency_s)
    assert gave_up and held


def test_bundle_share_is_the_largest_share_that_holds_every_target(profiles):
    demands = [ModelDemand("yolov8m-seg-640", 300, 150), ModelDemand("yolov8n-640", 500, 50)]
    models = [ReplicaModel.from_profile(profiles[(d.model, "T4")]) for d in demands]
    cfgs = [cfg(), cfg(8, 1000)]
    share, p99 = bundle_share(demands, models, cfgs)
    assert share > 0
    assert all(p <= d.budget_s for p, d in zip(p99, demands))
    top = 1.0 / sum(d.qps / m.saturation_rate(c) for d, m, c in zip(demands, models, cfgs))
    over = simulate_p99(demands, models, cfgs, min(share + 2 * top / 2 ** SHARE_STEPS, top), None)
    assert any(p > d.budget_s for p, d in zip(over, demands))


def test_partitions_are_counted_by_bell_numbers():
    assert [sum(1 for _ in partitions(list("abcd")[:n])) for n in range(1, 5)] == [1, 2, 5, 15]
    seen = {tuple(sorted(tuple(sorted(p)) for p in part)) for part in partitions(list("abcd"))}
    assert len(seen) == 15


def test_light_models_share_a_replica_and_the_mix_is_never_dearer(profiles):
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    light = [ModelDemand("yolov8m-seg-640", 100, 150), ModelDemand("yolov8n-640", 150, 50)]
    plan = plan_mix(light, profiles, pools)
    # Apart, each model needs the production floor of two replicas; together one floor serves both.
    assert [p.models for p in plan.parts] == [("yolov8m-seg-640", "yolov8n-640")]
    assert plan.usd_per_hour < plan.separate_usd_per_hour and plan.saving > 0.3
    for part in plan.parts + plan.separate:
        for gpu, p99s in part.p99_ms.items():
            for model, p99 in zip(part.models, p99s):
                assert p99 <= next(d.p99_ms for d in light if d.model == model), (gpu, model, p99)


def test_worker_processes_change_nothing_but_the_time(profiles):
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    mix = [ModelDemand("yolov8m-seg-640", 300, 150), ModelDemand("yolov8n-640", 500, 50),
           ModelDemand("yolov8s-640", 400, 80)]
    one, two = plan_mix(mix, profiles, pools, workers=1), plan_mix(mix, profiles, pools, workers=2)
    assert one == two


def test_heavy_models_gain_nothing_from_sharing(profiles):
    pools = tuple(pools_for(read_catalog(), {"T4"}, 12.0))
    heavy = [ModelDemand("yolov8s-1280x720", 600, 100), ModelDemand("yolov8m-640", 500, 100)]
    plan = plan_mix(heavy, profiles, pools)
    assert plan.usd_per_hour <= plan.separate_usd_per_hour
    # Sharing only divides each GPU's time between them: no co-located fleet undercuts separate ones by a replica.
    assert plan.separate_usd_per_hour - plan.usd_per_hour < min(p.usd_per_hour for p in pools if p.gpu == "T4")


def test_a_measured_corun_speedup_is_what_the_planner_simulates(profiles):
    from planner.colocate import corun_speed
    seg, tl = profiles[("yolov8m-seg-640", "T4")], profiles[("yolov8n-640", "T4")]
    measured = dict(profiles)
    measured[("yolov8m-seg-640", "T4")] = seg.model_copy(update={"corun_speedup": {"yolov8n-640": 1.8}})
    assert corun_speed(("yolov8m-seg-640", "yolov8n-640"), "T4", 2, profiles) is None  # not measured: turns
    assert corun_speed(("yolov8m-seg-640", "yolov8n-640"), "T4", 2, measured) == [0.0, 1.0, 1.8]
    demands = [ModelDemand("yolov8m-seg-640", 300, 150), ModelDemand("yolov8n-640", 500, 50)]
    models = [ReplicaModel.from_profile(p) for p in (seg, tl)]
    turns, _ = bundle_share(demands, models, [cfg(), cfg(8, 1000)], [0.0, 1.0, 1.0])
    overlap, _ = bundle_share(demands, models, [cfg(), cfg(8, 1000)], [0.0, 1.0, 1.8])
    assert overlap > turns


def test_a_corun_speedup_past_two_is_refused(tmp_path):
    from gpufleet.contracts.profile import read_profile, write_profile
    from gpufleet.errors import ContractError
    prof = load_profiles([])[("yolov8n-640", "T4")]
    path = tmp_path / "p.json"
    write_profile(prof, path)
    data = json.loads(path.read_text())
    data["corun_speedup"] = {"x": 2.5}
    path.write_text(json.dumps(data))
    with pytest.raises(ContractError, match="corun_speedup"):
        read_profile(path)

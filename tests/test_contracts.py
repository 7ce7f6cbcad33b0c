"""The contract files: published schemas match the models, embedded data carries its sources, files round-trip."""
import json
from importlib import resources

import pytest

from planner.catalog import read_catalog
from planner.profiles import embedded_profiles
from gpufleet.contracts.schemas import rendered
from gpufleet.contracts.profile import ProfileError, read_profile, write_profile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(rendered()))
def test_published_schema_matches_the_model(name):
    published = (ROOT / "docs" / "schemas" / name).read_text()
    assert published == rendered()[name], "run: python -m gpufleet.contracts.schemas"


def test_every_catalog_price_names_a_known_source():
    cat = read_catalog()
    for it in cat.instances:
        refs = [it.on_demand.source] + [r.source for r in it.reserved.values()] + ([it.spot.source] if it.spot else [])
        assert set(refs) <= set(cat.sources), it.instance_type
    for src in cat.sources.values():
        assert src["where"] and src["date"]


def test_catalog_covers_the_required_families_with_several_sizes():
    cat = read_catalog()
    families = {}
    for it in cat.instances:
        families.setdefault(it.family, []).append(it.instance_type)
    assert {"g4dn", "g5", "g6", "g6e", "p4d", "p5"} <= set(families)
    assert sum(len(v) > 1 for v in families.values()) >= 4


def test_every_catalog_gpu_has_a_reference_profile_that_says_where_it_comes_from():
    profiles = embedded_profiles()
    assert read_catalog().gpus() <= {p.gpu for p in profiles}
    for p in profiles:
        assert p.origin.sources
        assert p.origin.kind == "measured" or p.origin.derivation


def test_profile_round_trips(tmp_path):
    original = embedded_profiles()[0]
    path = tmp_path / "p.json"
    write_profile(original, path)
    assert read_profile(path) == original


def test_profile_with_unordered_quantiles_is_rejected(tmp_path):
    data = json.loads(resources.files("planner.data").joinpath("profiles/resnet50-L4.json").read_text())
    data["batches"][0]["p99_ms"] = data["batches"][0]["p50_ms"] / 2
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="batches.0"):
        read_profile(path)

"""The one request model (``planner.pipeline.RecommendRequest``): its defaults are the command line's, every bad value
is one line and exit 2 before anything is planned or written, and a request built in code is held to the same rules."""
from __future__ import annotations

import re

import pytest

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S
from planner.cli import main
from planner.day import DEFAULT_PERIOD_S
from planner.errors import PlannerInputError
from planner.pipeline import DEFAULT_OVERHEAD_MS, PRODUCTION_MIN_REPLICAS_PER_GPU, RecommendRequest
from planner.recommend import recommend

# Command-line option -> the request field it fills, where the names differ.
FIELD_OF = {"--gpu": "gpus", "--profile": "profiles", "--capacity-type": "capacity_types",
            "--scale-up-lag-min": "scale_up_lag_s", "--ramp-pct-per-min": "ramp_per_min"}


def _help(monkeypatch, capsys) -> dict[str, str | None]:
    """Option -> the default `planner recommend --help` shows (None: it shows none)."""
    monkeypatch.setenv("COLUMNS", "1000")  # one row per option
    assert main(["recommend", "--help"]) == 0
    shown = {}
    for line in capsys.readouterr().out.splitlines():
        row = line.strip("│ ")
        if row.startswith("--"):
            default = re.search(r"\[default: ([^\]]*)\]", row)
            shown[row.split()[0]] = default.group(1) if default else None
    return shown


def _as_shown(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else None
    return str(value)


def test_every_option_default_is_the_request_models(monkeypatch, capsys):
    shown = _help(monkeypatch, capsys)
    defaults = RecommendRequest(qps=1.0)
    checked = 0
    for option, text in shown.items():
        field = FIELD_OF.get(option, option[2:].replace("-", "_"))
        if field in ("qps",) or not hasattr(defaults, field):
            continue  # the demand (--qps, --qps-curve, --mix) and the outputs are not request fields
        want = _as_shown(getattr(defaults, field))
        if isinstance(getattr(defaults, field), bool) and text is not None:
            text = "false" if text.startswith("no-") else "true"
        assert text == want, f"{option}: help says {text!r}, the request model {want!r}"
        checked += 1
    assert checked >= 15, shown


def test_the_period_default_is_the_day_plans(monkeypatch, capsys):
    assert _help(monkeypatch, capsys)["--period-min"] == str(DEFAULT_PERIOD_S / 60)


def test_fit_targets_the_same_default_p99(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")
    assert main(["fit", "--help"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "--p99-ms" in line)
    assert f"[default: {RecommendRequest(qps=1.0).p99_ms}]" in row


def test_the_help_names_the_fallbacks_the_planner_uses(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")
    main(["recommend", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"else {DEFAULT_OVERHEAD_MS:g}." in text
    assert f"else {DEFAULT_SCALE_UP_LAG_S / 60:g}." in text
    assert f"else {100 * DEFAULT_RAMP_PER_MIN:g}." in text
    assert f"at least {PRODUCTION_MIN_REPLICAS_PER_GPU} replicas" in text


BAD = [
    (["--qps", "-5"], "--qps"),
    (["--qps", "nan"], "--qps"),
    (["--qps", "100", "--p99-ms", "0"], "--p99-ms"),
    (["--qps", "100", "--capacity-type", "bogus"], "--capacity-type"),
    (["--qps", "100", "--confidence", "1.5"], "--confidence"),
    (["--qps", "100", "--min-replicas", "0"], "--min-replicas"),
    (["--qps", "100", "--max-spot-share", "1.5"], "--max-spot-share"),
    (["--qps", "100", "--horizon-months", "0"], "--horizon-months"),
    (["--qps", "100", "--overhead-ms", "-1"], "--overhead-ms"),
    (["--qps", "100", "--overhead-ms", "100"], "--overhead-ms"),
    (["--qps", "100", "--survival-p99-ms", "50"], "--survival-p99-ms"),
    (["--qps", "100", "--survival-p99-ms", "inf"], "--survival-p99-ms"),
    (["--qps", "100", "--max-instances-per-pool", "0"], "--max-instances-per-pool"),
    (["--qps", "100", "--scale-up-lag-min", "-1"], "--scale-up-lag-min"),
    (["--qps", "100", "--ramp-pct-per-min", "-1"], "--ramp-pct-per-min"),
    (["--qps", "100", "--gpu", "H900"], "--gpu"),
    (["--qps", "100", "--routing", "sideways"], "--routing"),
    (["--qps", "100", "--environment", "staging"], "--environment"),
    (["--qps", "100", "--model", ""], "--model"),
]


@pytest.mark.parametrize("args,option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(args, option, tmp_path, capsys):
    out = tmp_path / "plan.json"
    status = main(["recommend", *args, "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("planner: error: ") and "Traceback" not in err, err
    assert option in err, err
    assert not out.exists()


def test_a_bad_value_in_code_is_refused_where_the_request_is_built():
    with pytest.raises(PlannerInputError, match="--p99-ms"):
        RecommendRequest(qps=100, p99_ms=-1)


def test_an_unknown_field_in_code_is_refused():
    with pytest.raises(PlannerInputError, match="p99"):
        RecommendRequest(qps=100, p99=50)


def test_a_bad_value_set_on_a_request_is_refused():
    req = RecommendRequest(qps=100)
    with pytest.raises(PlannerInputError, match="--max-spot-share"):
        req.max_spot_share = 2.0
    assert req.max_spot_share == RecommendRequest(qps=100).max_spot_share


def test_the_plan_records_the_request_it_answered():
    req = RecommendRequest(qps=50, p99_ms=120, environment="development", horizon_months=6, max_spot_share=0.5,
                           capacity_types=["on-demand", "spot"])
    recorded = recommend(req).request.model_dump()
    asked = req.model_dump(mode="json")
    shared = set(recorded) & set(asked) - {"gpus"}  # the plan records the GPU types it sized, not the ones asked
    assert shared >= {"qps", "p99_ms", "model", "capacity_types", "routing", "max_spot_share", "horizon_months",
                      "environment", "overhead_ms", "min_replicas", "mig"}
    assert {k: recorded[k] for k in shared} == {k: asked[k] for k in shared}

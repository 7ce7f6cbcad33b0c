"""planner report's plots read at a glance: checked on the Figures it saves (``report.report_plots``), for the
plans the README makes (a point, a day, a mix; a small calibrated model), and its console entry for each kind."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.lines import Line2D

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.profile import write_profile
from gpufleet.contracts.triton import BatchingConfig
from planner.report import ReportInputs, report_plots
from planner.service import ServerCost
from tests.cli_run import Result, run_cli
from tests.synthetic import affine_profile, stress_result

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "docs" / "validation"
TIMEOUT_S = 300  # a report is a few seconds of simulation and MILPs; this only bounds a hang


def _planner(*args: str, cwd: Path = ROOT) -> Result:
    """The planner's console entry, ``main(argv)`` in-process (tests/cli_run.py), as the README types it."""
    run = run_cli("planner", args, cwd=cwd, timeout_s=TIMEOUT_S)
    assert run.returncode == 0 and "Traceback" not in run.stderr, (args, run.stdout[-2000:], run.stderr[-2000:])
    return run


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """The README's three kinds of plan, made through the console entry as it types them, and a small model's
    plan with its calibration (the validation runs: 60 req/s on T4, P99 400 ms; the floor holds it)."""
    root = tmp_path_factory.mktemp("plans")
    made = {}
    for kind, args in (("point", ["--qps", "5000", "--p99-ms", "100"]),
                       ("day", ["--p99-ms", "100", "--qps-curve", "bench/data/i94-weekday-2012-10-04.csv"]),
                       ("mix", ["--mix", "infra/plans/perception-mix.csv"])):
        made[kind] = root / f"{kind}.json"
        _planner("recommend", *args, "--format", "json", "--output", str(made[kind]))
    cal = read_calibration(VALIDATION / "calibration.json")
    made["small"] = root / "small.json"
    _planner("recommend", "--qps", "60", "--p99-ms", "400", "--model", cal.model, "--gpu", cal.gpu, "--profile",
             str(VALIDATION / "profile.json"), "--calibration", str(VALIDATION / "calibration.json"), "--format",
             "json", "--output", str(made["small"]))
    return made


@pytest.fixture(scope="module")
def light_steps(tmp_path_factory):
    """What a CPU walkthrough measures: stress steps at 40-80 req/s on batch 8, far below what one replica holds
    at the plan's batch 32 (thousands of req/s). Fitted and planned through the console entry."""
    root = tmp_path_factory.mktemp("light")
    profile = affine_profile(model="tiny", gpu="L4", base_ms=2.0, per_image_ms=0.25, sizes=(1, 2, 4, 8, 16, 32))
    write_profile(profile, root / "tiny-L4.json")
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=1000, preferred_batch_sizes=(),
                         instance_count=1)
    stress_result(profile, cfg, [40, 60, 80], overhead_ms=3.0, cost=ServerCost(0.5, 0.1, 1.2), duration_s=30, seed=7,
                  path=root / "run.stress.json")
    _planner("fit", "run.stress.json", "--profile", "tiny-L4.json", "--output", "cal.json", cwd=root)
    _planner("recommend", "--qps", "2000", "--p99-ms", "100", "--model", "tiny", "--gpu", "L4", "--profile",
             "tiny-L4.json", "--calibration", "cal.json", "--format", "json", "--output", "plan.json", cwd=root)
    return root


def _plots(plan_path: Path, **kw):
    return report_plots(ReportInputs(read_plan(plan_path), **kw))


@pytest.fixture(scope="module")
def point(plans):
    return _plots(plans["point"])


@pytest.fixture(scope="module")
def day(plans):
    return _plots(plans["day"])


@pytest.fixture(scope="module")
def mix(plans):
    return _plots(plans["mix"])


@pytest.fixture(scope="module")
def small(plans):
    return _plots(plans["small"], profiles=[VALIDATION / "profile.json"],
                  calibration=read_calibration(VALIDATION / "calibration.json"))


@pytest.fixture(scope="module")
def light(light_steps):
    return _plots(light_steps / "plan.json", profiles=[light_steps / "tiny-L4.json"],
                  calibration=read_calibration(light_steps / "cal.json"))


# --- helpers: what the reader sees, in display coordinates -------------------------------------------------------

def _drawn(fig):
    fig.draw_without_rendering()
    return fig


def _data_lines(ax) -> list[Line2D]:
    return [ln for ln in ax.lines if np.isfinite(np.asarray(ln.get_ydata(), float)).any()]


def _display_points(line: Line2D, per_segment: int = 12) -> np.ndarray:
    """The line's points and its segments, sampled, in display coordinates (NaN gaps left out)."""
    xy = line.get_transform().transform(np.column_stack([np.asarray(line.get_xdata(), float),
                                                         np.asarray(line.get_ydata(), float)]))
    xy = xy[np.isfinite(xy).all(axis=1)]
    if per_segment <= 1 or line.get_linestyle() in ("None", "", " ") or len(xy) < 2:
        return xy
    t = np.linspace(0, 1, per_segment)[:, None, None]
    return (xy[:-1] + t * (xy[1:] - xy[:-1])).reshape(-1, 2)


def _legends(fig):
    return [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]


def _shown_labels(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def _series(ax) -> dict[str, object]:
    handles, labels = ax.get_legend_handles_labels()
    return dict(zip(labels, handles))


def _has_data(artist) -> bool:
    if isinstance(artist, BarContainer):
        return any(p.get_height() > 0 for p in artist.patches)
    if isinstance(artist, Line2D):
        return np.isfinite(np.asarray(artist.get_ydata(), float)).any()
    return True


def _line(ax, pattern: str) -> Line2D:
    found = [ln for ln in ax.lines if re.search(pattern, ln.get_label())]
    assert found, f"no line labelled /{pattern}/ in {[ln.get_label() for ln in ax.lines]}"
    return found[0]


# --- cost against QPS ----------------------------------------------------------------------------------------------

def test_cost_plot_tells_the_cheaper_gpu_types_apart_beside_the_dearest(point, plans):
    """H100 at ~$72/h must not press the cheaper types into a sliver: wherever two types' costs differ by 15% or
    more, their points lie at least 6 px (a marker's width) apart."""
    ax = _drawn(point["cost_vs_qps.png"].figure).axes[0]
    gpus = {s.gpu for s in read_plan(plans["point"]).sizing}
    per_type = [ln for ln in _data_lines(ax) if ln.get_label().split()[0] in gpus]
    assert len(per_type) == len(gpus) >= 6, [ln.get_label() for ln in per_type]
    close = []
    for i, a in enumerate(per_type):
        for b in per_type[i + 1:]:
            ya, yb = np.asarray(a.get_ydata(), float), np.asarray(b.get_ydata(), float)
            da, db = _display_points(a, 1)[:, 1], _display_points(b, 1)[:, 1]
            if len(ya) != len(yb) or len(da) != len(ya) or len(db) != len(yb):
                continue
            for k in np.flatnonzero(np.maximum(ya, yb) >= 1.15 * np.minimum(ya, yb)):
                if abs(da[k] - db[k]) < 6.0:
                    close.append((a.get_label(), b.get_label(), a.get_xdata()[k], round(abs(da[k] - db[k]), 1)))
    assert not close, f"{len(close)} pairs 15% apart in cost drawn within 6 px, e.g. {close[:3]}"


def test_cost_plot_draws_no_series_hidden_under_another(point):
    """Where two series coincide (the mix is one type alone), the one on top is thinner, so the one beneath shows,
    or both carry markers of different shapes."""
    ax = _drawn(point["cost_vs_qps.png"].figure).axes[0]
    lines = sorted(_data_lines(ax), key=lambda ln: ln.get_zorder())  # stable: equal zorders keep drawing order
    checked = 0
    for i, below in enumerate(lines):
        for above in lines[i + 1:]:
            a, b = _display_points(below, 1), _display_points(above, 1)
            if len(a) != len(b) or len(a) < 2:
                continue
            if np.mean(np.hypot(*(a - b).T) < 2.0) >= 0.5:
                checked += 1
                markers = {below.get_marker(), above.get_marker()}
                if len(markers) == 2 and not markers & {None, "None", "", " "}:
                    continue  # told apart by their markers
                assert above.get_linewidth() + 2 <= below.get_linewidth(), (
                    f"{above.get_label()} (lw {above.get_linewidth()}) covers {below.get_label()} "
                    f"(lw {below.get_linewidth()})")
    assert checked, "expected the mix to coincide with a GPU type alone somewhere"


def test_cost_plot_range_reaches_past_what_a_small_models_fleet_holds(small, plans):
    """For a small model the floor's replicas hold 3x the plan's rate: the range must go where the cost rises."""
    ax = small["cost_vs_qps.png"].figure.axes[0]
    mix = np.asarray(_line(ax, "mix").get_ydata(), float)
    assert np.nanmax(mix) > read_plan(plans["small"]).cost.usd_per_hour * 1.01, mix


# --- P99 against load --------------------------------------------------------------------------------------------

def _measured(fig):
    out = [(ax, ln) for ax in fig.axes for ln in ax.lines if "measured" in ln.get_label()]
    assert out, "no measured steps plotted"
    return out


def test_p99_plot_spreads_the_measured_steps_over_their_axis(light):
    """Steps at 40-80 req/s against a curve to ~2,800 req/s sat at x~0: they must take a quarter of the width."""
    fig = _drawn(light["p99_vs_load.png"].figure)
    for ax, ln in _measured(fig):
        x = np.asarray(ln.get_xdata(), float)
        lo, hi = ax.get_xlim()
        assert lo <= x.min() and x.max() <= hi
        px = _display_points(ln)[:, 0]
        assert (px.max() - px.min()) / ax.get_window_extent().width >= 0.25, (ln.get_label(), (lo, hi))


@pytest.mark.parametrize("which", ["light", "small"])
def test_p99_plot_predicts_each_measured_config_over_its_measured_range(which, request):
    """Each measured config has its own predicted curve, named by the same config, covering the measured rates."""
    fig = request.getfixturevalue(which)["p99_vs_load.png"].figure
    for ax, ln in _measured(fig):
        cfg = re.search(r"\(([^)]*batch<=[^)]*)\)", ln.get_label())
        assert cfg, f"measured steps not named by their config: {ln.get_label()!r}"
        pred = [p for p in ax.lines if "predicted" in p.get_label() and cfg.group(1) in p.get_label()]
        assert pred, f"no predicted curve for {cfg.group(1)} among {[p.get_label() for p in ax.lines]}"
        x, px = np.asarray(ln.get_xdata(), float), np.asarray(pred[0].get_xdata(), float)
        assert px.min() <= x.min() and x.max() <= px.max(), (x, px)


# --- the day -----------------------------------------------------------------------------------------------------

def test_day_plot_replica_axis_ticks_whole_replicas(day):
    fig = _drawn(day["day.png"].figure)
    (ax,) = [a for a in fig.axes if "replicas" in a.get_ylabel()]
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_day_plot_draws_the_fleets_capacity_over_the_curve_it_is_sized_for(day):
    # The top panel promises the curve against the fleet: the capacity line must be there, at or above the peak
    # each period is sized for (the plan holds at its P99 target), so a reader sees the headroom hour by hour.
    fig = day["day.png"].figure
    (ax,) = [a for a in fig.axes if a.get_ylabel() == "req/s"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    capacity = next((ln for lab, ln in lines.items() if "capacity" in lab), None)
    assert capacity is not None, list(lines)
    peak = next(ln for lab, ln in lines.items() if lab.startswith("peak"))
    assert all(c >= p - 1e-6 for c, p in zip(capacity.get_ydata(), peak.get_ydata())), \
        (list(capacity.get_ydata()), list(peak.get_ydata()))


def test_day_plot_legends_name_only_series_with_data(day):
    fig = day["day.png"].figure
    for ax, legend in _legends(fig):
        series = _series(ax)
        empty = [lab for lab in _shown_labels(legend) if lab in series and not _has_data(series[lab])]
        assert not empty, f"legend entries with nothing drawn: {empty}"


# --- spot share --------------------------------------------------------------------------------------------------

def test_spot_plot_marks_the_plans_own_point(point, plans):
    plan = read_plan(plans["point"])
    ax = point["spot_share.png"].figure.axes[0]
    mark = _line(ax, "this plan")
    x, y = np.asarray(mark.get_xdata(), float), np.asarray(mark.get_ydata(), float)
    assert len(x) == 1 and x[0] == pytest.approx(plan.request.max_spot_share)
    assert y[0] == pytest.approx(plan.cost.usd_per_hour, rel=1e-6)
    assert mark.get_marker() not in (None, "None", "")


# --- every plot --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,png", [("point", "cost_vs_qps.png"), ("point", "p99_vs_load.png"),
                                      ("point", "spot_share.png"), ("day", "day.png"),
                                      ("light", "p99_vs_load.png"), ("small", "cost_vs_qps.png"),
                                      ("mix", "mix.png")])
def test_no_legend_covers_the_data(kind, png, request):
    fig = _drawn(request.getfixturevalue(kind)[png].figure)
    for ax, legend in _legends(fig):
        box = legend.get_window_extent()
        for other in fig.axes:
            for ln in other.lines:
                pts = _display_points(ln)
                inside = [(float(x), float(y)) for x, y in pts if box.contains(x, y)]
                assert not inside, f"{png}: the legend covers {ln.get_label()!r}"
            for patch in other.patches:
                if patch.get_height() and patch.get_width():
                    assert not box.overlaps(patch.get_window_extent()), f"{png}: the legend covers a bar"


# --- the console entry, as the README types it ---------------------------------------------------------------------

def test_report_console_writes_every_plot_for_point_day_and_mix(plans, tmp_path):
    expected = {"point": {"cost_vs_qps.png", "p99_vs_load.png", "spot_share.png"},
                "day": {"cost_vs_qps.png", "p99_vs_load.png", "spot_share.png", "day.png"},
                "mix": {"mix.png"}}
    for kind, pngs in expected.items():
        out = tmp_path / kind
        _planner("report", str(plans[kind]), "--out", str(out))
        page = (out / "report.html").read_text()
        assert {p.name for p in out.glob("*.png")} == pngs
        assert all(f'src="{p}"' in page for p in pngs)


def test_report_console_cost_table_rises_for_a_small_model(plans, tmp_path):
    """The small model's report (README: planner report PLAN --profile --calibration): its cost table reaches the
    rates where the fleet must grow."""
    _planner("report", str(plans["small"]), "--profile", str(VALIDATION / "profile.json"), "--calibration",
             str(VALIDATION / "calibration.json"), "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "report.html").read_text()
    table = page.split("<h2>Cost against QPS</h2>")[1].split("</table>")[0]
    costs = [float(c.replace(",", "")) for c in re.findall(r"<td>\$([\d,.]+)/h</td>", table)]
    assert len(costs) >= 5 and costs[-1] > costs[0], costs

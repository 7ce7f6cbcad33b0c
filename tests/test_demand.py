"""The demand curve contract: one reader for the planner's ``--qps-curve`` and loadtests' ``--replay``, one curve per
model in the long form, and every bad file refused in one line through the console entry (exit 2)."""
import pytest

from gpufleet.contracts.demand import read_demand
from gpufleet.errors import ContractError
from loadtests.shapes import Replay
from planner.cli import main as planner_main
from planner.day import read_day_curve


def write(tmp_path, text, name="curve.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_curve_loadtests_replays_is_the_curve_the_planner_plans_for(tmp_path):
    rates = [120.0, 340.5, 980.0, 45.25, 610.0]
    path = write(tmp_path, "time,qps\n" + "".join(f"{h:02d}:00,{q}\n" for h, q in enumerate(rates)))
    assert Replay.from_csv(path, seconds_per_row=1).rates == list(read_day_curve(path).qps) == rates


def test_a_long_form_file_gives_one_curve_per_model_at_one_step(tmp_path):
    text = "time,model,qps\n" + "".join(f"{h:02d}:00,{m},{q * (h + 1)}\n"
                                        for h in range(3) for m, q in (("detector", 100), ("lanes", 7)))
    curves = read_demand(write(tmp_path, text))
    assert {m: (c.step_s, list(c.qps)) for m, c in curves.items()} == {
        "detector": (3600.0, [100.0, 200.0, 300.0]), "lanes": (3600.0, [7.0, 14.0, 21.0])}


def test_a_long_form_file_names_the_model_whose_times_are_missing(tmp_path):
    text = "time,model,qps\n00:00,a,1\n00:00,b,1\n01:00,a,2\n01:00,b,2\n02:00,a,3\n"
    with pytest.raises(ContractError, match="model 'b' and model 'a' differ in their times"):
        read_demand(write(tmp_path, text))


@pytest.mark.parametrize("text, needle", [
    ("time,rate\n00:00,1\n01:00,2\n", "'qps' column"),
    ("time,qps\n00:00,1\n01:00,2\n00:30,3\n", "line 4: rows must be at one regular, increasing step"),
    ("time,qps\n00:00,1\n01:00,-2\n02:00,1\n", "line 3: qps -2 must be a finite number >= 0"),
    ("time,qps\n00:00,1\n00:30,2\n01:30,3\n", "line 4: rows must be at one regular"),
    ("time,model,qps\n00:00,a,1\n00:00,b,1\n01:00,a,1\n02:00,a,1\n02:00,b,1\n",
     "model 'b' steps 7200 s and model 'a' 3600 s"),
    ("time,model,qps\n00:00,a,1\n00:00,b,1\n01:00,a,1\n01:00,b,1\n02:00,a,1\n03:00,a,1\n03:00,b,1\n",
     "line 8: model 'b': rows must be at one regular"),
    ("time,model,qps\n00:00,a,1\n00:00,b,1\n01:00,a,1\n01:00,b,1\n02:00,a,1\n", "model 'b' and model 'a' differ"),
    ("time,model,qps\n00:00,a,1\n00:00,b,1\n01:00,a,1\n01:00,b,1\n", "holds a curve per model (a, b)"),
])
def test_a_bad_curve_is_refused_in_one_line_by_planner_recommend(tmp_path, capsys, text, needle):
    status = planner_main(["recommend", "--qps-curve", str(write(tmp_path, text)), "--p99-ms", "50"])
    err = capsys.readouterr().err
    assert status == 2 and needle in err and err.count("\n") == 1, err

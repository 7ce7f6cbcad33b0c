"""One settings model from the command line to the locustfile: defaults declared once, checks before any load."""
import json

import pytest
import typer

from loadtests import shapes
from loadtests.cli import app
from loadtests.errors import LoadTestInputError
from loadtests.run import locust_command, worker_command
from loadtests.settings import SETTINGS_ARG, StressSettings, build


def _run_options() -> dict:
    command = typer.main.get_command(app).commands["run"]
    return {p.name: p.default for p in command.params}


# CLI option -> the model that declares its default.
_OWNERS = {**{f: StressSettings for f in StressSettings.model_fields if f not in {"shape", "model"}},
           "step_duration": shapes.Steps, "warmup": shapes.Steps, "seconds_per_row": shapes.Replay,
           "duration": shapes.ClosedLoop, "p99_bound_ms": shapes.Ramp, "max_error_share": shapes.Ramp}


@pytest.mark.parametrize("option", sorted(_OWNERS))
def test_every_run_option_default_is_the_settings_default(option):
    defaults = _run_options()
    assert option in defaults, f"loadtests run has no --{option.replace('_', '-')}"
    declared = _OWNERS[option].model_fields[option].default
    given = defaults[option]
    assert (given.value if hasattr(given, "value") else given) == declared


def test_shapes_share_their_common_defaults():
    # --step-duration and --warmup serve steps and ramps: one option, so the two shapes must agree.
    for field in ("step_duration", "warmup"):
        assert shapes.Steps.model_fields[field].default == shapes.Ramp.model_fields[field].default


def test_the_locustfile_reads_back_exactly_what_the_cli_built(tmp_path):
    settings = build(model="detector", shape={"kind": "ramp", "start": 50, "stop": 800, "factor": 2,
                                              "p99_bound_ms": 40}, out=tmp_path, workers=2, users=4, seed=3)
    cmd = locust_command(settings, master_port=5557)
    received = StressSettings.model_validate_json(cmd[cmd.index(SETTINGS_ARG) + 1])
    assert received == settings and received.shape.stops_early
    assert cmd[cmd.index("-u") + 1] == "4" and cmd[cmd.index("--expect-workers") + 1] == "2"
    assert cmd[5] == "OpenLoopUser" and "--master" in cmd
    assert SETTINGS_ARG not in worker_command(settings, 5557)
    closed = build(model="m", shape={"kind": "closed-loop", "users": 7})
    ccmd = locust_command(closed)
    assert ccmd[5] == "ClosedLoopUser" and ccmd[ccmd.index("-u") + 1] == "7" and "--master" not in ccmd


def test_the_settings_json_is_the_documented_shape():
    # One JSON document: a misspelt key written by hand is refused, not ignored.
    text = build(model="m", shape={"kind": "steps", "rates": [10]}).model_dump_json()
    data = json.loads(text)
    data["timeout"] = 5
    with pytest.raises(ValueError, match="Extra inputs"):
        StressSettings.model_validate(data)


@pytest.mark.parametrize("values,needle", [
    ({"timeout_s": 0}, "--timeout-s 0: Input should be greater than 0"),
    ({"workers": 65}, "--workers 65: Input should be less than or equal to 64"),
    ({"seed": -1}, "--seed -1:"),
    ({"host": "127.0.0.1:8000"}, "--host '127.0.0.1:8000': expected a URL"),
    ({"metrics_url": "ftp://x:1/metrics"}, "--metrics-url 'ftp://x:1/metrics'"),
    ({"protocol": "grpc"}, "protocol grpc needs --grpc-url"),
    ({"protocol": "grpc", "grpc_url": "http://127.0.0.1:8001"}, "--grpc-url"),
    ({"name": "../up"}, "--name '../up'"),
    ({"late_ms": float("nan")}, "--late-ms nan: Input should be a finite number"),
    ({"shape": {"kind": "closed-loop", "users": 0}}, "--closed-loop 0:"),
    ({"shape": {"kind": "ramp", "start": 10, "stop": 5, "factor": 2}}, "need 0 < start <= stop"),
    ({"shape": {"kind": "steps", "rates": [10, float("nan")]}}, "--rates nan: Input should be a finite number"),
    ({"shape": {"kind": "ramp", "start": 10, "stop": float("inf"), "factor": 2}}, "--ramp inf:"),
    ({"shape": {"kind": "steps", "rates": [10], "warmup": -1}}, "--warmup -1:"),
])
def test_a_bad_setting_is_one_line_naming_the_option(values, needle):
    with pytest.raises(LoadTestInputError) as info:
        build(**{"model": "m", "shape": {"kind": "steps", "rates": [10]}, **values})
    message = str(info.value)
    assert needle in message and "\n" not in message

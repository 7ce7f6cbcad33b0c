"""Plausible mistakes thrown at the four command lines. Each must end as one stderr line and exit status 2: no
traceback, and nothing written.

The cases are hand-picked classes of mistakes (paths, file kinds, ranges, URLs, impossible values inside schema-valid
files); hypothesis adds generated bad numbers for the numeric options. What is under test is what each console's
``main(argv)`` does with the arguments, so the cases call it in-process (tests/cli_run.py: the same argv, a pipe's
stdout/stderr, the exit status the script would return, an escaped exception as the interpreter prints it); a few
cases per console run the installed script in its own interpreter, as a user and CI type it, so the start-up and
the script's wiring are covered too."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.net import free_port
from tests.cli_run import run_cli, run_console

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
COLUMNS = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Inputs of the wrong kind, or schema-valid with impossible values, built once."""
    d = tmp_path_factory.mktemp("fuzz-inputs")
    f: dict[str, Path] = {}
    f["EMPTY"] = d / "empty.onnx"
    f["EMPTY"].write_bytes(b"")
    f["TEXT"] = d / "notes.onnx"
    f["TEXT"].write_text("not a model\n")
    profile = json.loads(resources.files("planner.data").joinpath("profiles").joinpath("resnet50-L4.json").read_text())
    f["PROFILE_AS_ONNX"] = d / "profile.onnx"
    f["PROFILE_AS_ONNX"].write_text(json.dumps(profile))
    f["PROFILE"] = d / "profile.json"
    f["PROFILE"].write_text(json.dumps(profile))
    bad = json.loads(json.dumps(profile))
    bad["batches"][0]["p99_ms"] = -3
    f["NEG_PROFILE"] = d / "neg-profile.json"
    f["NEG_PROFILE"].write_text(json.dumps(bad))
    f["NAN_PROFILE"] = d / "nan-profile.json"
    f["NAN_PROFILE"].write_text(json.dumps(profile).replace('"p99_ms": ' + json.dumps(profile["batches"][0]["p99_ms"]),
                                                            '"p99_ms": NaN', 1))
    f["HUGE_PROFILE"] = d / "huge-profile.json"
    f["HUGE_PROFILE"].write_text(json.dumps(profile).replace('"p99_ms": ' + json.dumps(profile["batches"][0]["p99_ms"]),
                                                             '"p99_ms": 1e999', 1))
    f["NOT_JSON"] = d / "broken.json"
    f["NOT_JSON"].write_text("{ this is not json")
    f["BINARY"] = d / "binary.json"
    f["BINARY"].write_bytes(bytes(range(256)))
    f["LIST_JSON"] = d / "list.json"
    f["LIST_JSON"].write_text("[1, 2, 3]")
    f["DIR"] = d / "a-folder"
    f["DIR"].mkdir()
    f["FILE"] = d / "a-file.txt"
    f["FILE"].write_text("x")
    f["UNDER_FILE"] = f["FILE"] / "out.json"
    f["MISSING"] = d / "missing.json"
    stress = {"schema_version": 1, "tool": {}, "mode": "open-loop", "arrival": "poisson", "schedule_kind": "steps",
              "seed": 0, "started_at": "2026-11-21T00:00:00Z", "start_epoch_s": 0, "late_threshold_ms": 1, "workers": 1,
              "users": 1, "target": {"host": "http://127.0.0.1:8000", "protocol": "http", "model": "m",
                                     "model_version": "", "input_name": "x", "input_shape": [3], "datatype": "FP32",
                                     "request_batch": 1, "metrics_url": None},
              "steps": [{"index": 0, "name": "s0", "warmup": False, "start_s": 0, "duration_s": 10,
                         "offered_rate": -5, "achieved_rate": 1, "sent": 10, "ok": 10, "errors": 0, "late_sends": 0,
                         "dropped": 0, "lag_p99_ms": 0.1, "latency_ms": {"p50": 1, "p90": 2, "p95": 3, "p99": 4,
                                                                          "p999": 5, "mean": 1, "max": 6},
                         "server": None}],
              "stopped": {"reason": "completed"}}
    f["NEG_STRESS"] = d / "neg.stress.json"
    f["NEG_STRESS"].write_text(json.dumps(stress))
    stress["steps"][0]["offered_rate"] = 5
    f["NAN_STRESS"] = d / "nan.stress.json"
    f["NAN_STRESS"].write_text(json.dumps(stress).replace('"p99": 4', '"p99": NaN'))
    plan = json.loads((ROOT / "infra" / "plans" / "dev.plan.json").read_text())
    old = dict(plan, schema_version=1)
    f["OLD_PLAN"] = d / "old.plan.json"
    f["OLD_PLAN"].write_text(json.dumps(old))
    wrong = json.loads(json.dumps(plan))
    wrong["deployments"][0]["replicas"] = 0
    f["ZERO_PLAN"] = d / "zero.plan.json"
    f["ZERO_PLAN"].write_text(json.dumps(wrong))
    f["PLAN"] = d / "good.plan.json"
    f["PLAN"].write_text(json.dumps(plan))
    f["CSV_BAD"] = d / "day.csv"
    f["CSV_BAD"].write_text("minute,qps\n0,10\n1,-4\n")
    f["CSV_NOQPS"] = d / "noqps.csv"
    f["CSV_NOQPS"].write_text("minute,rate\n0,10\n")
    f["OUT"] = d / "out"
    f["CLOSED_PORT"] = f"http://127.0.0.1:{free_port()}"
    return {k: str(v) for k, v in f.items()}


P, S, L, I = "planner", "serving", "loadtests", "infra"
CASES: list[tuple[str, list[str]]] = [
    # planner recommend: numbers
    (P, ["recommend", "--qps", "0"]), (P, ["recommend", "--qps", "-10"]), (P, ["recommend", "--qps", "nan"]),
    (P, ["recommend", "--qps", "inf"]), (P, ["recommend", "--qps", "ten"]), (P, ["recommend", "--qps", "1e15"]),
    (P, ["recommend", "--qps", "100", "--p99-ms", "0"]), (P, ["recommend", "--qps", "100", "--p99-ms", "-5"]),
    (P, ["recommend", "--qps", "100", "--p99-ms", "0.5"]), (P, ["recommend", "--qps", "100", "--max-spot-share", "1.5"]),
    (P, ["recommend", "--qps", "100", "--max-spot-share", "-0.1"]),
    (P, ["recommend", "--qps", "100", "--max-spot-share", "nan"]),
    (P, ["recommend", "--qps", "100", "--survival-p99-ms", "50"]),
    (P, ["recommend", "--qps", "100", "--survival-p99-ms", "nan"]),
    (P, ["recommend", "--qps", "100", "--horizon-months", "0"]),
    (P, ["recommend", "--qps", "100", "--overhead-ms", "-1"]), (P, ["recommend", "--qps", "100", "--overhead-ms", "100"]),
    (P, ["recommend", "--qps", "100", "--min-replicas", "0"]),
    (P, ["recommend", "--qps", "100", "--max-instances-per-pool", "0"]),
    (P, ["recommend", "--qps", "100", "--scale-up-lag-min", "-1"]),
    (P, ["recommend", "--qps", "100", "--ramp-pct-per-min", "-2"]),
    (P, ["recommend", "--qps", "100", "--ramp-pct-per-min", "inf"]),
    # planner recommend: names and files
    (P, ["recommend", "--qps", "100", "--model", "nosuchmodel"]), (P, ["recommend", "--qps", "100", "--gpu", "B200"]),
    (P, ["recommend", "--qps", "100", "--capacity-type", "preemptible"]),
    (P, ["recommend", "--qps", "100", "--routing", "random"]),
    (P, ["recommend", "--qps", "100", "--catalog", "MISSING"]), (P, ["recommend", "--qps", "100", "--catalog", "NOT_JSON"]),
    (P, ["recommend", "--qps", "100", "--catalog", "DIR"]), (P, ["recommend", "--qps", "100", "--catalog", "BINARY"]),
    (P, ["recommend", "--qps", "100", "--catalog", "LIST_JSON"]),
    (P, ["recommend", "--qps", "100", "--profile", "NEG_PROFILE"]),
    (P, ["recommend", "--qps", "100", "--profile", "NAN_PROFILE"]),
    (P, ["recommend", "--qps", "100", "--profile", "HUGE_PROFILE"]),
    (P, ["recommend", "--qps", "100", "--profile", "NOT_JSON"]),
    (P, ["recommend", "--qps", "100", "--calibration", "PROFILE"]),
    (P, ["recommend", "--qps", "100", "--output", "DIR"]), (P, ["recommend", "--qps", "100", "--output", "UNDER_FILE"]),
    (P, ["recommend", "--qps", "100", "--stack", "nosuchstack"]),
    (P, ["recommend", "--qps", "100", "--model", "resnet50", "--stack", "dev", "--project-dir", "DIR"]),
    (P, ["recommend", "--qps", "100", "--format", "yaml"]), (P, ["recommend"]), (P, ["recommend", "--qps"]),
    (P, ["recomend", "--qps", "100"]),
    # planner fit / report / catalog
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json"]),
    (P, ["fit", "NAN_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json"]),
    (P, ["fit", "MISSING", "--profile", "PROFILE", "--output", "OUT/cal.json"]),
    (P, ["fit", "PROFILE", "--profile", "PROFILE", "--output", "OUT/cal.json"]),
    (P, ["fit", "NEG_STRESS", "--profile", "NOT_JSON", "--output", "OUT/cal.json"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "DIR"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "UNDER_FILE"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json", "--p99-ms", "-1"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json", "--scale-up-lag-min", "-1"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json", "--triton-config", "8:x:1"]),
    (P, ["fit", "NEG_STRESS", "--profile", "PROFILE", "--output", "OUT/cal.json", "--triton-config", "0:0:1"]),
    (P, ["report", "OLD_PLAN", "--out", "OUT/report"]), (P, ["report", "ZERO_PLAN", "--out", "OUT/report"]),
    (P, ["report", "PROFILE", "--out", "OUT/report"]), (P, ["report", "PLAN", "--out", "FILE"]),
    (P, ["report", "PLAN", "--out", "UNDER_FILE"]), (P, ["report", "MISSING", "--out", "OUT/report"]),
    (P, ["report", "PLAN", "--out", "OUT/report", "--catalog", "NOT_JSON"]),
    (P, ["catalog", "refresh", "--output", "DIR"]),
    (P, ["catalog", "refresh", "--output", "OUT/c.json", "--endpoint-url", "127.0.0.1:5000"]),
    (P, ["catalog", "refresh", "--output", "OUT/c.json", "--endpoint-url", "http://127.0.0.1:5OOO"]),
    # serving
    (S, ["demo-model", "detector", "OUT/d.onnx", "--height", "0"]),
    (S, ["demo-model", "detector", "OUT/d.onnx", "--width", "100"]),
    (S, ["demo-model", "detector", "OUT/d.onnx", "--height", "-32"]),
    (S, ["demo-model", "yolo", "OUT/d.onnx"]), (S, ["demo-model", "tiny", "DIR"]),
    (S, ["demo-model", "tiny", "UNDER_FILE"]),
    (S, ["profile", "EMPTY", "--gpu", "L4", "-o", "OUT/p.json"]),
    (S, ["profile", "TEXT", "--gpu", "L4", "-o", "OUT/p.json"]),
    (S, ["profile", "PROFILE_AS_ONNX", "--gpu", "L4", "-o", "OUT/p.json"]),
    (S, ["profile", "MISSING", "--gpu", "L4", "-o", "OUT/p.json"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "DIR"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "UNDER_FILE"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "OUT/p.json", "--batch-sizes", "0,1"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "OUT/p.json", "--batch-sizes", "a,b"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "OUT/p.json", "--iterations", "0"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "OUT/p.json", "--threads", "0"]),
    (S, ["profile", "--demo", "tiny", "--gpu", "L4", "-o", "OUT/p.json", "--instances", "0"]),
    (S, ["profile", "--gpu", "L4", "-o", "OUT/p.json"]),
    (S, ["import", "trtexec-log", "TEXT", "--gpu", "L4", "--model", "m", "-o", "OUT/p.json", "--date", "21/11/2026"]),
    (S, ["import", "trtexec-log", "MISSING", "--gpu", "L4", "--model", "m", "-o", "OUT/p.json"]),
    (S, ["import", "perf-analyzer", "TEXT", "--gpu", "L4", "--model", "m", "-o", "OUT/p.json"]),
    (S, ["import", "trtexec-log", "TEXT", "--gpu", "L4", "--model", "m", "-o", "DIR"]),
    (S, ["import", "trtexec-times", "NOT_JSON", "--gpu", "L4", "--model", "m", "-o", "OUT/p.json",
         "--batch-size", "0"]),
    (S, ["repo", "PROFILE_AS_ONNX", "OUT/repo"]), (S, ["repo", "EMPTY", "OUT/repo"]), (S, ["repo", "TEXT", "OUT/repo"]),
    (S, ["repo", "FILE", "OUT/repo"]),
    (S, ["repo", "MISSING", "OUT/repo"]),
    (S, ["repo", "PROFILE_AS_ONNX", "OUT/repo", "--instances", "0"]),
    (S, ["repo", "PROFILE_AS_ONNX", "OUT/repo", "--max-batch-size", "0"]),
    (S, ["repo", "PROFILE_AS_ONNX", "OUT/repo", "--version", "0"]),
    (S, ["repo", "PROFILE_AS_ONNX", "OUT/repo", "--plan", "OLD_PLAN"]),
    (S, ["upload", "DIR", "bucket/prefix"]), (S, ["upload", "DIR", "s3://b/p", "--endpoint-url", "127.0.0.1:9000"]),
    (S, ["upload", "MISSING", "s3://b/p", "--endpoint-url", "http://127.0.0.1:9"]),
    (S, ["local", "--demo", "tiny", "--http-port", "99999"]), (S, ["local", "--demo", "tiny", "--http-port", "0"]),
    (S, ["local", "--demo", "tiny", "--http-port", "8000", "--grpc-port", "8000"]),
    (S, ["local", "--demo", "tiny", "--instances", "0"]), (S, ["local", "--demo", "tiny", "--max-batch-size", "0"]),
    (S, ["local", "PROFILE_AS_ONNX"]), (S, ["local"]), (S, ["local", "--demo", "tiny", "--repository", "FILE"]),
    (S, ["local", "--demo", "tiny", "--plan", "ZERO_PLAN"]),
    # loadtests
    (L, ["run", "--model", "m", "--host", "127.0.0.1:8000", "--rates", "10", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "http://127.0.0.1:8O00", "--rates", "10", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "http://127.0.0.1:70000", "--rates", "10", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "-10", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "0", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "nan", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "1e9", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10,x", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--ramp", "10:inf:2", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--ramp", "10:5:2", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--ramp", "10:50", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--replay", "CSV_BAD", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--replay", "CSV_NOQPS", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--replay", "MISSING", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--step-duration", "0", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--out", "FILE"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--out", "UNDER_FILE"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--workers", "-1", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--timeout-s", "0", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--name", "../up", "--out", "OUT/s"]),
    (L, ["verify", "MISSING", "--host", "CLOSED_PORT", "--out", "OUT/v"]),
    (L, ["verify", "PROFILE", "--host", "CLOSED_PORT", "--out", "OUT/v"]),
    (L, ["verify", "OLD_PLAN", "--host", "CLOSED_PORT", "--out", "OUT/v"]),
    (L, ["verify", "ZERO_PLAN", "--host", "CLOSED_PORT", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--gpu", "B200", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "127.0.0.1:8000", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--out", "FILE"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--step-duration", "0", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--step-duration", "inf", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--band-pct", "-5", "--out", "OUT/v"]),
    (L, ["verify", "PLAN", "--host", "CLOSED_PORT", "--band-pct", "nan", "--out", "OUT/v"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--protocol", "grpc", "--grpc-url",
         "http://127.0.0.1:8001", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--closed-loop", "0", "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--host", "CLOSED_PORT", "--rates", "10", "--metrics-url", "127.0.0.1:8002",
         "--out", "OUT/s"]),
    (L, ["run", "--model", "m", "--rates", "10", "--workers", "2", "--emit-k8s", "DIR", "--image", "img"]),
    (L, ["run", "--model", "m", "--rates", "10", "--workers", "2", "--emit-k8s", "OUT/k.yaml"]),
    (L, ["show", "NEG_STRESS"]), (L, ["show", "NAN_STRESS"]), (L, ["show", "PROFILE"]), (L, ["show", "MISSING"]),
    (L, ["show", "DIR"]),
    # infra
    (I, ["render", "--stack", "nosuchstack", "--out", "OUT/r"]), (I, ["render", "--plan", "OLD_PLAN", "--out", "OUT/r"]),
    (I, ["render", "--plan", "ZERO_PLAN", "--out", "OUT/r"]), (I, ["render", "--plan", "PROFILE", "--out", "OUT/r"]),
    (I, ["render", "--plan", "MISSING", "--out", "OUT/r"]), (I, ["render", "--plan", "DIR", "--out", "OUT/r"]),
    (I, ["render", "--out", "FILE"]), (I, ["render", "--out", "UNDER_FILE"]), (I, ["render", "--stak", "dev"]),
]


def _expand(argv: list[str], files: dict[str, str], out: Path) -> list[str]:
    expanded = []
    for a in argv:
        if a.startswith("OUT"):
            expanded.append(str(out) + a[3:])
        else:
            expanded.append(files.get(a, a))
    return expanded


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(cli: str, argv: list[str], cwd: Path):
    return run_cli(cli, argv, cwd=cwd, env=COLUMNS, timeout_s=TIMEOUT_S)


def _verdict(cli: str, argv: list[str], proc) -> str | None:
    err = proc.stderr.strip().splitlines()
    if proc.returncode != 2:
        return f"exit {proc.returncode}: {proc.stderr[-400:]}"
    if "Traceback" in proc.stderr:
        return f"traceback: {proc.stderr[-400:]}"
    if len(err) != 1 or not err[0].startswith(f"{cli}: error: "):
        return f"not one line: {err}"
    return None


def test_at_least_a_hundred_bad_inputs_each_end_in_one_line_and_exit_2(files, tmp_path):
    assert len(CASES) >= 100
    snapshot = _listing(Path(files["DIR"]).parent)
    out = tmp_path / "out"
    # One after another: in-process calls share sys.stdout, the working directory and the environment.
    results = [(cli, argv, _run(cli, _expand(argv, files, out), tmp_path)) for cli, argv in CASES]
    failures = [f"{cli} {' '.join(argv)} -> {why}" for cli, argv, proc in results
                if (why := _verdict(cli, argv, proc))]
    assert not failures, "\n".join(failures)
    # Nothing written: no output folder, no half-written file, inputs untouched.
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(_listing(out))
    assert _listing(Path(files["DIR"]).parent) == snapshot
    assert not list(tmp_path.glob("rendered*")) and not list(tmp_path.glob("stress*"))


# One mistake per console, typed as a user types it: the installed script in a fresh interpreter (its start-up, its
# entry point's wiring, its import-time warnings), not only main(argv).
AS_TYPED = [(P, ["recommend", "--qps", "-10"]), (S, ["demo-model", "yolo", "OUT/d.onnx"]),
            (L, ["show", "NEG_STRESS"]), (I, ["render", "--plan", "ZERO_PLAN", "--out", "OUT/r"])]


def test_each_console_script_as_typed_ends_a_mistake_in_one_line_and_exit_2(files, tmp_path):
    out = tmp_path / "out"

    def one(case):
        cli, argv = case
        return cli, argv, run_console(cli, _expand(argv, files, out), cwd=tmp_path, env=COLUMNS, timeout_s=TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=len(AS_TYPED)) as pool:
        results = list(pool.map(one, AS_TYPED))
    failures = [f"{cli} {' '.join(argv)} -> {why}" for cli, argv, proc in results
                if (why := _verdict(cli, argv, proc))]
    assert not failures, "\n".join(failures)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(_listing(out))


BAD_NUMBERS = st.sampled_from(["0", "-1", "-0.5", "nan", "-inf", "inf", "1e999", "abc", "", "1,5", "0x10", "--"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--qps", "--p99-ms", "--horizon-months", "--min-replicas"]), value=BAD_NUMBERS)
def test_generated_bad_numbers_for_recommend(option, value, tmp_path):
    argv = ["recommend", "--qps", "100", option, value] if option != "--qps" else ["recommend", "--qps", value]
    proc = _run("planner", argv, tmp_path)
    assert _verdict("planner", argv, proc) is None, (argv, proc.stderr)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--http-port", "--grpc-port", "--metrics-port", "--instances", "--max-batch-size",
                               "--height"]),
       value=st.one_of(BAD_NUMBERS, st.integers(max_value=0).map(str), st.integers(min_value=65536).map(str)))
def test_generated_bad_numbers_for_serving_local(option, value, tmp_path):
    if option in ("--instances", "--max-batch-size") and value.isdigit() and int(value) >= 1:
        value = "0"  # (large counts are valid; only the range's low end is a mistake)
    argv = ["local", "--demo", "tiny", option, value]
    proc = _run("serving", argv, tmp_path)
    assert _verdict("serving", argv, proc) is None, (argv, proc.stderr)
    assert not any(tmp_path.iterdir())

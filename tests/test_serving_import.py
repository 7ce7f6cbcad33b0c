"""`serving import`: real trtexec and perf_analyzer output (tests/data/SOURCES.md) into the profile format."""
import json
from pathlib import Path

import numpy as np
import pytest

from serving import importers
from serving.cli import main as serving_main
from gpufleet.contracts.profile import read_profile

DATA = Path(__file__).parent / "data"


def exported_trace(compute_ms, warmup_count, period_ms=10.0):
    """Records laid out as trtexec's exportJSONTrace writes them, the first ``warmup_count`` inside the warm-up."""
    records = []
    for i, c in enumerate(compute_ms):
        start = (i * period_ms) if i < warmup_count else 200.0 + (i - warmup_count) * period_ms
        records.append({"startEnqMs": start, "endEnqMs": start + 0.05, "startH2dMs": start, "endH2dMs": start + 0.1,
                        "startComputeMs": start + 0.1, "endComputeMs": start + 0.1 + c,
                        "startD2hMs": start + 0.1 + c, "endD2hMs": start + 0.2 + c, "h2dMs": 0.1, "computeMs": c,
                        "d2hMs": 0.1, "latencyMs": c + 0.2, "endToEndMs": c + 0.2})
    return records


def test_trtexec_log_with_90_95_99_percentiles():
    got = importers.read_trtexec_log(DATA / "trtexec/tensorrt-issue-4177.log", batch_size=4)
    b = got.batch
    assert (b.mean_ms, b.p50_ms, b.p90_ms, b.p99_ms) == (7.58404, 7.14139, 10.2881, 12.9485)  # GPU Compute Time line
    assert b.throughput_per_s == pytest.approx(130.298 * 4)
    assert got.date == "2024-10-03"


def test_trtexec_log_latency_metric_and_old_release_with_only_p99():
    lat = importers.read_trtexec_log(DATA / "trtexec/tensorrt-issue-4177.log", 1, metric="Latency").batch
    assert (lat.mean_ms, lat.p99_ms) == (7.60628, 12.9675)
    old = importers.read_trtexec_log(DATA / "trtexec/yolov7-pr-329.log", 1).batch
    assert (old.mean_ms, old.p50_ms, old.p90_ms, old.p99_ms) == (1.38629, 1.38037, None, 1.55853)


def test_trtexec_log_reads_the_batch_size_from_the_inference_shape(tmp_path):
    log = tmp_path / "b8.log"
    log.write_text("[07/28/2022-16:00:40] [I] Input inference shape : images=8x3x640x640\n"
                   + (DATA / "trtexec/yolov7-pr-329.log").read_text())
    assert importers.read_trtexec_log(log).batch.batch_size == 8
    with pytest.raises(importers.ImportFormatError, match="no inference shape"):
        importers.read_trtexec_log(DATA / "trtexec/yolov7-pr-329.log")


def test_perf_analyzer_csv_takes_the_concurrency_1_row_in_ms():
    got = importers.read_perf_analyzer_csv(DATA / "perf_analyzer/inception_graphdef.csv", batch_size=1).batch
    assert (got.p50_ms, got.p90_ms, got.p99_ms) == (13.891, 18.795, 21.018)
    assert got.mean_ms == pytest.approx((225 + 2148 + 64 + 206 + 11781 + 19 + 0) / 1000)
    assert got.throughput_per_s == 69.2
    row3 = importers.read_perf_analyzer_csv(DATA / "perf_analyzer/inception_graphdef.csv", 1, concurrency=3).batch
    assert row3.p99_ms == 51.701


def test_trtexec_times_drops_warmup_records(tmp_path):
    compute = [50.0] * 5 + list(np.linspace(1.0, 2.0, 100))
    path = tmp_path / "times.json"
    path.write_text(json.dumps(exported_trace(compute, warmup_count=5)))
    got = importers.read_trtexec_times(path, batch_size=2)
    assert got.samples == 100
    assert got.batch.p99_ms == pytest.approx(2.0)  # the 50 ms warm-up records are gone
    latency = importers.read_trtexec_times(path, 2, metric="latencyMs").batch
    assert latency.mean_ms == pytest.approx(got.batch.mean_ms + 0.2)


def test_import_cli_builds_one_profile_from_several_batch_sizes(tmp_path):
    b8 = tmp_path / "b8.log"
    b8.write_text((DATA / "trtexec/tensorrt-issue-4177.log").read_text())
    out = tmp_path / "imported.json"
    assert serving_main(["import", "trtexec-log", str(DATA / "trtexec/yolov7-pr-329.log"), str(b8),
                         "--batch-size", "1", "--batch-size", "8", "--gpu", "T4", "--model", "m",
                         "--precision", "fp16", "-o", str(out)]) == 0
    prof = read_profile(out)
    assert prof.batch_sizes == [1, 8] and prof.backend == "tensorrt"
    assert prof.origin.date == "2024-10-03"  # the latest date in the logs, not today
    assert "yolov7-pr-329.log" in prof.origin.derivation


@pytest.mark.parametrize("argv,needle", [
    (["import", "trtexec-times", str(DATA / "trtexec/yolov7-pr-329.log"), "--batch-size", "1"], "not a readable"),
    (["import", "perf-analyzer", str(DATA / "trtexec/yolov7-pr-329.log"), "--batch-size", "1"], "not a perf_analyzer"),
    (["import", "trtexec-log", str(DATA / "perf_analyzer/inception_graphdef.csv"), "--batch-size", "1"],
     "no '=== Performance summary ==='"),
    (["import", "perf-analyzer", str(DATA / "perf_analyzer/inception_graphdef.csv")], "give --batch-size"),
    (["import", "trtexec-log", str(DATA / "trtexec/yolov7-pr-329.log"), str(DATA / "trtexec/yolov7-pr-329.log"),
      "--batch-size", "1", "--batch-size", "1"], "given twice"),
])
def test_wrong_format_gives_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert serving_main(argv + ["--gpu", "T4", "--model", "m", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


# --- the GPU type must be one the planner knows: the embedded catalog's, or --catalog's (issue 25, item 3) --------

def _import(tmp_path, *extra):
    from tests.cli_run import run_cli

    csv = DATA / "perf_analyzer/inception_graphdef.csv"
    return run_cli("serving", ["import", "perf-analyzer", str(csv), "--batch-size", "1", "--model", "inception", "-o",
                               str(tmp_path / "p.json"), *extra])


def test_serving_import_refuses_a_gpu_type_the_planner_does_not_know(tmp_path):
    run = _import(tmp_path, "--gpu", "L5")
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "'L5'" in line and "L40S" in line, line
    assert not (tmp_path / "p.json").exists()


def test_serving_import_takes_the_gpu_types_of_a_refreshed_catalog(tmp_path):
    """A catalog from `planner catalog refresh --family p5e` names H200: with it (`--catalog`, as `planner recommend`
    takes it) H200 is a known type; without it, not."""
    from planner.catalog import read_catalog
    from gpufleet.contracts.catalog import write_catalog

    embedded = read_catalog(None)
    h200 = embedded.instances[0].model_copy(update={"instance_type": "p5e.48xlarge", "family": "p5e", "gpu": "H200"})
    write_catalog(embedded.model_copy(update={"instances": [*embedded.instances, h200]}), tmp_path / "cat.json")
    assert _import(tmp_path, "--gpu", "H200").returncode == 2
    run = _import(tmp_path, "--gpu", "H200", "--catalog", str(tmp_path / "cat.json"))
    assert run.returncode == 0, run.stderr
    assert read_profile(tmp_path / "p.json").gpu == "H200"

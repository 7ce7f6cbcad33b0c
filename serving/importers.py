"""Turn measurements made by other tools into the latency profile format.

Three inputs, one batch size per file (each tool measures one shape per run):

- ``trtexec --exportTimes=<file>``: the per-inference trace, written by ``exportJSONTrace`` in TensorRT's
  ``samples/common/sampleReporting.cpp``. The trace includes the warm-up inferences; like trtexec's own report,
  entries that started computing before ``warmup_ms`` are dropped. Latency per inference is ``computeMs`` (GPU
  compute, the profile's meaning) unless ``metric="latencyMs"`` (H2D + compute + D2H) is asked for.
- trtexec's printed ``=== Performance summary ===`` (its stdout/log): the ``GPU Compute Time`` (or ``Latency``)
  line gives min, max, mean, median and the percentiles trtexec printed (TensorRT 8.4+ prints 90/95/99, older
  releases only the one set by ``--percentile``).
- Triton ``perf_analyzer -f <file>.csv``: one row per concurrency level, microseconds. The row at concurrency 1 has
  no client-side queueing, so its client latency is one batch's service time plus network and Triton overhead; it is
  imported as is, an upper bound on device time, and the origin says so.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.errors import ServingInputError
from serving.measure import summarise
from gpufleet.contracts.profile import SCHEMA_VERSION, BatchLatency, LatencyProfile, Origin

TRTEXEC_DEFAULT_WARMUP_MS = 200.0  # trtexec's --warmUp default


class ImportFormatError(ServingInputError):
    """A file that is not the format it was imported as; the message names the file and what is missing."""


@dataclass(frozen=True)
class Imported:
    """One batch size read from one file."""

    batch: BatchLatency
    samples: int | None  # timed inferences behind the figures, when the file says
    source: str
    date: str | None = None  # when it was measured, when the file says (trtexec logs timestamp each line)


# --- trtexec --exportTimes ---------------------------------------------------------------------------------------

def read_trtexec_times(path: Path | str, batch_size: int, warmup_ms: float = TRTEXEC_DEFAULT_WARMUP_MS,
                       metric: str = "computeMs") -> Imported:
    path = Path(path)
    try:
        trace = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{path}: not a readable trtexec --exportTimes JSON: {exc}") from None
    if not isinstance(trace, list) or not trace or not all(isinstance(t, dict) for t in trace):
        raise ImportFormatError(f"{path}: expected a JSON list of per-inference records")
    if metric not in ("computeMs", "latencyMs"):
        raise ServingInputError(f"metric {metric!r}: choose computeMs or latencyMs")
    missing = [i for i, t in enumerate(trace) if metric not in t or "startComputeMs" not in t]
    if missing:
        raise ImportFormatError(f"{path}: record {missing[0]} has no {metric}/startComputeMs "
                                "(is this an --exportProfile or --exportLayerInfo file?)")
    timed = [float(t[metric]) for t in trace if float(t["startComputeMs"]) >= warmup_ms]
    if not timed:
        raise ImportFormatError(f"{path}: every record started before the {warmup_ms:g} ms warm-up")
    return Imported(summarise(batch_size, np.array(timed)), len(timed), f"trtexec --exportTimes {path.name}")


# --- trtexec printed summary -------------------------------------------------------------------------------------

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")
_SHAPE = re.compile(r"(?:Input inference shape\s*:\s*[^=\s]+=|--shapes=[^:\s]+:)(\d+)x")


def read_trtexec_log(path: Path | str, batch_size: int | None = None, metric: str = "GPU Compute Time") -> Imported:
    """Read trtexec's performance summary; the batch size comes from the log's inference shape unless given."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read: {exc.strerror}") from None
    if "Performance summary" not in text:
        raise ImportFormatError(f"{path}: no '=== Performance summary ===' (not a trtexec log, or it did not finish)")
    summary = text.split("Performance summary", 1)[1]
    line = next((ln for ln in summary.splitlines() if re.search(rf"\]\s*{re.escape(metric)}:|^\s*{re.escape(metric)}:",
                                                                ln)), None)
    if line is None:
        raise ImportFormatError(f"{path}: the performance summary has no '{metric}:' line")
    stats: dict[str, float] = {}
    for name, pct, value in _STAT.findall(line):
        stats[f"p{pct}" if pct else name] = float(value)
    for need in ("mean", "median"):
        if need not in stats:
            raise ImportFormatError(f"{path}: '{metric}' line has no {need}")
    p99 = stats.get("p99") or stats.get("p99.0")
    if p99 is None:
        raise ImportFormatError(f"{path}: '{metric}' line has no percentile(99%); rerun trtexec with --percentile=99")
    if batch_size is None:
        shapes = _SHAPE.findall(text)
        if not shapes:
            raise ImportFormatError(f"{path}: no inference shape in the log; give the batch size")
        batch_size = int(shapes[0])
    mean = stats["mean"]
    throughput = re.search(r"Throughput:\s*([0-9.eE+-]+)\s*qps", summary)
    # trtexec's qps counts inferences (one per enqueue) in explicit-batch mode; images per second is qps x batch.
    images_per_s = float(throughput.group(1)) * batch_size if throughput else batch_size * 1000.0 / mean
    timed = re.search(r"Timing trace has (\d+) queries", text)
    batch = BatchLatency(batch_size=batch_size, mean_ms=mean, p50_ms=stats["median"], p90_ms=stats.get("p90"),
                         p99_ms=p99, throughput_per_s=images_per_s)
    stamp = re.search(r"\[(\d\d)/(\d\d)/(\d{4})-\d\d:\d\d:\d\d\]", summary)
    date = f"{stamp.group(3)}-{stamp.group(1)}-{stamp.group(2)}" if stamp else None
    return Imported(batch, int(timed.group(1)) if timed else None, f"trtexec summary ({metric}) {path.name}", date)


# --- perf_analyzer CSV -------------------------------------------------------------------------------------------

def read_perf_analyzer_csv(path: Path | str, batch_size: int, concurrency: int = 1) -> Imported:
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read: {exc.strerror}") from None
    need = ("Concurrency", "Inferences/Second", "p50 latency", "p90 latency", "p99 latency")
    if not rows or any(k not in rows[0] for k in need):
        raise ImportFormatError(f"{path}: not a perf_analyzer -f CSV (need columns {', '.join(need)})")
    row = next((r for r in rows if r["Concurrency"].strip() == str(concurrency)), None)
    if row is None:
        raise ImportFormatError(f"{path}: no row at concurrency {concurrency}")
    us = {k: float(v) for k, v in row.items() if k and v not in (None, "") and _is_number(v)}
    components = [k for k in ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute",
                              "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv")
                  if k in us]
    mean_us = sum(us[k] for k in components)
    batch = BatchLatency(batch_size=batch_size, mean_ms=mean_us / 1000, p50_ms=us["p50 latency"] / 1000,
                         p90_ms=us["p90 latency"] / 1000, p99_ms=us["p99 latency"] / 1000,
                         # perf_analyzer's Inferences/Second already counts batch elements (requests x batch size).
                         throughput_per_s=us["Inferences/Second"])
    return Imported(batch, None, f"perf_analyzer CSV {path.name} (concurrency {concurrency}, client latency)")


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# --- assembling a profile ----------------------------------------------------------------------------------------

def profile_from_imports(items: list[Imported], *, model: str, gpu: str, precision: str, backend: str,
                         tool: str, date: str | None = None) -> LatencyProfile:
    """One profile from per-batch-size imports; two files for the same batch size is an error.

    The origin date is ``date`` if given, else the latest date the files carry, else today (the import date).
    """
    if not items:
        raise ServingInputError("nothing to import")
    by_size: dict[int, Imported] = {}
    for it in items:
        if it.batch.batch_size in by_size:
            raise ServingInputError(f"batch size {it.batch.batch_size} given twice ({by_size[it.batch.batch_size].source}"
                                    f" and {it.source})")
        by_size[it.batch.batch_size] = it
    ordered = [by_size[k] for k in sorted(by_size)]
    counts = [it.samples for it in ordered if it.samples]
    dates = sorted({it.date for it in ordered if it.date})
    return LatencyProfile(
        schema_version=SCHEMA_VERSION, model=model, gpu=gpu, precision=precision, backend=backend,
        origin=Origin(kind="measured", date=date or (dates[-1] if dates else _dt.date.today().isoformat()), tool=tool,
                      iterations=min(counts) if counts else None,
                      derivation="imported: " + "; ".join(it.source for it in ordered)),
        batches=[it.batch for it in ordered])

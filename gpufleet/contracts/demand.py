"""The demand curve: requests/s over time, per model. One reader for the planner (``recommend --qps-curve``) and
loadtests (``run --replay``), so a file replayed against Triton and the file a fleet is planned for are read the same.

A CSV, one of two forms:

* one model: a ``qps`` column, and a ``time`` (or ``timestamp``) column at one regular step (seconds, HH:MM[:SS] or
  ISO 8601 date-times; a clock time that goes back past midnight is the next day), or no time column and a step given
  by the caller (the rows in order, each ``step_min`` minutes);
* several models, long form: ``time,model,qps``, a row per model and time. Every model has the same times (so the
  same step and span); each model's rows are at one regular, increasing step.

Each row is a :class:`DemandRow` (its JSON Schema is published in ``docs/schemas`` like the other contracts'); every
defect is one line naming the file and the line, raised as ``error`` (:class:`ContractError` unless the caller's stage
names its own).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

import numpy as np
from pydantic import Field

from gpufleet.contracts.io import write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.errors import ContractError

MAX_CURVE_ROWS = 100_000
TIME_COLUMNS = ("time", "timestamp")
MODEL_COLUMN = "model"
QPS_COLUMN = "qps"
# A regular step tolerates this relative jitter (float seconds from ISO date-times).
STEP_TOLERANCE = 1e-6


class DemandRow(Strict):
    """One row of a demand curve CSV, as the reader checks it (the published form of the columns)."""

    time: Optional[Union[float, str]] = Field(
        None, description="Seconds, HH:MM[:SS] or an ISO 8601 date-time; the rows of a model at one regular step. "
                          "'timestamp' is read as the same column. Absent: the caller gives the step.")
    model: Optional[str] = Field(None, min_length=1, description="Long form: the model the rate is for.")
    qps: float = Field(ge=0, description="Requests/s from this time for one step.")


@dataclass(frozen=True)
class DemandCurve:
    """Requests/s at a regular step: ``qps[i]`` holds from ``i * step_s`` for ``step_s``. ``step_s`` is None only
    where the reader was told no step is needed (a replay paces rows itself) and the file gave none."""

    qps: np.ndarray
    step_s: float | None
    source: str
    model: str = ""
    start_s: float | None = None  # the first row's time as the file gives it (None: no time column)

    @property
    def span_s(self) -> float:
        return len(self.qps) * self.step_s

    @property
    def days(self) -> float:
        return self.span_s / 86_400.0

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        """Linear between the rows' midpoints: a ramp, not a staircase of instantaneous jumps."""
        mids = (np.arange(len(self.qps)) + 0.5) * self.step_s
        return np.interp(t, mids, self.qps)

    def periods(self, period_s: float) -> list[tuple[float, float, float, float]]:
        """(start s, hours, peak qps, mean qps) per planning period."""
        per = max(1, int(round(period_s / self.step_s)))
        out = []
        for i in range(0, len(self.qps), per):
            rows = self.qps[i:i + per]
            start, end = i * self.step_s, (i + len(rows)) * self.step_s
            # The curve is linear between the rows' midpoints, so its peak in the period is at a midpoint or an edge.
            at = np.concatenate([[start, end - 1e-9], (np.arange(i, i + len(rows)) + 0.5) * self.step_s])
            out.append((start, len(rows) * self.step_s / 3600.0, float(self.rate_at(at).max()), float(rows.mean())))
        return out

    def fastest_ramp(self, reaction_s: float) -> tuple[float, float]:
        """(growth per minute compounded, start s) of the steepest rise over ``reaction_s``."""
        t = np.arange(0.0, max(self.span_s - reaction_s, 0.0) + 1e-9, 15.0)
        start = self.rate_at(t)
        end = self.rate_at(t + reaction_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = np.where(start > 0, end / start, 1.0)
        i = int(np.argmax(growth))
        return max(float(growth[i]) ** (60.0 / reaction_s) - 1.0, 0.0), float(t[i])


def parse_time(text: str) -> float | None:
    """A time cell in seconds: seconds, HH:MM[:SS], or an ISO 8601 date-time (None if none of these)."""
    text = text.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    parts = text.split(":")
    if 2 <= len(parts) <= 3 and all(p.strip().isdigit() for p in parts):
        h, m, *sec = (int(p) for p in parts)
        return h * 3600.0 + m * 60.0 + (sec[0] if sec else 0)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _is_clock(text: str) -> bool:
    return ":" in text and "T" not in text and "-" not in text


def _step(path, times: list[float], lines: list[int], who: str, step_option: str, error) -> float:
    """The one regular step of ``times`` (seconds, in file order), or ``error`` naming the first line off it."""
    if len(times) < 2:
        raise error(f"{path}: {who}one row cannot say its step; give {step_option}")
    steps = np.diff(times)
    step_s = float(steps[0])
    off = np.abs(steps - step_s) > STEP_TOLERANCE * max(abs(step_s), 1.0)
    if step_s <= 0 or off.any():
        bad = lines[int(np.argmax(off)) + 1] if step_s > 0 else lines[1]
        raise error(f"{path}: line {bad}: {who}rows must be at one regular, increasing step "
                    f"({step_s:g} s from the first two)")
    return step_s


def read_demand(path: Path | str, step_min: float | None = None, *, error: type[Exception] = ContractError,
                need_step: bool = True, min_span_s: float = 0.0, step_option: str = "a step",
                ) -> dict[str, DemandCurve]:
    """Every curve of a demand CSV, by model ('' for a one-model file without a ``model`` column).

    ``step_min`` overrides the file's times (minutes a row); without it and without a time column the file is refused
    unless ``need_step`` is False (then ``step_s`` is None). A curve must span ``min_span_s`` and carry some demand.
    """
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the demand curve: {getattr(exc, 'strerror', None) or exc}") from None
    except csv.Error as exc:
        raise error(f"{path}: not a CSV: {exc}") from None
    if not rows or QPS_COLUMN not in rows[0]:
        timed = f" (and a 'time' column, or {step_option})" if need_step else ""
        raise error(f"{path}: expected a CSV with a '{QPS_COLUMN}' column{timed}")
    if len(rows) > MAX_CURVE_ROWS:
        raise error(f"{path}: {len(rows)} rows, more than {MAX_CURVE_ROWS}; aggregate to a coarser step")
    time_col = next((c for c in TIME_COLUMNS if c in rows[0]), None)
    long_form = MODEL_COLUMN in rows[0]
    if long_form and time_col is None:
        raise error(f"{path}: a curve per model (a '{MODEL_COLUMN}' column) needs a 'time' column to align them")
    if long_form and step_min is not None:
        raise error(f"{path}: a curve per model takes its step from its times; drop {step_option}")
    if step_min is not None and not (math.isfinite(step_min) and step_min > 0):
        raise error(f"{step_option} must be a positive number, got {step_min:g}")

    # Per model, in file order: the qps, the file lines, the raw time cells.
    by_model: dict[str, tuple[list[float], list[int], list[str]]] = {}
    for line, row in enumerate(rows, start=2):
        raw = row[QPS_COLUMN]
        try:
            q = float(raw)
        except (TypeError, ValueError):
            raise error(f"{path}: line {line}: qps {raw!r} is not a number") from None
        if not math.isfinite(q) or q < 0:
            raise error(f"{path}: line {line}: qps {q:g} must be a finite number >= 0")
        name = (row[MODEL_COLUMN] or "").strip() if long_form else ""
        if long_form and not name:
            raise error(f"{path}: line {line}: no model named")
        qps, lines, cells = by_model.setdefault(name, ([], [], []))
        qps.append(q)
        lines.append(line)
        cells.append((row[time_col] or "") if time_col else "")

    curves: dict[str, DemandCurve] = {}
    shared: tuple[str, list[float], float] | None = None  # the first model's times, which every other model must have
    for name, (qps, lines, cells) in by_model.items():
        who = f"model {name!r}: " if long_form else ""
        step_s: float | None
        if step_min is not None:
            step_s = step_min * 60.0
        elif time_col is None:
            if need_step:
                raise error(f"{path}: no 'time' column: give {step_option}, the minutes each row stands for")
            step_s = None
        else:
            times: list[float] = []
            for line, cell in zip(lines, cells):
                t = parse_time(cell)
                if t is None:
                    raise error(f"{path}: line {line}: time {cell!r} is not seconds, HH:MM or an ISO date-time")
                if times and t < times[-1] and _is_clock(cell):
                    t += 86_400.0 * math.ceil((times[-1] - t) / 86_400.0)  # a clock time past midnight: the next day
                times.append(t)
            step_s = _step(path, times, lines, who, step_option, error)
            if shared is None:
                shared = (name, times, step_s)
            elif step_s != shared[2]:
                raise error(f"{path}: model {name!r} steps {step_s:g} s and model {shared[0]!r} {shared[2]:g} s: "
                            "every model's rows must be at the same step")
            elif times != shared[1]:
                differ = sorted(set(shared[1]) ^ set(times))
                raise error(f"{path}: model {name!r} and model {shared[0]!r} differ in their times (first at "
                            f"{differ[0] - min(shared[1][0], times[0]):g} s from the start): give every model a "
                            "rate at every time")
        start = shared[1][0] if (shared is not None and time_col is not None and step_min is None) else None
        curve = DemandCurve(np.array(qps), step_s, str(path), name, start)
        if step_s is not None and curve.span_s < min_span_s:
            raise error(f"{path}: {who}the curve spans {curve.span_s / 60:g} minutes; at least "
                        f"{min_span_s / 3600:g} hour is needed")
        if curve.qps.max() <= 0:
            raise error(f"{path}: {who}every qps is 0; there is nothing to serve")
        curves[name] = curve
    return curves


def read_demand_curve(path: Path | str, step_min: float | None = None, *, error: type[Exception] = ContractError,
                      need_step: bool = True, min_span_s: float = 0.0,
                      step_option: str = "a step") -> DemandCurve:
    """The one curve of a demand CSV (a long-form file naming one model is one curve); :func:`read_demand` reads
    it, with the same arguments. A file with several models is refused, naming them."""
    curves = read_demand(path, step_min, error=error, need_step=need_step, min_span_s=min_span_s,
                         step_option=step_option)
    if len(curves) > 1:
        raise error(f"{path}: holds a curve per model ({', '.join(curves)}); one curve is read here")
    return next(iter(curves.values()))


def write_demand_curve(path: Path | str, times: list[str], qps: list[float]) -> None:
    """One model's curve as this module reads it back: ``time,qps`` rows at the caller's regular step, atomically."""
    if len(times) != len(qps) or not times:
        raise ValueError("a demand curve needs one rate per time, and at least one row")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([TIME_COLUMNS[0], QPS_COLUMN])
    for t, q in zip(times, qps):
        writer.writerow([t, repr(float(DemandRow(time=t, qps=q).qps))])
    write_atomic(path, out.getvalue())

"""The settings of one stress run: one model, from the command line to every Locust process.

``loadtests run`` builds a :class:`StressSettings` from its options (whose defaults are read from here), the
runner passes it to Locust as one JSON argument (``--gf-settings``), and Locust forwards custom arguments to its
workers, so the master, each worker and the command line read the same object. Every default is declared once,
below or on the load shape (:mod:`loadtests.shapes`). Pure checks (ranges, URLs, names) are validators here; what
needs the network or the disk (the server answers, the output folder is writable) is checked by
:func:`loadtests.run.preflight` before Locust starts.
"""
from __future__ import annotations

import math
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from gpufleet.contracts.model import Strict
from gpufleet.errors import InputError
from gpufleet.net import check_host_port, check_url
from loadtests.errors import LoadTestInputError
from loadtests.shapes import Shape

# The one custom Locust argument: the settings as JSON (Locust hands custom arguments on to its workers).
SETTINGS_ARG = "--gf-settings"
DEFAULT_HOST = "http://127.0.0.1:8000"
TRITON_METRICS_PORT = 8002
MAX_WORKERS = 64
# Locust's own --run-time is set this far past the schedule plus one request timeout: a backstop, never reached
# by a run that ends by itself.
RUN_TIME_SLACK_S = 30.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class StressSettings(Strict):
    model_config = ConfigDict(frozen=True)

    model: str = Field(min_length=1, description="Model name on the server.")
    shape: Shape
    host: str = Field(DEFAULT_HOST, description="KServe v2 HTTP endpoint; load goes only where you point it.")
    version: str = Field("", description="Model version (default: the server's choice).")
    protocol: Literal["http", "grpc"] = Field("http", description="KServe v2 over HTTP or gRPC.")
    grpc_url: str = Field("", description="gRPC endpoint host:port (protocol grpc).")
    arrival: Literal["poisson", "constant"] = Field("poisson", description="Open-loop arrival process.")
    seed: int = Field(0, ge=0, description="Seed of the arrival times.")
    users: int = Field(1, ge=1, description="Open loop: generators sharing the rate (at least one per worker).")
    workers: int = Field(0, ge=0, le=MAX_WORKERS, description="Locust worker processes under a master (0: one "
                                                              "process).")
    request_batch: int = Field(1, ge=1, description="Images per request.")
    late_ms: float = Field(1.0, gt=0, description="A send this late or later is counted late.")
    timeout_s: float = Field(30.0, gt=0, description="Request timeout, seconds.")
    max_in_flight: int = Field(10_000, ge=1, description="Per process; beyond it sends are dropped and counted.")
    connections: int = Field(512, ge=1, description="HTTP connections per user.")
    metrics_url: str | None = Field(None, description="Triton /metrics to scrape per step (default "
                                                      "http://<host>:8002/metrics; '' for none).")
    out: Path = Field(Path("stress"), description="Folder for the stress result and Locust's files.")
    name: str = Field("run", description="File name stem of this run.")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _checked(check_url, v, "--host")

    @field_validator("metrics_url")
    @classmethod
    def _metrics(cls, v: str | None) -> str | None:
        return _checked(check_url, v, "--metrics-url") if v else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not set(v) <= _NAME_CHARS or v.startswith("."):
            raise ValueError(f"--name {v!r}: use letters, digits, '-', '_' and '.' (a file name stem)")
        return v

    @model_validator(mode="after")
    def _grpc(self):
        if self.protocol == "grpc":
            if not self.grpc_url:
                raise ValueError("protocol grpc needs --grpc-url host:port")
            _checked(check_host_port, self.grpc_url, "--grpc-url")
        return self

    @property
    def result_path(self) -> Path:
        return self.out / f"{self.name}.stress.json"

    @property
    def locust_prefix(self) -> Path:
        return self.out / self.name

    @property
    def locust_files(self) -> dict[str, str]:
        """Locust's own outputs beside the result (``--csv`` and ``--json-file`` take these stems)."""
        p = str(self.locust_prefix)
        return {"stats_csv": f"{p}_stats.csv", "history_csv": f"{p}_stats_history.csv",
                "failures_csv": f"{p}_failures.csv", "json": f"{p}.locust.json"}

    @property
    def log_path(self) -> Path:
        return self.out / f"{self.name}.locust.log"

    @property
    def scrape_url(self) -> str:
        """Where Triton's metrics are scraped ('' for nowhere)."""
        if self.metrics_url is not None:
            return self.metrics_url
        return f"http://{urllib.parse.urlparse(self.host).hostname}:{TRITON_METRICS_PORT}/metrics"

    @property
    def locust_users(self) -> int:
        return self.shape.locust_users(self.users, self.workers)

    def bound_s(self) -> float:
        """The longest the run can take: the shape, the last requests' timeout, and slack."""
        return self.shape.duration_s + self.timeout_s + RUN_TIME_SLACK_S

    def run_time_s(self) -> int:
        return math.ceil(self.bound_s())


def settings_error(exc: ValidationError) -> LoadTestInputError:
    """One line naming the option that is wrong."""
    err = exc.errors()[0]
    message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "value_error" or not loc:
        return LoadTestInputError(message)  # our own validators' messages already name the option
    return LoadTestInputError(f"{_option(loc)} {err.get('input')!r}: {message}")


# A shape field whose command-line option has another name.
_SHAPE_OPTIONS = {("ramp", "start"): "--ramp", ("ramp", "stop"): "--ramp", ("ramp", "factor"): "--ramp",
                  ("replay", "rates"): "--replay", ("closed-loop", "users"): "--closed-loop"}


def _option(loc: list[str]) -> str:
    names = [p for p in loc if not p.isdigit()]  # list positions (the n-th rate) are not options
    if len(names) >= 3 and names[0] == "shape" and (names[1], names[2]) in _SHAPE_OPTIONS:
        return _SHAPE_OPTIONS[(names[1], names[2])]
    return "--" + names[-1].replace("_", "-")


def build(**values) -> StressSettings:
    """The settings from keyword values; :class:`LoadTestInputError` with one line when one is wrong."""
    try:
        return StressSettings(**values)
    except ValidationError as exc:
        raise settings_error(exc) from None


def _checked(check, value: str, option: str) -> str:
    try:
        return check(value, option)
    except InputError as exc:
        raise ValueError(str(exc)) from None

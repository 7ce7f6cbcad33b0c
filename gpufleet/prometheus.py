"""Read a Prometheus server's HTTP API: range queries, one line per failure.

No Prometheus query client is among gpufleet's dependencies (``prometheus-client``, in the loadtests extra, writes
metrics; it reads none), and the API is one GET: ``/api/v1/query_range`` (prometheus/prometheus docs/querying/api.md;
checked against the Debian prometheus 2.42 server by tests/test_production.py). Errors follow the repository's rule
(:mod:`gpufleet.errors`):

* a query Prometheus refuses (HTTP 400, ``errorType: bad_data``: a selector the user wrote that does not parse) is
  bad input, :class:`InputError`, exit 2;
* a server that cannot be reached, times out, answers 5xx/422 (a query it accepted but could not run) or answers
  something that is not the API's JSON is a failure at run time, :class:`RunFailure`, exit 1; the URL itself was
  already checked for form by the caller (``gpufleet.net.check_url``).

A query that matches no series is no error here: the caller knows what an empty answer means (no traffic in a
window, or a selector that names nothing) and says so in its own words.
"""
from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from gpufleet.errors import InputError, RunFailure

TIMEOUT_S = 30.0
# Prometheus refuses a range query of more than 11,000 points per series (web/api/v1/api.go, queryRange).
MAX_POINTS = 11_000


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix seconds, value); NaN values are dropped (a 0/0 in the query)


def duration_s(text: str, option: str) -> float:
    """A Prometheus duration (``30s``, ``5m``, ``1h``, ``1d``; one unit) in seconds, for options like ``--window``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number) if unit in units else float("nan")
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0 and number.isdigit()):
        raise InputError(f"{option} {text!r}: expected a whole number and a unit s, m, h or d, e.g. 5m")
    return value * units[unit]


def matchers(text: str, option: str) -> str:
    """Label matchers as the user writes them inside a selector's braces (``job="triton",instance=~".*:8002"``),
    with the braces taken off if given; Prometheus itself judges their syntax (a refusal is bad input)."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text or "{" in text or "}" in text:
        raise InputError(f"{option} {text!r}: expected label matchers like job=\"triton\",namespace=\"inference\"")
    return text


class Prometheus:
    """One server's HTTP API (``url``: its base, e.g. http://127.0.0.1:9090, already checked for form)."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> dict:
        full = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(full, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            detail = _error_of(body) or f"HTTP {exc.code} {exc.reason}"
            if exc.code == 400:
                raise InputError(f"Prometheus at {self.url} refused the query: {detail}") from None
            if exc.code == 404:
                raise RunFailure(f"{self.url} has no Prometheus API ({path}: HTTP 404): is this the Prometheus "
                                 "server's address?") from None
            raise RunFailure(f"Prometheus at {self.url} failed the query: {detail}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RunFailure(f"Prometheus at {self.url} cannot be reached: {reason} (a cluster's: kubectl -n "
                             "monitoring port-forward svc/<prometheus service> 9090)") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise RunFailure(f"{self.url} answered {path} with something other than the Prometheus API's JSON") \
                from None
        if not isinstance(data, dict) or data.get("status") != "success":
            raise RunFailure(f"Prometheus at {self.url} failed the query: {_error_of(body) or 'no status'}")
        return data.get("data") or {}

    def query_range(self, query: str, start: float, end: float, step_s: float) -> list[Series]:
        """``query`` evaluated at ``start``, ``start + step``, ... up to ``end`` (Prometheus' own alignment: the points
        are exactly these instants); a matrix of series."""
        if (end - start) / step_s + 1 > MAX_POINTS:
            raise InputError(f"{(end - start) / step_s:.0f} points per series; Prometheus answers at most "
                             f"{MAX_POINTS}: widen --window or shorten --range")
        data = self._get("/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step_s:g}"})
        if data.get("resultType") != "matrix":
            raise RunFailure(f"Prometheus at {self.url} answered a range query with {data.get('resultType')!r}, "
                             "not a matrix")
        out = []
        for item in data.get("result", []):
            points = [(float(t), float(v)) for t, v in item.get("values", [])]
            out.append(Series(item.get("metric", {}), [(t, v) for t, v in points if math.isfinite(v)]))
        return out


def _error_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("error"):
        return " ".join(str(data["error"]).split())
    return None

"""Which Kubernetes versions EKS supports when, from the dated calendar in ``infra/data/eks_versions.json``."""
from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

CALENDAR_PATH = Path(__file__).parent / "data" / "eks_versions.json"
Support = Literal["standard", "extended", "ended"]


class EksVersion(BaseModel):
    released: dt.date
    end_of_standard_support: dt.date
    end_of_extended_support: dt.date
    cluster_autoscaler_image: str
    source: str


@cache
def calendar() -> dict[str, EksVersion]:
    data = json.loads(CALENDAR_PATH.read_text())
    return {v: EksVersion.model_validate(entry) for v, entry in data["versions"].items()}


def support_on(version: str, day: dt.date) -> Support:
    """The support ``version`` has on ``day`` (the end dates are the last days of each period)."""
    v = calendar()[version]
    if day <= v.end_of_standard_support:
        return "standard"
    return "extended" if day <= v.end_of_extended_support else "ended"


def require_standard_support(settings, day: dt.date) -> None:
    """Refuse a stack whose version is past EKS standard support on ``day``, unless it allows extended support."""
    from infra.settings import InfraInputError

    version = settings.kubernetes_version
    support = support_on(version, day)
    if support == "standard" or (support == "extended" and settings.allow_extended_support):
        return
    current = [(v, e) for v, e in calendar().items() if support_on(v, day) == "standard"]
    hint = (f"; use {current[-1][0]} (standard until {current[-1][1].end_of_standard_support})" if current
            else "; no version in infra/data/eks_versions.json is: update it")
    end = calendar()[version].end_of_standard_support
    raise InfraInputError(
        f"gpufleet:kubernetesVersion: {version} left EKS standard support on {end} ({support} support on {day}: "
        f"billed per cluster hour at the extended rate, then upgraded by EKS){hint}, or set "
        f"gpufleet:allowExtendedSupport")

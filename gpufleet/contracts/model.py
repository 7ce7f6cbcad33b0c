"""The base of every contract model."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are errors (a misspelt key in a hand-edited file is reported, not ignored), and so are NaN and
    infinities (JSON has neither, but ``1e999`` parses as one): no impossible number reaches the numerics."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

"""The base of every contract model."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are errors (a misspelt key in a hand-edited file is reported, not ignored), and so are NaN and
    infinities (JSON has neither, but ``1e999`` parses as one): no impossible number reaches the numerics."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def default_of(model: type[BaseModel], field: str):
    """A field's declared default (a factory's value where it has one), for a command-line option that must not
    declare its own."""
    return model.model_fields[field].get_default(call_default_factory=True)

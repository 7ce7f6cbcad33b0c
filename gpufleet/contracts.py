"""Reading and writing the contract files (profile, stress result, plan, catalog): the same rules for each.

A reader turns every defect into one line naming the file and the first offending field, raised as the calling
stage's own input error; a writer replaces the file atomically, so a reader never sees half of one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def first_error(path: Path | str, exc: ValidationError) -> str:
    """One line naming the file and the first offending field of a pydantic error."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{path}: field {where}: {err['msg']}"


def validate(model: type[M], data: object, origin: Path | str, error: type[Exception]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(first_error(origin, exc)) from None


def read_json(path: Path | str, what: str, error: type[Exception]) -> object:
    """The parsed JSON of ``path``; ``error`` with one line if it cannot be read or is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to a sibling temporary file and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

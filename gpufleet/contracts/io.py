"""Reading and writing the contract files: the same rules for each.

A reader turns every defect into one line naming the file and the first offending field, raised as
:class:`gpufleet.errors.ContractError` (or the error given); a writer replaces the file atomically, so a reader
never sees half of one, and a failed write leaves the old file as it was.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gpufleet.errors import ContractError, InputError

M = TypeVar("M", bound=BaseModel)


def first_error(path: Path | str, exc: ValidationError) -> str:
    """One line naming the file and the first offending field of a pydantic error."""
    err = exc.errors()[0]
    message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    where = ".".join(str(p) for p in err["loc"])
    return f"{path}: field {where}: {message}" if where else f"{path}: {message}"


def validate(model: type[M], data: object, origin: Path | str, error: type[Exception] = ContractError) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(first_error(origin, exc)) from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: Path | str, what: str, error: type[Exception] = ContractError) -> object:
    """The parsed JSON of ``path``; ``error`` with one line if it cannot be read or is not JSON.

    ``NaN`` and ``Infinity`` (which Python's json accepts and strict JSON does not) are refused, so an impossible
    value never reaches the numerics downstream.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder, expected a {what} file")
    try:
        return json.loads(path.read_text(), parse_constant=_no_constant)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a {what}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError as exc:
        raise error(f"{path}: {exc}") from None


def read_contract_json(model: type[BaseModel], path: Path | str, what: str,
                       error: type[Exception] = ContractError) -> object:
    """The parsed JSON of a file read as contract ``model``; ``error`` with one line saying what the file is when it
    is another gpufleet contract (a stress result given for a plan), before any check of versions or fields."""
    data = read_json(path, what, error)
    # The table of contracts imports every contract module, each of which imports this one: look it up at read time.
    from gpufleet.contracts.kinds import wrong_kind
    problem = wrong_kind(data, model)
    if problem is not None:
        raise error(f"{path} {problem}")
    return data


def read_model(model: type[M], path: Path | str, what: str, error: type[Exception] = ContractError) -> M:
    """Read and validate one contract file."""
    return validate(model, read_contract_json(model, path, what, error), path, error)


def check_output_file(path: Path | str, what: str, error: type[Exception] = InputError) -> Path:
    """``path`` can be written as a file: its folder exists (or can be made under an existing one) and is writable,
    and ``path`` is not a folder. Checked before long work starts, so nothing runs only to fail at the end."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; give a file name for the {what}")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise error(f"{path}: cannot write the {what}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{path}: cannot write the {what}: {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise error(f"{path}: cannot write the {what}: the file is read-only")
    _try_writing(path.parent, path, what, error)
    return path


def check_output_dir(path: Path | str, what: str, error: type[Exception] = InputError) -> Path:
    """``path`` can be used as an output folder: it is one, or can be made under an existing writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path}: is a file; give a folder for the {what}")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise error(f"{path}: cannot make the {what} folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"{path}: cannot write the {what}: {existing} is not writable")
    _try_writing(path, path, what, error)
    return path


def _try_writing(folder: Path, path: Path, what: str, error: type[Exception]) -> None:
    """Make what is missing of ``folder``, create and remove a file in it, then remove the folders it made.

    Permission bits cannot answer this: ``os.access`` says yes to root on ``/proc``, and nothing but trying says
    whether a folder can be made there. Whatever the outcome, the file system is left as it was found, so a
    refused run leaves nothing behind.
    """
    made: list[Path] = []
    try:
        for folder_ in reversed([folder, *folder.parents]):
            if not folder_.exists():
                try:
                    folder_.mkdir()
                except FileExistsError:
                    continue  # another run made it meanwhile (two runs writing beside each other): it is theirs
                made.append(folder_)
        fd, probe = tempfile.mkstemp(prefix=".gpufleet-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{path}: cannot write the {what}: {exc.strerror or exc}") from None
    finally:
        for folder_ in reversed(made):
            try:
                folder_.rmdir()
            except OSError:
                pass


def _nearest_existing(path: Path) -> Path:
    path = path if str(path) else Path(".")
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``; on failure nothing changes.

    The file gets the mode any program's new file gets, 0666 less the user's umask, not ``mkstemp``'s 0600: a plan
    or a report is meant to be read by others. The kernel applies the umask at ``open``, so no process-wide
    ``os.umask`` call (which would race other threads) is needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


"""The error rule every gpufleet command line follows, in one place.

* :class:`InputError`: the user can fix the input (a flag, a file, a combination). One line, exit status 2.
* :class:`RunFailure`: the input was fine but something at run time failed (a server went away, AWS throttled past
  the retries, Triton would not start). One line, exit status 1.
* :class:`SetupError`: the installation lacks what the command needs (an optional extra of ``pyproject.toml``). One
  line naming the extra, exit status 2: like bad input, it is refused before any work and fails the same way every
  time until the user changes something; exit 1 would say a run was tried and failed, which a retry might cure.
* A gate (``infra render``, a policy check, a schema check) that finds a problem exits 1 by ``typer.Exit(1)``.

Each stage derives its own input error from :class:`InputError`, so a reader in :mod:`gpufleet.contracts` can raise
:class:`ContractError` and every CLI handles it the same way.
"""
from __future__ import annotations

EXIT_FAILURE = 1
EXIT_INPUT = 2


class GpufleetError(Exception):
    """Base of the errors a CLI turns into one stderr line; ``exit_status`` says which status."""

    exit_status = EXIT_FAILURE


class InputError(GpufleetError, ValueError):
    """Input that cannot be acted on; the message is one line naming what and where."""

    exit_status = EXIT_INPUT


class ContractError(InputError):
    """A contract file (profile, stress result, plan, calibration, catalog, engine sidecar) that cannot be used."""


class SetupError(GpufleetError):
    """The command needs an optional extra that is not installed: one line naming it and the command that adds it."""

    exit_status = EXIT_INPUT


class RunFailure(GpufleetError):
    """A failure at run time, not caused by the input: the message is one line saying what failed."""

    exit_status = EXIT_FAILURE

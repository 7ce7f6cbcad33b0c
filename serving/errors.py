"""The serving stage's input error (exit status 2 under :mod:`gpufleet.errors`' rule)."""
from gpufleet.errors import InputError


class ServingInputError(InputError):
    """Bad input (a file, a flag, a combination); the message is one line naming what and where."""

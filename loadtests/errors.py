"""The load-test stage's input error (exit status 2 under :mod:`gpufleet.errors`' rule)."""
from gpufleet.errors import InputError


class LoadTestInputError(InputError):
    """Bad input (a rate, a host, a model, a file); the message is one line naming what and where."""

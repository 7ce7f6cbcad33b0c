"""The one base class of input errors in ``loadtests``: the CLI turns each into one stderr line and exit status 2."""


class LoadTestInputError(ValueError):
    """Bad input (a rate, a host, a model, a file); the message is one line naming what and where."""

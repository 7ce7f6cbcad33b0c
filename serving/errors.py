"""The one base class of input errors in ``serving``: the CLI turns each into one stderr line and exit status 2."""


class ServingInputError(ValueError):
    """Bad input (a file, a flag, a combination); the message is one line naming what and where."""

"""How every gpufleet command line ends: input errors as one stderr line and exit status 2, never a traceback."""
from __future__ import annotations

import sys

import typer


def run_app(app: typer.Typer, argv: list[str] | None, prog: str,
            input_errors: tuple[type[BaseException], ...]) -> int:
    """Run a Typer app without its own exit handling and return the process exit status.

    ``input_errors`` are the library's bad-input exceptions; their message is printed as is. Click's usage errors
    (unknown option, missing argument, bad value) are matched by shape, because Typer vendors Click in recent
    releases and the class is not importable under one name.
    """
    try:
        app(args=argv, standalone_mode=False)
    except input_errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
            message = exc.format_message()
            if message:  # an empty one follows the help text printed for a bare command
                print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        raise
    return 0

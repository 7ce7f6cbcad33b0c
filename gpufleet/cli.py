"""How every gpufleet command line ends (the rule is :mod:`gpufleet.errors`): bad input is one stderr line and exit
status 2, a failure at run time one line and exit 1, a gate's finding the gate's own non-zero status; never a
traceback."""
from __future__ import annotations

import sys

import typer

from gpufleet.errors import EXIT_INPUT, GpufleetError


def run_app(app: typer.Typer, argv: list[str] | None, prog: str) -> int:
    """Run a Typer app without its own exit handling and return the process exit status.

    Click's usage errors (unknown option, missing argument, bad value) are matched by shape, because Typer vendors
    Click in recent releases and the class is not importable under one name. With ``standalone_mode=False`` Click
    *returns* the code of an ``Exit`` rather than raising it; that code is the command's status.
    """
    try:
        status = app(args=argv, standalone_mode=False)
    except GpufleetError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_status
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == EXIT_INPUT:
            message = exc.format_message()
            if message:  # an empty one follows the help text printed for a bare command
                print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
            return EXIT_INPUT
        raise
    return status if isinstance(status, int) else 0


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


# Wide enough that no table is cut or folded when stdout is a file or a pipe (rich would otherwise assume 80).
PIPE_WIDTH = 1000


def stdout_console():
    """Rich console for a command's results: the terminal's width on a terminal; in a pipe or file, wide enough that
    no column is truncated, so `planner recommend ... > plan.txt` keeps every figure."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH, soft_wrap=False)


def plural(n: int, word: str) -> str:
    """``1 replica``, ``2 replicas``: a count and its noun, for what a person reads."""
    return f"{n} {word}{'' if n == 1 else 's'}"

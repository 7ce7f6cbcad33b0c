"""How every gpufleet command line ends (the rule is :mod:`gpufleet.errors`): bad input is one stderr line and exit
status 2, a failure at run time one line and exit 1, a gate's finding the gate's own non-zero status; never a
traceback."""
from __future__ import annotations

import importlib.util
import sys

import typer

from gpufleet.errors import EXIT_INPUT, GpufleetError, SetupError

# The top-level import names each optional extra of pyproject.toml brings, so that a command run without its extra
# names the extra to install instead of ending in a traceback. `google` (protobuf) and `grpc` (grpcio) come with
# tritonclient[grpc]. tests/test_cli_setup.py checks this table against pyproject.toml and the installed
# distributions' file lists. A module two extras share is named by the extra of the command that needs it.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serving": ("onnx", "onnxruntime", "tritonclient", "google", "grpc", "pytriton", "PIL"),
    "loadtests": ("locust", "hdrh", "prometheus_client", "tritonclient", "google", "grpc"),
    "infra": ("pulumi", "pulumi_aws", "pulumi_kubernetes", "kubernetes_validate", "cfnlint"),
    "torch": ("torch",),
    "gpu": ("tensorrt", "pycuda"),
}


def missing_extra(module: str, prog: str) -> SetupError | None:
    """The one-line error for an optional module that is not installed; None for any other module (a bug, then)."""
    top = module.split(".")[0]
    extras = [extra for extra, modules in EXTRA_MODULES.items() if top in modules]
    if not extras:
        return None
    extra = prog if prog in extras else extras[0]
    return SetupError(f"this command needs gpufleet's '{extra}' extra, which is not installed (no module '{top}'): "
                      f"pip install -e '.[{extra}]' from the gpufleet checkout")


def require_extra(extra: str, prog: str) -> None:
    """Refuse to start when ``extra``'s modules are not importable: for work whose imports happen in other processes
    (Locust's), where a missing module would surface as a child's traceback."""
    for module in EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise missing_extra(module, prog)


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
    except ModuleNotFoundError as exc:
        setup = missing_extra(exc.name or "", prog)
        if setup is None:
            raise
        print(f"{prog}: error: {setup}", file=sys.stderr)
        return setup.exit_status
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

"""The ``mobile-peft`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from rich.text import Text

from ..core.errors import MobilePeftError
from . import bench, build, demo, eval, export, finetune, fleet, inspect, plan, profile, train
from ._terminal import native_stderr_filtered
from ._ui import err_console

# One module per subcommand, each with add_parser(sub) and run(args).
COMMANDS = (build, finetune, demo, export, inspect, train, eval, profile, plan, bench, fleet)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobile-peft", description="On-device fine-tuning of mobile vision-language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log progress from the library (INFO) and show third-party output.")
    parser.add_argument("--debug", action="store_true", help="Show the Python traceback of any error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


# Libraries whose log records are theirs, not the user's: torchao's "Failed to load ...so",
# torch's pytree deprecation lines, coremltools' version notices. Shown with -v.
_THIRD_PARTY_LOGGERS = ("torch", "torchao", "executorch", "coremltools", "onnxruntime", "onnx", "transformers", "matplotlib", "PIL",
                        "flwr", "ray")


def _own_the_terminal(verbose: bool) -> None:
    """Only the product's own output reaches the terminal unless ``-v``: third-party warnings and
    log records are dropped at their source (the heavy libraries are imported later, by the command
    that needs them, so this runs first)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("TORCH_LOGS", "-all")  # torch resets its loggers from this on import
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # TracerWarnings, deprecations and notices of the libraries (the SDK itself logs, never warns).
    warnings.filterwarnings("ignore")


def _error(message: str) -> None:
    # Text, not markup: messages quote user input and native log lines, which may hold [brackets].
    err_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _own_the_terminal(args.verbose)
    quiet = contextlib.nullcontext() if args.verbose else native_stderr_filtered()
    try:
        with quiet:
            return int(args.run(args) or 0)
    except MobilePeftError as exc:
        if args.debug:
            raise
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; checkpoints written so far are kept (resume with --resume).", highlight=False)
        return 130
    except Exception as exc:  # nothing reaches the user as a raw traceback unless asked for
        if args.debug:
            raise
        _error(f"unexpected {type(exc).__name__}: {exc}\n(a bug in mobile-peft, or an input it does not check yet: "
               "run again with --debug for the traceback and report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())

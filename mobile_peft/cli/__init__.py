"""The ``mobile-peft`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from ..core.errors import MobilePeftError
from . import bench, build, demo, eval, export, finetune, inspect, plan, profile, train
from ._ui import err_console

# One module per subcommand, each with add_parser(sub) and run(args).
COMMANDS = (build, finetune, demo, export, inspect, train, eval, profile, plan, bench)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobile-peft", description="On-device fine-tuning of mobile vision-language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log progress from the library (INFO).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if not args.verbose:
        # torch.export / ExecuTorch emit deprecation chatter from their own internals on every
        # export; it tells a user of this command nothing they can act on.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except MobilePeftError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())

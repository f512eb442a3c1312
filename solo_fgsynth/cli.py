"""The ``solo-fgsynth`` command: one entry point that dispatches to each subcommand's module.

A command's module is imported only when that command runs, and ``import solo_fgsynth`` loads
neither solo-learn nor torch (see :mod:`solo_fgsynth._solo`), so ``--help`` and a usage error
answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from solo_fgsynth.errors import DEBUG_ENV, UserError, report_user_error

# name -> (module, function, help). Each function takes the remaining argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": (
        "solo_fgsynth.launch.cli",
        "pretrain",
        "pretrain any solo-learn method from a hydra config (--config-path, --config-name)",
    ),
    "linear": (
        "solo_fgsynth.launch.cli",
        "linear",
        "offline linear evaluation of a pretrained checkpoint (solo-learn linear config)",
    ),
    "knn": (
        "solo_fgsynth.launch.cli",
        "knn",
        "kNN evaluation of a pretrained checkpoint (solo-learn knn config)",
    ),
    "benchmark": (
        "solo_fgsynth.benchmark.runner",
        "main",
        "compare fgsynth with stock byol/simclr on equal budgets "
        "(presets: quick, cpu, tuning, full)",
    ),
    "diagnose": (
        "solo_fgsynth.diagnose",
        "main",
        "which feature dims carry fgmarks' label vs its nuisances, and which fgsynth selects",
    ),
    "zoo": (
        "solo_fgsynth.zoo.cli",
        "main",
        "list, inspect, download and export pretrained weights",
    ),
    "doctor": (
        "solo_fgsynth.doctor",
        "main",
        "print the environment for a bug report and what blocks a run, with the fix",
    ),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solo-fgsynth",
        description="Fine-grained SSL from synthesized pairs, on top of solo-learn.",
        epilog="Run 'solo-fgsynth COMMAND --help' for the options of one command. A mistake in "
        "the input ends a command with one line 'solo-fgsynth COMMAND: error: ...' and exit "
        "code 2; --debug (anywhere on the line) prints its traceback too.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error in the input too"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _resolve(name: str) -> Callable[[list[str]], int]:
    module_name, function_name, _ = COMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand, return its exit code; a user's mistake is one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv = [arg for arg in argv if arg != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # read where the error is reported, in this process or a rank
    parser = _build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints usage or the list of valid commands, then exits
    command, rest = argv[0], argv[1:]
    try:
        return int(_resolve(command)(rest) or 0)
    except UserError as error:  # the one place a user's mistake is printed
        label = (
            f"{command} {rest[0]}" if command == "zoo" and rest[:1] != ["-h"] and rest else command
        )
        return report_user_error(label, error)


if __name__ == "__main__":
    sys.exit(main())

"""The ``solo-fgsynth`` command: one entry point that dispatches to each subcommand's module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from solo_fgsynth._solo import SoloLearnMissingError

# name -> (module, function, help). Each function takes the remaining argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": (
        "solo_fgsynth.launch",
        "pretrain",
        "pretrain any solo-learn method from a hydra config (--config-path, --config-name)",
    ),
    "linear": (
        "solo_fgsynth.launch",
        "linear",
        "offline linear evaluation of a pretrained checkpoint (solo-learn linear config)",
    ),
    "knn": (
        "solo_fgsynth.launch",
        "knn",
        "kNN evaluation of a pretrained checkpoint (solo-learn knn config)",
    ),
    "benchmark": (
        "solo_fgsynth.benchmark",
        "main",
        "compare fgsynth with stock byol/simclr on equal budgets (presets: quick, cpu, tuning, full)",
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
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solo-fgsynth",
        description="Fine-grained SSL from synthesized pairs, on top of solo-learn.",
        epilog="Run 'solo-fgsynth COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _resolve(name: str) -> Callable[[list[str]], int]:
    module_name, function_name, _ = COMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand, return its exit code; a missing solo-learn is a message, not a trace."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints usage or the list of valid commands, then exits
    command, rest = argv[0], argv[1:]
    try:
        return int(_resolve(command)(rest) or 0)
    except SoloLearnMissingError as error:
        print(f"solo-fgsynth {command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The launcher's commands, ``solo-fgsynth pretrain|linear|knn``: arguments first, then the work.

The arguments are parsed before a stage's module is imported (it imports lightning, timm and
solo-learn), so ``--help`` and a usage error answer at once.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from solo_fgsynth._solo import require_solo

# command -> (module under solo_fgsynth.launch, its run function, the help's description)
_STAGES = {
    "pretrain": (
        "pretraining",
        "run_pretrain",
        "Pretrain a solo-learn method from a yaml config.",
    ),
    "linear": (
        "linear_eval",
        "run_linear",
        "Linear evaluation of a pretrained checkpoint (solo-learn linear config).",
    ),
    "knn": ("knn_eval", "run_knn", "Weighted kNN evaluation of a pretrained checkpoint."),
}

_EPILOG = """\
overrides are hydra's: key=value, +new_key=value, ~key. Examples:
  solo-fgsynth pretrain --config-path scripts/pretrain/fgmarks --config-name fgsynth_byol
  solo-fgsynth pretrain -cp scripts/pretrain/custom -cn byol data.train_path=/d/train \\
      data.val_path=/d/val accelerator=cpu devices=2 strategy=ddp
  solo-fgsynth linear -cp scripts/linear/fgmarks -cn linear pretrained_feature_extractor=RUN.ckpt
  solo-fgsynth knn -cp scripts/knn/fgmarks -cn knn pretrained_checkpoint_dir=trained_models/byol/RUN
plugin datasets (fgmarks, cub200, cars, aircraft, imagefolder) are prepared under
$SOLO_FGSYNTH_DATA_DIR (default ~/.cache/solo-fgsynth/data)."""


def _parse(command: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"solo-fgsynth {command}",
        description=_STAGES[command][2],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-path",
        "-cp",
        help="directory of the yaml config (default: the directory part of --config-name, or .)",
    )
    parser.add_argument(
        "--config-name", "-cn", required=True, help="config name in that directory, e.g. byol"
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="hydra overrides")
    args = parser.parse_intermixed_args(list(argv))
    if args.config_path is None:
        name = Path(args.config_name)
        args.config_path, args.config_name = str(name.parent), name.name
    return args


def _command(command: str, argv: Sequence[str]) -> int:
    """Parse ``argv``, compose the config, run the stage; config errors are one line, exit 2."""
    require_solo()
    args = _parse(command, argv)
    from lightning.pytorch.utilities import rank_zero_only

    from solo_fgsynth.launch.config import load_config

    module, function, _ = _STAGES[command]
    action = getattr(importlib.import_module(f"solo_fgsynth.launch.{module}"), function)
    cfg = load_config(args.config_path, args.config_name, args.overrides)
    result = action(cfg)
    if rank_zero_only.rank == 0:
        _report(result)
    return 0


def _report(result: Any) -> None:
    if isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {value}")
    else:
        print(f"last checkpoint: {result}")


def pretrain(argv: list[str]) -> int:
    """``solo-fgsynth pretrain``: pretrain any registered method; prints the last checkpoint."""
    return _command("pretrain", argv)


def linear(argv: list[str]) -> int:
    """``solo-fgsynth linear``: offline linear evaluation; prints the final validation metrics."""
    return _command("linear", argv)


def knn(argv: list[str]) -> int:
    """``solo-fgsynth knn``: weighted kNN of a checkpoint's features; prints acc@1/5 per setting."""
    return _command("knn", argv)

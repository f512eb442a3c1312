"""``solo-fgsynth diagnose CKPT``: which dims carry fgmarks' label, which its nuisances, and
which of them each fgsynth criterion selects (see :mod:`solo_fgsynth.diagnose.analysis`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from solo_fgsynth._io import atomic_write_json, atomic_write_text
from solo_fgsynth.checkpoints import (
    backbone_part,
    load_fitting,
    read_lightning_state,
    read_training_recipe,
)
from solo_fgsynth.data.fgmarks import FGMarksConfig
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.diagnose.analysis import Diagnosis, diagnose, markdown, plot
from solo_fgsynth.errors import UserError
from solo_fgsynth.synth.stats import TRACKED_STATISTICS

__all__ = ["Diagnosis", "diagnose", "main", "write_diagnosis"]


class DiagnoseError(UserError):
    """A checkpoint or recipe the diagnostic cannot use; the message says why."""


def write_diagnosis(diagnosis: Diagnosis, out_dir: Path, title: str = "") -> None:
    """``diagnosis.json``, ``diagnosis.md`` and ``diagnosis.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "diagnosis.json", diagnosis.to_dict())
    atomic_write_text(out_dir / "diagnosis.md", markdown(diagnosis))
    plot(diagnosis, out_dir / "diagnosis.png", title)


def _recipe(args_path: Path) -> dict[str, Any]:
    recipe = read_training_recipe(args_path)
    data = recipe.get("data", {})
    dataset = data.get("source_dataset", data.get("dataset"))
    if dataset != "fgmarks":
        raise DiagnoseError(
            f"{args_path} trained on data.dataset={dataset!r}; the diagnostic needs fgmarks, "
            "the only data whose factors are known"
        )
    return recipe


def _backbone(recipe: dict[str, Any], state: dict[str, torch.Tensor], ckpt: Path) -> nn.Module:
    from solo.methods.base import BaseMethod

    name = recipe["backbone"]["name"]
    if name not in BaseMethod._BACKBONES:
        raise DiagnoseError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(BaseMethod._BACKBONES))}"
        )
    backbone = BaseMethod._BACKBONES[name](
        method=recipe.get("method"), **(recipe["backbone"].get("kwargs") or {})
    )
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
    load_fitting(backbone, backbone_part(state), f"{ckpt} does not fit backbone {name!r}")
    return backbone.eval()


def diagnose_checkpoint(ckpt: Path, args_path: Path | None = None) -> Diagnosis:
    """Load a solo-learn checkpoint trained on fgmarks and diagnose its backbone."""
    recipe = _recipe(args_path or ckpt.parent / "args.json")
    state = read_lightning_state(ckpt)
    backbone = _backbone(recipe, state, ckpt)
    kwargs = recipe.get("method_kwargs", {})
    tracked = None
    if "fgsynth.statistics.variance" in state:
        tracked = {
            name: state[f"fgsynth.statistics.{name}"]
            for name in TRACKED_STATISTICS
            if f"fgsynth.statistics.{name}" in state
        }
    fgmarks = FGMarksConfig.from_mapping(recipe["data"].get("fgmarks"))
    return diagnose(
        backbone,
        fgmarks,
        EvalView.of(recipe["augmentations"][0]),
        tracked=tracked,
        var_fraction=float(kwargs.get("var_fraction", 0.25)),
        cam_fraction=float(kwargs.get("cam_fraction", 0.25)),
        cam_ranking=str(kwargs.get("cam_ranking", "magnitude")),
    )


def main(argv: list[str]) -> int:
    """Parse the arguments, diagnose the checkpoint, write and print the table."""
    parser = argparse.ArgumentParser(
        prog="solo-fgsynth diagnose",
        description="Score every feature dim of an fgmarks-trained backbone against the label "
        "and each nuisance (validation split), and test whether fgsynth's criteria select the "
        "nuisance-dominated dims more often than random selection does.",
    )
    parser.add_argument("checkpoint", type=Path, help="a solo-learn .ckpt trained on fgmarks")
    parser.add_argument("--args", type=Path, default=None, help="its args.json (default: beside)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default: CKPT_DIR/diagnose)"
    )
    options = parser.parse_args(argv)
    from solo_fgsynth._solo import require_solo

    require_solo()
    diagnosis = diagnose_checkpoint(options.checkpoint, options.args)
    out_dir = options.out or options.checkpoint.parent / "diagnose"
    write_diagnosis(diagnosis, out_dir, title=options.checkpoint.stem)
    print(markdown(diagnosis), end="")
    print(f"written to {out_dir}")
    return 0

"""Run by ``torchrun`` from tests/test_torchrun.py: pretrain from a config, then save this rank's
model state, so that the test can compare what every rank ends with.

Usage: torchrun --nproc_per_node=N tests/torchrun_pretrain.py OUT_DIR CONFIG_DIR CONFIG_NAME
[OVERRIDE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from solo_fgsynth.launch import load_config, run_pretrain


class SaveRankState(Callback):
    """At the end of training, write ``rank<r>.pt``: this rank's full model state on CPU."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = {key: value.detach().cpu() for key, value in pl_module.state_dict().items()}
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")


def main(argv: list[str]) -> None:
    """Pretrain as ``solo-fgsynth pretrain`` does, with the rank-state callback added."""
    out_dir, config_dir, config_name, *overrides = argv
    cfg = load_config(config_dir, config_name, overrides)
    run_pretrain(cfg, extra_callbacks=[SaveRankState(Path(out_dir))])


if __name__ == "__main__":
    main(sys.argv[1:])

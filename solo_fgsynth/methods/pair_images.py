"""A small grid of synthesized pairs, sent to whatever logger the user configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from solo_fgsynth.synth import pairs_grid, save_pairs_png

MAX_PAIRS = 8
TAG = "train_synth_pairs"


def log_pair_grid(
    module: LightningModule,
    images: Tensor,
    decoded: Tensor,
    decoded_perturbed: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """Log up to 8 rows of (image, D(z), D(z'), difference) on rank zero.

    TensorBoard and wandb get an image; any other logger with a ``log_dir`` (Lightning's
    CSV logger) gets ``pairs/epoch=E.png`` in that folder.
    """
    if module.global_rank != 0 or not module.loggers:
        return
    grid = pairs_grid(
        images[:MAX_PAIRS], decoded[:MAX_PAIRS], decoded_perturbed[:MAX_PAIRS], mean, std
    )
    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(TAG, grid, module.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=TAG, images=[grid], step=module.global_step)
        elif logger.log_dir is not None:
            path = Path(logger.log_dir) / "pairs" / f"epoch={module.current_epoch}.png"
            save_pairs_png(grid, path)

"""A trained fgsynth cell's synthesized pairs: their numbers, the decoder's headroom, a picture.

Pairs are measured twice, labelled: as training makes them (``train``: the train-mode backbone,
BatchNorm statistics left alone, on validation images under the training augmentation, the
kind of input the decoder learned from) and on plain validation images through the eval-mode
backbone (``eval``). ``recon_headroom`` is what a fresh decoder of the same shape reaches at
8 px on the cell's frozen train-mode features (:func:`fit_fresh_decoder`, budget below); its
reconstructions are the picture's last column, so a reader sees what the features allow.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torch.utils.data import Dataset

from solo_fgsynth._io import atomic_write_bytes
from solo_fgsynth.synth import (
    FGSynth,
    fit_fresh_decoder,
    frozen_batchnorm_statistics,
    measure_pairs,
    pairs_grid,
    recon_r2,
    save_pairs_png,
)
from solo_fgsynth.synth.measure import GRID_COLUMNS, REFERENCE_COLUMN
from solo_fgsynth.synth.quality import POOLED_SIZE

MEASURED_IMAGES = 256
HEADROOM_TRAIN_IMAGES = 2048
HEADROOM_STEPS = 600
HEADROOM_LR = 1e-3
ENCODE_BATCH = MEASURED_IMAGES  # the measured images in one batch, as measure_pairs encodes them
GRID_ROWS = 8
PANEL_COLUMNS = (*GRID_COLUMNS, REFERENCE_COLUMN)
LABEL_HEIGHT = 16


def evenly_spaced(dataset: Dataset, count: int) -> list[int]:
    """``count`` indexes spread evenly over ``dataset`` (every class represented)."""
    return np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int).tolist()


def stacked_images(dataset: Any, picks: list[int], view: Callable | None) -> Tensor:
    """The picked images, each through ``view`` (a PIL -> tensor transform) when given."""
    if view is None:
        return torch.stack([dataset[index][0] for index in picks])
    return torch.stack([view(dataset.loader(dataset.samples[index][0])) for index in picks])


@torch.no_grad()
def train_mode_features(backbone: nn.Module, images: Tensor) -> Tensor:
    """Pooled features of the train-mode backbone in batches, its BatchNorm statistics kept."""
    backbone.train()
    with frozen_batchnorm_statistics(backbone):
        return torch.cat([backbone(batch).float() for batch in images.split(ENCODE_BATCH)])


def measure_cell_pairs(
    backbone: nn.Module,
    synth: FGSynth,
    val_images: Any,
    train_images: Any,
    train_view: Callable,
    png_path: Path,
    headroom_steps: int = HEADROOM_STEPS,
) -> dict[str, Any]:
    """The pairs' numbers in train and eval mode, the decoder's headroom; writes ``pairs.png``.

    ``val_images`` and ``train_images`` are torchvision image folders whose transform is the
    plain eval view (normalised with ImageNet statistics); ``train_view`` is the training
    augmentation's view (PIL -> normalised tensor). ``pairs.png`` shows the train-mode pairs
    and, last, the fresh decoder's reconstructions of the same images.
    ``headroom_steps``: the fresh decoder's Adam steps (a preset's ``eval.headroom_steps``).
    """
    synth = synth.cpu().float().eval()
    backbone = backbone.cpu().float()
    generator = torch.Generator().manual_seed(0)
    picks = evenly_spaced(val_images, MEASURED_IMAGES)
    augmented = stacked_images(val_images, picks, train_view)
    backbone.train()
    with frozen_batchnorm_statistics(backbone):
        train_mode = measure_pairs(synth, backbone, augmented, generator)
    backbone.eval()
    plain = stacked_images(val_images, picks, None)
    eval_mode = measure_pairs(synth, backbone, plain, generator)
    headroom_picks = evenly_spaced(train_images, HEADROOM_TRAIN_IMAGES)
    headroom_images = stacked_images(train_images, headroom_picks, train_view)
    fresh = fit_fresh_decoder(
        train_mode_features(backbone, headroom_images),
        headroom_images,
        width=synth.config.decoder_width,
        steps=headroom_steps,
        lr=HEADROOM_LR,
    )
    with torch.no_grad():
        fresh_decoded = fresh(train_mode_features(backbone, augmented))
    headroom = recon_r2(fresh_decoded, augmented, POOLED_SIZE)
    backbone.eval()
    rows = np.linspace(0, len(picks) - 1, min(GRID_ROWS, len(picks))).astype(int)
    grid = pairs_grid(
        augmented[rows],
        train_mode.decoded[rows],
        train_mode.decoded_perturbed[rows],
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        reference=fresh_decoded[rows],
    )
    save_pairs_png(grid, png_path)
    numbers = dict(train_mode.numbers())
    numbers["recon_headroom"] = headroom
    numbers["recon_headroom_share"] = train_mode.recon_r2_8px / headroom if headroom > 0 else None
    numbers["eval_mode"] = eval_mode.numbers()
    numbers["measured_images"] = len(picks)
    numbers["headroom_budget"] = {
        "train_images": len(headroom_picks),
        "steps": headroom_steps,
        "lr": HEADROOM_LR,
        "optimizer": "adam",
    }
    return numbers


def pairs_panel(grids: dict[str, Path], path: Path, min_height: int = 400) -> None:
    """Put each cell's ``pairs.png`` side by side under its name; nothing when there is none."""
    pictures = {cell: Image.open(p).convert("RGB") for cell, p in grids.items() if p.exists()}
    if not pictures:
        return
    scale = max(1, -(-min_height // min(p.height for p in pictures.values())))
    pictures = {
        cell: p.resize((p.width * scale, p.height * scale), Image.Resampling.NEAREST)
        for cell, p in pictures.items()
    }
    width = sum(p.width for p in pictures.values()) + 8 * (len(pictures) - 1)
    height = LABEL_HEIGHT + max(p.height for p in pictures.values())
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    left = 0
    for cell, picture in pictures.items():
        draw.text((left + 2, 2), f"{cell}: {' | '.join(PANEL_COLUMNS)}", fill="black")
        panel.paste(picture, (left, LABEL_HEIGHT))
        left += picture.width + 8
    buffer = io.BytesIO()
    panel.save(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())

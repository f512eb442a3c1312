"""The synthesized pairs of a trained fgsynth cell: their size on validation images, a picture.

Ratios are measured on eval-mode features of validation images (not the augmented train-mode
views the statistics come from), with the trained decoder: what the encoder was asked to
ignore, on data it did not train on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import Dataset

from solo_fgsynth._io import atomic_write_bytes
from solo_fgsynth.synth import FGSynth, measure_pairs, pairs_grid, save_pairs_png

MEASURED_IMAGES = 64
GRID_ROWS = 8
LABEL_HEIGHT = 16


@torch.no_grad()
def measure_cell_pairs(
    backbone: nn.Module, synth: FGSynth, dataset: Dataset, png_path: Path
) -> dict[str, float]:
    """``pair_feature_ratio`` and ``pair_diff_ratio`` on validation images; writes ``pairs.png``.

    ``dataset`` yields ``(normalized image, label)`` with ImageNet statistics; images are
    spread evenly over it, so every class is represented.
    """
    picks = np.linspace(0, len(dataset) - 1, min(MEASURED_IMAGES, len(dataset))).astype(int)
    images = torch.stack([dataset[int(index)][0] for index in picks])
    synth = synth.cpu().float().eval()
    features = backbone(images)
    measured = measure_pairs(synth, features, generator=torch.Generator().manual_seed(0))
    rows = np.linspace(0, len(images) - 1, min(GRID_ROWS, len(images))).astype(int)
    grid = pairs_grid(
        images[rows],
        measured.decoded[rows],
        measured.decoded_perturbed[rows],
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
    )
    save_pairs_png(grid, png_path)
    return measured.ratios()


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
        draw.text((left + 2, 2), f"{cell}: image | D(z) | D(z') | difference", fill="black")
        panel.paste(picture, (left, LABEL_HEIGHT))
        left += picture.width + 8
    buffer = io.BytesIO()
    panel.save(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())

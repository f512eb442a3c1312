"""How large a synthesized pair is, next to two different images, and a picture of pairs.

A positive pair should be closer than two different images: ``pair_feature_ratio`` below 1,
and ``pair_diff_ratio`` (the same in image space, on decoded images) around 0.2-0.6.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from solo_fgsynth._io import atomic_write_bytes

if TYPE_CHECKING:
    from solo_fgsynth.synth.synthesizer import FGSynth

GRID_COLUMNS = ("image", "D(z)", "D(z')", "difference")


def _mean_distance_between_rows(rows: Tensor, p: float) -> Tensor:
    """Mean distance over all pairs i != j of ``rows`` (flattened per row)."""
    flat = rows.detach().float().flatten(1)
    if flat.shape[0] < 2:
        raise ValueError(f"{flat.shape[0]} rows: random pairs i != j need at least 2")
    distances = torch.cdist(flat[None], flat[None], p=p)[0]
    count = flat.shape[0] * (flat.shape[0] - 1)
    return distances.sum() / count


def _pair_ratio(batch: Tensor, originals: Tensor, perturbed: Tensor, p: float) -> float:
    if originals.shape != perturbed.shape:
        raise ValueError(
            f"originals {tuple(originals.shape)} and perturbed {tuple(perturbed.shape)} differ"
        )
    pair = (originals.detach().float() - perturbed.detach().float()).flatten(1)
    distance = pair.norm(p=p, dim=1).mean()
    return float(distance / _mean_distance_between_rows(batch, p))


def pair_feature_ratio(features: Tensor, perturbed: Tensor, rows: Tensor | None = None) -> float:
    """mean ||z - z'|| over the pairs / mean ||z_i - z_j|| over all pairs i != j of the batch.

    ``perturbed`` holds ``z'`` of ``rows`` of ``features`` (default: every row).
    """
    originals = features if rows is None else features[rows]
    return _pair_ratio(features, originals, perturbed, p=2.0)


def pair_diff_ratio(
    decoded: Tensor, decoded_perturbed: Tensor, rows: Tensor | None = None
) -> float:
    """mean|D(z) - D(z')| over the pairs / mean|D(z_i) - D(z_j)| over all pairs i != j.

    ``decoded`` is ``D(z)`` of the whole batch; ``decoded_perturbed`` is ``D(z')`` of ``rows``.
    """
    originals = decoded if rows is None else decoded[rows]
    return _pair_ratio(decoded, originals, decoded_perturbed, p=1.0)


def pairs_grid(
    images: Tensor,
    decoded: Tensor,
    decoded_perturbed: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """One row per pair: the image, ``D(z)``, ``D(z')`` and their amplified difference.

    Inputs are normalized images (N x 3 x H x W); ``mean``/``std`` undo the normalization.
    The difference is ``|D(z) - D(z')|`` averaged over colour, scaled so the largest value in
    the grid is white: it shows where the pair differs, not how much.
    """
    if not images.shape == decoded.shape == decoded_perturbed.shape:
        raise ValueError(
            f"images {tuple(images.shape)}, D(z) {tuple(decoded.shape)} and D(z') "
            f"{tuple(decoded_perturbed.shape)} must have one shape"
        )
    shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    spread = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def to_pixels(batch: Tensor) -> Tensor:
        return (batch.detach().float().cpu() * spread + shift).clamp(0, 1)

    difference = (decoded.detach().float() - decoded_perturbed.detach().float()).abs().cpu()
    difference = difference.mean(dim=1, keepdim=True)
    difference = (difference / difference.max().clamp_min(1e-12)).expand_as(images.cpu())
    columns = [to_pixels(images), to_pixels(decoded), to_pixels(decoded_perturbed), difference]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)


def save_pairs_png(grid: Tensor, path: Path) -> None:
    """Write a :func:`pairs_grid` image to ``path`` as PNG, atomically."""
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())


@dataclass(frozen=True)
class PairMeasurement:
    """Both ratios, and the decoded pairs they were measured on (for :func:`pairs_grid`)."""

    pair_feature_ratio: float
    pair_diff_ratio: float
    decoded: Tensor
    decoded_perturbed: Tensor

    def ratios(self) -> dict[str, float]:
        """The two ratios by name, as recorded in results and logs."""
        return {
            "pair_feature_ratio": self.pair_feature_ratio,
            "pair_diff_ratio": self.pair_diff_ratio,
        }


@torch.no_grad()
def measure_pairs(
    synth: FGSynth, features: Tensor, generator: torch.Generator | None = None
) -> PairMeasurement:
    """Synthesize ``z'`` for every row of ``features`` as training would, decode, measure both.

    Meant for held-out images through the trained encoder (eval mode) and decoder.
    """
    z = features.detach()
    perturbed, _ = synth.perturb(z, generator=generator)
    decoded = synth.decoder(z)
    decoded_perturbed = synth.decoder(perturbed)
    return PairMeasurement(
        pair_feature_ratio(z, perturbed),
        pair_diff_ratio(decoded, decoded_perturbed),
        decoded,
        decoded_perturbed,
    )

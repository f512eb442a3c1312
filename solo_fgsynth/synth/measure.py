"""Measuring a trained FGSynth's pairs through its encoder, a decoder's headroom, a picture.

The numbers themselves are the plain functions of :mod:`solo_fgsynth.synth.quality`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.utils import make_grid, save_image

from solo_fgsynth._io import atomic_write_bytes
from solo_fgsynth.synth.decoder import FeatureDecoder, reconstruction_loss
from solo_fgsynth.synth.quality import (
    POOLED_SIZE,
    pair_diff_ratio,
    pair_feature_ratio,
    pair_selectivity,
    recon_r2,
    reencode_correlation,
)
from solo_fgsynth.synth.synthesizer import FGSynth

GRID_COLUMNS = ("image", "D(z)", "D(z')", "difference")
REFERENCE_COLUMN = "fresh D(z)"
DIFFERENCE_FLOOR = 1e-4  # in normalized units: under it a pair's difference is round-off


def pairs_grid(
    images: Tensor,
    decoded: Tensor,
    decoded_perturbed: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    reference: Tensor | None = None,
) -> Tensor:
    """One row per pair: the image, ``D(z)``, ``D(z')`` and their amplified difference.

    Inputs are normalized images (N x 3 x H x W); ``mean``/``std`` undo the normalization.
    The difference is ``|D(z) - D(z')|`` averaged over colour, scaled so the largest value in
    each row is white: it shows where each pair differs, not how much (a pair with a small
    interpolation weight shows its pattern too; a difference of round-off stays black).
    ``reference`` (e.g. a fresh decoder's reconstruction of the same features) adds a fifth
    column: what the features allow, beside what the method's decoder makes of them.
    """
    shapes = [images.shape, decoded.shape, decoded_perturbed.shape]
    if reference is not None:
        shapes.append(reference.shape)
    if any(shape != images.shape for shape in shapes):
        raise ValueError(
            f"images {tuple(images.shape)}, D(z) {tuple(decoded.shape)} and D(z') "
            f"{tuple(decoded_perturbed.shape)}"
            + ("" if reference is None else f" and the reference {tuple(reference.shape)}")
            + " must have one shape"
        )
    shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    spread = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def to_pixels(batch: Tensor) -> Tensor:
        return (batch.detach().float().cpu() * spread + shift).clamp(0, 1)

    difference = (decoded.detach().float() - decoded_perturbed.detach().float()).abs().cpu()
    difference = difference.mean(dim=1, keepdim=True)
    # a floor far above float round-off: a pair decoded to the same image shows black
    largest = difference.amax(dim=(1, 2, 3), keepdim=True).clamp_min(DIFFERENCE_FLOOR)
    difference = (difference / largest).expand_as(images.cpu())
    columns = [to_pixels(images), to_pixels(decoded), to_pixels(decoded_perturbed), difference]
    if reference is not None:
        columns.append(to_pixels(reference))
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)


def save_pairs_png(grid: Tensor, path: Path) -> None:
    """Write a :func:`pairs_grid` image to ``path`` as PNG, atomically."""
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())


@dataclass(frozen=True)
class PairMeasurement:
    """The pairs' numbers, and the decoded pairs they were measured on (for :func:`pairs_grid`).

    ``pair_selectivity_control`` is the same selectivity for pairs that perturb as many
    randomly chosen dims (its null); ``reencode_correlation`` says how well ``E(D(z))`` follows
    ``z`` per dim.
    """

    pair_feature_ratio: float
    pair_diff_ratio: float
    recon_r2: float
    recon_r2_8px: float
    pair_selectivity: float
    pair_selectivity_control: float
    reencode_correlation: float
    selected_dims: int
    decoded: Tensor
    decoded_perturbed: Tensor

    def numbers(self) -> dict[str, float]:
        """Every number by name (all fields but the decoded images), as recorded in results."""
        images = ("decoded", "decoded_perturbed")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in images}


def random_mask_like(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A boolean mask with as many True entries as ``mask``, placed uniformly at random."""
    order = torch.randperm(mask.numel(), generator=generator).to(mask.device)
    control = torch.zeros_like(mask)
    control[order[: int(mask.sum())]] = True
    return control


@torch.no_grad()
def measure_pairs(
    synth: FGSynth,
    encoder: nn.Module,
    images: Tensor,
    generator: torch.Generator | None = None,
) -> PairMeasurement:
    """Encode ``images``, synthesize ``z'`` for every row as training does, decode, re-encode.

    ``encoder`` maps images to pooled features ``z`` (the backbone), in whatever mode the
    caller set: train mode (inside :func:`frozen_batchnorm_statistics`) measures the pairs as
    training makes them. The selectivity's control perturbs as many random dims the same way.
    """
    z = encoder(images).float()
    selection = synth.select()
    perturbed, _ = synth.perturb(z, generator=generator, mask=selection.mask)
    control_mask = random_mask_like(selection.mask, generator)
    control, _ = synth.perturb(z, generator=generator, mask=control_mask)
    decoded = synth.decoder(z)
    decoded_perturbed = synth.decoder(perturbed)
    encoded = encoder(decoded).float()
    selected = int(selection.mask.sum())
    selectivity = control_selectivity = float("nan")
    if 0 < selected < selection.mask.numel():
        selectivity = pair_selectivity(encoded, encoder(decoded_perturbed), selection.mask)
        decoded_control = synth.decoder(control)
        control_selectivity = pair_selectivity(encoded, encoder(decoded_control), control_mask)
    return PairMeasurement(
        pair_feature_ratio=pair_feature_ratio(z, perturbed),
        pair_diff_ratio=pair_diff_ratio(decoded, decoded_perturbed),
        recon_r2=recon_r2(decoded, images),
        recon_r2_8px=recon_r2(decoded, images, POOLED_SIZE),
        pair_selectivity=selectivity,
        pair_selectivity_control=control_selectivity,
        reencode_correlation=reencode_correlation(encoded, z),
        selected_dims=selected,
        decoded=decoded,
        decoded_perturbed=decoded_perturbed,
    )


def fit_fresh_decoder(
    train_features: Tensor,
    train_images: Tensor,
    width: int,
    steps: int = 600,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> FeatureDecoder:
    """A decoder of the method's shape trained by Adam on frozen features, in eval mode.

    ``steps`` batches of ``batch_size`` are drawn (seeded) from the ``train_*`` pairs.
    """
    if train_features.shape[0] != train_images.shape[0] or train_features.shape[0] < 1:
        raise ValueError(
            f"{train_features.shape[0]} training features for {train_images.shape[0]} images"
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = FeatureDecoder(train_features.shape[1], train_images.shape[-1], width=width)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    train_features, train_images = train_features.detach().float(), train_images.detach().float()
    for _ in range(steps):
        rows = torch.randint(0, train_features.shape[0], (batch_size,), generator=generator)
        loss = reconstruction_loss(decoder(train_features[rows]), train_images[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return decoder.eval()


def decoder_headroom(
    train_features: Tensor,
    train_images: Tensor,
    eval_features: Tensor,
    eval_images: Tensor,
    width: int,
    steps: int = 600,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """``recon_r2_8px`` that a fresh decoder reaches on frozen features: what the features allow.

    The decoder is :func:`fit_fresh_decoder`'s on the ``train_*`` pairs, scored on the
    ``eval_*`` pairs.
    """
    decoder = fit_fresh_decoder(train_features, train_images, width, steps, lr, batch_size, seed)
    with torch.no_grad():
        decoded = decoder(eval_features.detach().float())
    return recon_r2(decoded, eval_images, POOLED_SIZE)

"""How good a synthesized pair is, as plain functions of tensors.

A positive pair should be closer than two different images (``pair_feature_ratio`` below 1,
``pair_diff_ratio`` the same in image space); the decoder must reconstruct its inputs
(``recon_r2`` well above 0, the score of the mean image); and the pair's change, re-encoded,
must land in the selected dims more than in the kept ones (``pair_selectivity`` above what as
many random dims give).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POOLED_SIZE = 8
"""The coarse resolution ``recon_r2_8px`` compares at: layout and colours, not texture."""


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


def recon_r2(decoded: Tensor, images: Tensor, pooled_size: int | None = None) -> float:
    """``1 - MSE(D(z), x) / MSE(x_mean, x)``, ``x_mean`` the per-pixel mean image of ``images``.

    0 is what the mean image scores, 1 a perfect reconstruction. With ``pooled_size``, both
    are average-pooled to that many pixels a side first (coarse layout and colours).
    """
    if decoded.shape != images.shape or images.dim() != 4:
        raise ValueError(
            f"decoded {tuple(decoded.shape)} and images {tuple(images.shape)} must both be "
            "N x C x H x W of one shape"
        )
    if images.shape[0] < 2:
        raise ValueError("recon_r2 needs at least 2 images (the mean image is its baseline)")
    decoded, images = decoded.detach().float(), images.detach().float()
    if pooled_size is not None:
        decoded = F.adaptive_avg_pool2d(decoded, pooled_size)
        images = F.adaptive_avg_pool2d(images, pooled_size)
    baseline = (images - images.mean(dim=0, keepdim=True)).square().mean()
    error = (decoded - images).square().mean()
    return float(1.0 - error / baseline.clamp_min(1e-12))


def pair_selectivity(encoded: Tensor, encoded_perturbed: Tensor, selected: Tensor) -> float:
    """Where the re-encoded pair differs: selected dims over kept dims, each in its own spread.

    ``encoded`` is ``E(D(z))`` and ``encoded_perturbed`` is ``E(D(z'))`` (N x C); ``selected``
    the boolean mask (C,) of perturbed dims. Returns mean over selected dims of
    ``|e' - e| / s_k`` divided by the same mean over kept dims, ``s_k`` the std of dim k of
    ``encoded`` over the N images (without it, low-variance dims always look unchanged).
    1 means the change spread evenly; the method needs more than what random dims give.
    Dims (near-)constant over the images, spread under 1e-6 of the median spread (a dead ReLU
    in eval mode), are left out: any change there is rounding divided by nothing. NaN when no
    selected or no kept dim is left.
    """
    if encoded.shape != encoded_perturbed.shape or encoded.dim() != 2:
        raise ValueError(
            f"encoded {tuple(encoded.shape)} and encoded_perturbed "
            f"{tuple(encoded_perturbed.shape)} must both be N x C of one shape"
        )
    if selected.shape != encoded.shape[1:] or selected.dtype != torch.bool:
        raise ValueError(f"selected must be a boolean mask of shape ({encoded.shape[1]},)")
    if not selected.any() or selected.all():
        raise ValueError("selectivity needs both selected and kept dims")
    encoded, encoded_perturbed = encoded.detach().float(), encoded_perturbed.detach().float()
    spread = encoded.std(dim=0)
    alive = spread > 1e-6 * spread.median().clamp_min(1e-30)
    change = ((encoded_perturbed - encoded).abs() / spread.clamp_min(1e-30)).mean(dim=0)
    selected = selected.to(change.device)
    kept = ~selected & alive
    selected = selected & alive
    if not selected.any() or not kept.any():
        return float("nan")
    return float(change[selected].mean() / change[kept].mean().clamp_min(1e-12))


def reencode_correlation(encoded: Tensor, features: Tensor) -> float:
    """Mean over dims of the Pearson correlation of ``E(D(z))`` with ``z`` across images.

    How well decoded images map back to the features they came from; dims constant over the
    images (no correlation defined) are left out.
    """
    if encoded.shape != features.shape or encoded.dim() != 2:
        raise ValueError(
            f"encoded {tuple(encoded.shape)} and features {tuple(features.shape)} must both be "
            "N x C of one shape"
        )
    a = encoded.detach().float() - encoded.detach().float().mean(dim=0)
    b = features.detach().float() - features.detach().float().mean(dim=0)
    norms = a.norm(dim=0) * b.norm(dim=0)
    defined = norms > 1e-12
    if not defined.any():
        return float("nan")
    return float(((a * b).sum(dim=0)[defined] / norms[defined]).mean())

"""Perturbing only the selected dimensions of pooled features; kept ones stay bit-identical."""

from __future__ import annotations

import torch
from torch import Tensor

from solo_fgsynth.synth.config import PERTURBATIONS, check_choice


def partner_indices(batch_size: int, generator: torch.Generator | None = None) -> Tensor:
    """For each sample, the index of a different sample (a random derangement of the batch)."""
    if batch_size < 2:
        raise ValueError(
            f"batch_size={batch_size} is too small: mixing with another sample needs at least 2"
        )
    order = torch.randperm(batch_size, generator=generator)
    partners = torch.empty_like(order)
    partners[order] = order.roll(-1)
    return partners


def perturb_features(
    features: Tensor,
    mask: Tensor,
    *,
    mode: str,
    strength: float,
    std: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Return ``z'``: equal to ``features`` outside ``mask``, changed by ``mode`` inside it.

    - ``noise``: add Gaussian noise of ``strength`` times the tracked per-dimension ``std``;
    - ``shuffle``: move toward another sample of the batch by ``strength`` (1.0 replaces);
    - ``interpolate``: move toward another sample by a weight drawn from U(0, ``strength``).
    """
    check_choice("perturbation", mode, PERTURBATIONS)
    if features.dim() != 2 or mask.shape != features.shape[1:]:
        raise ValueError(
            f"features {tuple(features.shape)} and mask {tuple(mask.shape)} do not match: "
            "expected (B, C) and (C,)"
        )
    noise_kwargs = {"generator": generator, "dtype": features.dtype}
    if mode == "noise":
        if std is None or std.shape != mask.shape:
            raise ValueError("perturbation 'noise' needs the per-dimension std, of shape (C,)")
        noise = torch.randn(features.shape, **noise_kwargs).to(features.device)
        candidate = features + strength * std.to(features.dtype) * noise
    else:
        partners = features[partner_indices(features.shape[0], generator).to(features.device)]
        if mode == "shuffle":
            weight = torch.full((features.shape[0], 1), float(strength), dtype=features.dtype)
        else:
            weight = strength * torch.rand((features.shape[0], 1), **noise_kwargs)
        candidate = torch.lerp(features, partners, weight.to(features.device))
    return torch.where(mask.to(features.device), candidate, features)

"""Perturbing only the selected dimensions of pooled features; kept ones stay bit-identical."""

from __future__ import annotations

import torch
from torch import Tensor

from solo_fgsynth.synth.config import PERTURBATIONS
from solo_fgsynth.validation import check_choice


def partner_indices(
    batch_size: int, rows: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """For each of ``rows`` (default: every row), another row of the whole batch, uniformly.

    Partners come from the whole batch, so a subset of any size (even one row) has partners.
    """
    if batch_size < 2:
        raise ValueError(
            f"batch_size={batch_size} is too small: mixing with another sample needs at least 2"
        )
    rows = torch.arange(batch_size) if rows is None else rows.cpu()
    offsets = torch.randint(1, batch_size, rows.shape, generator=generator)
    return (rows + offsets) % batch_size


def perturb_features(
    features: Tensor,
    mask: Tensor,
    *,
    mode: str,
    strength: float,
    scale: float | Tensor | None = None,
    rows: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Return ``z'`` for ``rows`` of ``features`` (default: all), changed only inside ``mask``.

    - ``noise``: add Gaussian noise of standard deviation ``strength * scale``, ``scale`` one
      number or one per dimension (C,): each dimension's own tracked std keeps the noise on the
      scale that dimension actually moves on;
    - ``shuffle``: move toward another sample of the whole batch by ``strength`` (1.0 takes
      its values);
    - ``interpolate``: move toward another sample by a weight drawn from U(0, ``strength``).

    Outside ``mask`` the result is bit-identical to the input rows.
    """
    check_choice("perturbation", mode, PERTURBATIONS)
    if features.dim() != 2 or mask.shape != features.shape[1:]:
        raise ValueError(
            f"features {tuple(features.shape)} and mask {tuple(mask.shape)} do not match: "
            "expected (B, C) and (C,)"
        )
    index = torch.arange(features.shape[0]) if rows is None else rows.cpu()
    chosen = features[index.to(features.device)]
    random_kwargs = {"generator": generator, "dtype": features.dtype}
    if mode == "noise":
        scale = None if scale is None else torch.as_tensor(scale)
        if scale is None or scale.numel() not in (1, features.shape[1]):
            raise ValueError(
                "perturbation 'noise' needs a scale: one number or one per dimension "
                f"({features.shape[1]},)"
            )
        noise = torch.randn(chosen.shape, **random_kwargs).to(features.device)
        candidate = chosen + strength * scale.to(chosen).reshape(-1) * noise
    else:
        partners = partner_indices(features.shape[0], index, generator)
        partners = features[partners.to(features.device)]
        if mode == "shuffle":
            weight = torch.full((chosen.shape[0], 1), float(strength), dtype=features.dtype)
        else:
            weight = strength * torch.rand((chosen.shape[0], 1), **random_kwargs)
        candidate = torch.lerp(chosen, partners, weight.to(features.device))
    return torch.where(mask.to(features.device), candidate, chosen)

"""Choosing the non-discriminative dimensions from the tracked criteria."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from solo_fgsynth.synth.config import CAM_RANKINGS, COMBINE_MODES, CRITERIA
from solo_fgsynth.validation import check_choice, check_number


@dataclass(frozen=True)
class Selection:
    """The selected (non-discriminative) dimensions and what each criterion proposed."""

    mask: Tensor
    variance_mask: Tensor
    gradcam_mask: Tensor

    @property
    def size(self) -> int:
        """Number of selected dimensions."""
        return int(self.mask.sum())

    @property
    def overlap(self) -> float:
        """Jaccard overlap of the two criteria's proposals (1.0 when both are empty)."""
        union = int((self.variance_mask | self.gradcam_mask).sum())
        if union == 0:
            return 1.0
        return int((self.variance_mask & self.gradcam_mask).sum()) / union


def lowest_fraction_mask(scores: Tensor, fraction: float) -> Tensor:
    """Boolean mask of the ``round(fraction * C)`` dimensions with the lowest scores."""
    check_number("fraction", fraction, 0, 1)
    count = round(fraction * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        mask[torch.topk(scores, count, largest=False).indices] = True
    return mask


def ranking_scores(importance: Tensor, magnitude: Tensor, ranking: str) -> Tensor:
    """The Grad-CAM scores whose lowest values are "least important", per ``ranking``.

    ``importance`` is the mean signed per-sample contribution ``E[alpha_k z_k]``, ``magnitude``
    the mean per-sample magnitude ``E[|alpha_k z_k|]``.
    ``magnitude``: ``E[|alpha_k z_k|]`` (channels that contribute little to any sample's CAM
    are the least important; the signs are mixed under an SSL loss, so ``|E[.]|`` would rank
    noise); ``signed``: ``E[alpha_k z_k]`` (the most negative, loss-raising channels rank
    lowest); ``positive``: its positive part (every loss-raising channel ties at zero).
    """
    check_choice("cam_ranking", ranking, CAM_RANKINGS)
    if importance.shape != magnitude.shape:
        raise ValueError(
            f"importance {tuple(importance.shape)} and magnitude {tuple(magnitude.shape)} differ"
        )
    if ranking == "magnitude":
        return magnitude
    if ranking == "positive":
        return importance.clamp_min(0)
    return importance


def select_dimensions(
    variance: Tensor,
    cam_scores: Tensor,
    *,
    var_fraction: float,
    cam_fraction: float,
    criterion: str = "both",
    combine: str = "union",
    generator: torch.Generator | None = None,
) -> Selection:
    """Select non-discriminative dimensions: low variance and/or low Grad-CAM scores.

    ``cam_scores`` are the Grad-CAM scores as ranked (:func:`ranking_scores`). ``criterion``
    is ``both`` (the two sets merged by ``combine``), ``variance``, ``gradcam``, or
    ``random``: as many dimensions as ``both`` would pick, drawn uniformly, the control for
    ablations.
    """
    check_choice("criterion", criterion, CRITERIA)
    check_choice("combine", combine, COMBINE_MODES)
    if variance.shape != cam_scores.shape or variance.dim() != 1:
        raise ValueError(
            f"variance {tuple(variance.shape)} and Grad-CAM scores {tuple(cam_scores.shape)} "
            "must be 1-D tensors of the same length"
        )
    variance_mask = lowest_fraction_mask(variance, var_fraction)
    gradcam_mask = lowest_fraction_mask(cam_scores, cam_fraction)
    union = combine == "union"
    both = (variance_mask | gradcam_mask) if union else (variance_mask & gradcam_mask)
    if criterion == "both":
        mask = both
    elif criterion == "variance":
        mask = variance_mask
    elif criterion == "gradcam":
        mask = gradcam_mask
    else:
        order = torch.randperm(variance.numel(), generator=generator).to(variance.device)
        mask = torch.zeros_like(both)
        mask[order[: int(both.sum())]] = True
    return Selection(mask=mask, variance_mask=variance_mask, gradcam_mask=gradcam_mask)

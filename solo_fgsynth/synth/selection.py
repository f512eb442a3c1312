"""Choosing the non-discriminative dimensions from the tracked criteria."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from solo_fgsynth.synth.config import (
    CAM_RANKINGS,
    COMBINE_MODES,
    CRITERIA,
    check_choice,
    check_fraction,
)


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
    check_fraction("fraction", fraction)
    count = round(fraction * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        mask[torch.topk(scores, count, largest=False).indices] = True
    return mask


def ranking_scores(importance: Tensor, ranking: str) -> Tensor:
    """The Grad-CAM scores whose lowest values are "least important", per ``ranking``.

    ``magnitude``: ``|alpha_k z_k|`` (near-zero contributions are the least important);
    ``signed``: the value itself (the most negative, loss-raising channels rank lowest);
    ``positive``: its positive part (every loss-raising channel ties at zero, the lowest).
    """
    check_choice("cam_ranking", ranking, CAM_RANKINGS)
    if ranking == "magnitude":
        return importance.abs()
    if ranking == "positive":
        return importance.clamp_min(0)
    return importance


def select_dimensions(
    variance: Tensor,
    importance: Tensor,
    *,
    var_fraction: float,
    cam_fraction: float,
    criterion: str = "both",
    combine: str = "union",
    cam_ranking: str = "magnitude",
    generator: torch.Generator | None = None,
) -> Selection:
    """Select non-discriminative dimensions: low variance and/or low Grad-CAM importance.

    ``criterion`` is ``both`` (the two sets merged by ``combine``), ``variance``,
    ``gradcam``, or ``random``: as many dimensions as ``both`` would pick, drawn uniformly,
    the control for ablations. ``cam_ranking`` says how importance is ranked
    (:func:`ranking_scores`).
    """
    check_choice("criterion", criterion, CRITERIA)
    check_choice("combine", combine, COMBINE_MODES)
    if variance.shape != importance.shape or variance.dim() != 1:
        raise ValueError(
            f"variance {tuple(variance.shape)} and importance {tuple(importance.shape)} "
            "must be 1-D tensors of the same length"
        )
    variance_mask = lowest_fraction_mask(variance, var_fraction)
    gradcam_mask = lowest_fraction_mask(ranking_scores(importance, cam_ranking), cam_fraction)
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

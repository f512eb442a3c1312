"""Per-dimension statistics of pooled features, tracked as EMAs and reduced across devices."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from solo_fgsynth.synth.selection import ranking_scores

TRACKED_STATISTICS = ("variance", "importance", "importance_magnitude")
"""The per-dimension EMAs the criteria read, by buffer name."""


def _distributed_world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DimensionStatistics(nn.Module):
    """EMA of each pooled dimension's variance and Grad-CAM importance.

    Two Grad-CAM statistics are kept per dimension: ``importance``, the mean of the signed
    per-sample contribution ``alpha_k z_k``, and ``importance_magnitude``, the mean of its
    per-sample magnitude ``|alpha_k z_k|``. Under an SSL loss the signs are mixed, so the first
    is near zero for every dimension; the second is what "least important" means by magnitude.

    Batches are accumulated with :meth:`observe_features` / :meth:`observe_importance`
    (cheap, no communication) and folded into the EMAs by :meth:`update`, which makes one
    all-reduce under ``torch.distributed`` so every rank ends with identical statistics.
    The first update sets each EMA to the batch value, so there is no bias toward zero.
    A step whose reduced sums are not finite, or that a rank marks as skipped (an optimizer
    step dropped by mixed precision's gradient scaler), is discarded on every rank alike:
    one inf or NaN folded into an EMA would stay there for good.
    """

    variance: Tensor
    importance: Tensor
    importance_magnitude: Tensor
    variance_updates: Tensor
    importance_updates: Tensor
    _pending: Tensor

    def __init__(self, num_dims: int, momentum: float) -> None:
        super().__init__()
        if num_dims < 1:
            raise ValueError(f"num_dims={num_dims!r} is out of range: allowed is an integer >= 1")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} is out of range: allowed is [0, 1)")
        self.num_dims = num_dims
        self.momentum = momentum
        self.register_buffer("variance", torch.zeros(num_dims))
        self.register_buffer("importance", torch.zeros(num_dims))
        self.register_buffer("importance_magnitude", torch.zeros(num_dims))
        self.register_buffer("variance_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("importance_updates", torch.zeros((), dtype=torch.long))
        # Sums of the batch not yet folded in:
        # [sum z | sum z^2 | sum importance | sum |importance| | n_z | n_imp | ranks asking to
        # skip the step].
        self.register_buffer(
            "_pending", torch.zeros(4 * num_dims + 3, dtype=torch.float64), persistent=False
        )
        self.discarded_steps = 0

    @property
    def ready(self) -> bool:
        """True once both criteria have seen at least one update."""
        return bool(self.variance_updates > 0) and bool(self.importance_updates > 0)

    @property
    def std(self) -> Tensor:
        """Tracked per-dimension standard deviation."""
        return self.variance.clamp_min(0).sqrt()

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Load; a state of before ``importance_magnitude`` was tracked restarts Grad-CAM's EMAs.

        Its magnitude is unknown, so it loads as zeros with no Grad-CAM update counted: the next
        step sets both Grad-CAM EMAs afresh (the variance EMA is kept).
        """
        key = f"{prefix}importance_magnitude"
        if key not in state_dict and f"{prefix}importance" in state_dict:
            state_dict[key] = torch.zeros_like(state_dict[f"{prefix}importance"])
            state_dict[f"{prefix}importance_updates"] = torch.zeros((), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check(self, name: str, values: Tensor) -> Tensor:
        if values.dim() != 2 or values.shape[1] != self.num_dims:
            raise ValueError(
                f"{name} has shape {tuple(values.shape)}: expected (batch, {self.num_dims})"
            )
        return values.detach().to(device=self._pending.device, dtype=torch.float64)

    def observe_features(self, pooled: Tensor) -> None:
        """Accumulate a batch of pooled features (B x C) for the variance criterion."""
        pooled = self._check("pooled features", pooled)
        c = self.num_dims
        self._pending[:c] += pooled.sum(0)
        self._pending[c : 2 * c] += pooled.square().sum(0)
        self._pending[4 * c] += pooled.shape[0]

    def observe_importance(self, importance: Tensor) -> None:
        """Accumulate per-sample Grad-CAM importances (B x C): their sum and their magnitudes."""
        importance = self._check("importance", importance)
        c = self.num_dims
        self._pending[2 * c : 3 * c] += importance.sum(0)
        self._pending[3 * c : 4 * c] += importance.abs().sum(0)
        self._pending[4 * c + 1] += importance.shape[0]

    @torch.no_grad()
    def update(self, skip: bool = False) -> bool:
        """Fold the accumulated batch into the EMAs (all-reduced across ranks) and reset it.

        ``skip`` discards this step on every rank; so does any non-finite sum. Returns whether
        the step was folded in.
        """
        c = self.num_dims
        self._pending[4 * c + 2] = float(skip)
        pending = self._pending.clone()
        self._pending.zero_()
        if _distributed_world():
            dist.all_reduce(pending)
        if pending[4 * c + 2] > 0 or not bool(torch.isfinite(pending).all()):
            self.discarded_steps += 1
            return False
        count, importance_count = pending[4 * c], pending[4 * c + 1]
        if count > 1:
            mean = pending[:c] / count
            batch_variance = (pending[c : 2 * c] / count - mean.square()) * count / (count - 1)
            first = self.variance_updates == 0
            self._fold(self.variance, first, batch_variance.clamp_min(0))
            self.variance_updates += 1
        if importance_count > 0:
            batch_importance = pending[2 * c : 3 * c] / importance_count
            batch_magnitude = pending[3 * c : 4 * c] / importance_count
            first = self.importance_updates == 0
            self._fold(self.importance, first, batch_importance)
            self._fold(self.importance_magnitude, first, batch_magnitude)
            self.importance_updates += 1
        return True

    def _fold(self, ema: Tensor, first: Tensor, batch_value: Tensor) -> None:
        batch_value = batch_value.to(ema.dtype)
        if first:
            ema.copy_(batch_value)
        else:
            ema.mul_(self.momentum).add_(batch_value, alpha=1.0 - self.momentum)

    def cam_scores(self, ranking: str) -> Tensor:
        """The tracked Grad-CAM scores whose lowest values are "least important", per ``ranking``.

        See :func:`solo_fgsynth.synth.selection.ranking_scores`.
        """
        return ranking_scores(self.importance, self.importance_magnitude, ranking)

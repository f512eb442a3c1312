"""Per-dimension statistics of pooled features, tracked as EMAs and reduced across devices."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _distributed_world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DimensionStatistics(nn.Module):
    """EMA of each pooled dimension's variance and Grad-CAM importance.

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
        self.register_buffer("variance_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("importance_updates", torch.zeros((), dtype=torch.long))
        # Sums of the batch not yet folded in:
        # [sum z | sum z^2 | sum importance | n_z | n_imp | ranks asking to skip the step].
        self.register_buffer(
            "_pending", torch.zeros(3 * num_dims + 3, dtype=torch.float64), persistent=False
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

    @property
    def typical_std(self) -> Tensor:
        """The median tracked standard deviation over all dimensions: the features' usual spread.

        It comes from train-mode features of augmented views, which spread more than eval-mode
        features of plain images; a median is robust to a few dead or exploding dimensions.
        """
        return self.std.median()

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
        self._pending[3 * c] += pooled.shape[0]

    def observe_importance(self, importance: Tensor) -> None:
        """Accumulate per-sample Grad-CAM importances (B x C) for the Grad-CAM criterion."""
        importance = self._check("importance", importance)
        c = self.num_dims
        self._pending[2 * c : 3 * c] += importance.sum(0)
        self._pending[3 * c + 1] += importance.shape[0]

    @torch.no_grad()
    def update(self, skip: bool = False) -> bool:
        """Fold the accumulated batch into the EMAs (all-reduced across ranks) and reset it.

        ``skip`` discards this step on every rank; so does any non-finite sum. Returns whether
        the step was folded in.
        """
        c = self.num_dims
        self._pending[3 * c + 2] = float(skip)
        pending = self._pending.clone()
        self._pending.zero_()
        if _distributed_world():
            dist.all_reduce(pending)
        if pending[3 * c + 2] > 0 or not bool(torch.isfinite(pending).all()):
            self.discarded_steps += 1
            return False
        count, importance_count = pending[3 * c], pending[3 * c + 1]
        if count > 1:
            mean = pending[:c] / count
            batch_variance = (pending[c : 2 * c] / count - mean.square()) * count / (count - 1)
            self._fold(self.variance, self.variance_updates, batch_variance.clamp_min(0))
        if importance_count > 0:
            batch_importance = pending[2 * c : 3 * c] / importance_count
            self._fold(self.importance, self.importance_updates, batch_importance)
        return True

    def _fold(self, ema: Tensor, updates: Tensor, batch_value: Tensor) -> None:
        batch_value = batch_value.to(ema.dtype)
        if updates == 0:
            ema.copy_(batch_value)
        else:
            ema.mul_(self.momentum).add_(batch_value, alpha=1.0 - self.momentum)
        updates += 1

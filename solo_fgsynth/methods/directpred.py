"""``method: directpred``: BYOL whose linear predictor is set from the projections' correlation.

Sources read: Tian, Chen and Ganguli, "Understanding self-supervised learning dynamics without
contrastive pairs" (ICML 2021); its public code, facebookresearch/luckmatters (``ssl/real-dataset/
byol_trainer.py``), read for reference, not copied.

Stock solo-learn ``byol`` (projector, momentum encoder, loss) with its learned MLP predictor
replaced by a linear ``p = W_p z`` that is never trained. After each training batch the EMA
correlation of the online projections ``z`` (both large crops, every process) is updated,
``F <- rho F + (1 - rho) E[z z^T]`` (``F`` starts at 0), and every ``freq``-th update sets
``W_p = U diag(p) U^T`` from ``F = U diag(s) U^T``: ``p_j = sqrt(s_j / max_i s_i) + eps`` (mapping
``sqrt``, the paper's) or ``(s_j / max_i s_i) ** power + eps`` (mapping ``power``), negative
eigenvalues clamped to 0. The first step predicts with ``W_p = I``. ``F``, ``W_p`` and the update
count are buffers, so checkpoints resume them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
import torch.distributed as dist
import torch.nn.functional as F
from solo.methods.base import BaseMomentumMethod
from solo.methods.byol import BYOL
from solo.utils.momentum import initialize_momentum_params
from torch import Tensor, nn

from solo_fgsynth.errors import ConfigValueError
from solo_fgsynth.methods.knobs import check_known_keys
from solo_fgsynth.validation import check_choice, check_int, check_number

MAPPINGS = ("sqrt", "power")
DEFAULT_RHO = 0.3
DEFAULT_EPS = 0.1
DEFAULT_FREQ = 1
DEFAULT_POWER = 1.0


def batch_correlation(z: Tensor) -> Tensor:
    """``E[z z^T]`` over the rows of ``z`` (D x D, fp32, no gradient), taken over every process's
    rows when torch.distributed is initialised."""
    z = z.detach().float()
    with torch.autocast(z.device.type, enabled=False):
        total = z.T @ z
    count = torch.tensor(float(z.shape[0]), device=z.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(count)
    return total / count


def directpred_predictor(
    corr: Tensor, eps: float, mapping: str = "sqrt", power: float = DEFAULT_POWER
) -> Tensor:
    """DirectPred's ``W_p = U diag(p) U^T`` from a correlation ``corr = U diag(s) U^T`` (D x D).

    ``p_j = sqrt(s_j / max s) + eps`` for ``mapping="sqrt"``, ``(s_j / max s) ** power + eps`` for
    ``"power"``; ``s`` clamped at 0 (an all-zero ``corr`` gives ``eps * I``).
    """
    check_choice("mapping", mapping, MAPPINGS)
    symmetric = (corr.float() + corr.float().T) / 2
    s, u = torch.linalg.eigh(symmetric)
    s = s.clamp_min(0)
    relative = s / s.max().clamp_min(torch.finfo(s.dtype).tiny)
    p = (relative.sqrt() if mapping == "sqrt" else relative.pow(power)) + eps
    return (u * p) @ u.T


class DirectPredictor(nn.Module):
    """``p = W_p z`` with ``W_p`` set from the EMA correlation of the ``z`` it sees, not learned."""

    def __init__(
        self, dim: int, rho: float, eps: float, freq: int, mapping: str, power: float
    ) -> None:
        super().__init__()
        self.rho, self.eps, self.freq, self.mapping, self.power = rho, eps, freq, mapping, power
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor) -> Tensor:
        """The prediction ``W_p z`` of each row of ``z``."""
        return F.linear(z, self.weight.to(z.dtype))

    @torch.no_grad()
    def update(self, z: Tensor) -> None:
        """``F <- rho F + (1 - rho) E[z z^T]`` (all processes); ``W_p`` from ``F`` every
        ``freq``-th update, the first included."""
        self.correlation.mul_(self.rho).add_(batch_correlation(z), alpha=1 - self.rho)
        self.updates += 1
        if (int(self.updates) - 1) % self.freq == 0:
            self.weight.copy_(
                directpred_predictor(self.correlation, self.eps, self.mapping, self.power)
            )


def add_directpred_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Validate the DirectPred knobs of ``method_kwargs`` and fill their defaults."""
    kwargs = cfg.method_kwargs
    allowed = ("proj_hidden_dim", "proj_output_dim", "rho", "eps", "freq", "mapping", "power")
    check_known_keys(kwargs, allowed, "directpred (its predictor is set, not learned)")
    for key in ("proj_hidden_dim", "proj_output_dim"):
        kwargs[key] = check_int(f"method_kwargs.{key}", kwargs.get(key), 1)
    kwargs.rho = check_number(
        "method_kwargs.rho", kwargs.get("rho", DEFAULT_RHO), 0, 1, high_open=True
    )
    kwargs.eps = check_number("method_kwargs.eps", kwargs.get("eps", DEFAULT_EPS), 0)
    kwargs.freq = check_int("method_kwargs.freq", kwargs.get("freq", DEFAULT_FREQ), 1)
    kwargs.mapping = check_choice("method_kwargs.mapping", kwargs.get("mapping", "sqrt"), MAPPINGS)
    if kwargs.mapping == "power":
        kwargs.power = check_number(
            "method_kwargs.power", kwargs.get("power", DEFAULT_POWER), 0, low_open=True
        )
    elif "power" in kwargs:
        raise ConfigValueError(
            f"method_kwargs.power={kwargs.power!r} is not used with mapping='sqrt': "
            "set method_kwargs.mapping=power, or leave power out"
        )
    return cfg


class DirectPred(BYOL):
    """BYOL with DirectPred's predictor: linear, symmetric, set from the correlation ``F``."""

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        # BYOL's own __init__ would build the learned MLP predictor this method replaces
        BaseMomentumMethod.__init__(self, cfg)
        kwargs = cfg.method_kwargs
        hidden, out = int(kwargs.proj_hidden_dim), int(kwargs.proj_output_dim)
        self.projector = self._byol_projector(hidden, out)
        self.momentum_projector = self._byol_projector(hidden, out)
        initialize_momentum_params(self.projector, self.momentum_projector)
        self.predictor = DirectPredictor(
            out,
            rho=float(kwargs.rho),
            eps=float(kwargs.eps),
            freq=int(kwargs.freq),
            mapping=str(kwargs.mapping),
            power=float(kwargs.get("power", DEFAULT_POWER)),
        )
        self._step_projections: list[Tensor] = []

    def _byol_projector(self, hidden: int, out: int) -> nn.Sequential:
        """BYOL's projector: Linear, BatchNorm, ReLU, Linear."""
        return nn.Sequential(
            nn.Linear(self.features_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out),
        )

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """BYOL's checks, then the DirectPred knobs (no ``pred_hidden_dim``: nothing learned)."""
        return add_directpred_cfg(BYOL.add_and_assert_specific_cfg(cfg))

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """BYOL's parameter groups without the predictor, which has no parameters."""
        return [group for group in super().learnable_params if group["name"] != "predictor"]

    def base_training_step(self, X: Tensor, targets: Tensor) -> dict[str, Any]:
        """The stock step of one large crop, keeping its projections for the correlation."""
        out = super().base_training_step(X, targets)
        self._step_projections.append(out["z"].detach())
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """The stock BYOL step, predicting with the current ``W_p``."""
        self._step_projections = []
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Sequence[Any], batch_idx: int) -> None:
        """The stock momentum update, then ``F`` from this batch's projections and maybe ``W_p``
        (after the backward, so the step's graph still holds the ``W_p`` it used)."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._step_projections:
            self.predictor.update(torch.cat(self._step_projections))
            self._step_projections = []

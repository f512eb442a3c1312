"""``method: ssole``: nuclear norms of view and batch deviations; no momentum encoder, no queue.

Sources read: Huang, Qiu and Sapiro, "SSOLE: Rethinking Orthogonal Low-rank Embedding for
Self-Supervised Learning" (ICLR 2025); its public code, husthuaan/ssole (``loss/ssole_loss.py``),
read for reference, not copied.

The loss implemented, on the L2-normalised projections ``z_vi`` of view ``v = 1..V`` (every crop,
large and small) of sample ``i = 1..N`` (the batch of every process, gathered with gradients):

- low rank of each sample's views, measured on their deviations from the sample's mean:
  ``M_i = [z_1i - m_i; ...; z_Vi - m_i]`` (V x D), ``m_i = mean_v z_vi``,
  ``L_low = mean_i ||M_i||_* / sqrt(V * min(V - 1, D))``;
- high rank of the batch, per view, on the deviations from the batch mean:
  ``H_v = [z_v1 - c_v; ...; z_vN - c_v]`` (N x D), ``c_v = mean_i z_vi``,
  ``L_high = mean_v ||H_v||_* / sqrt(N * min(N - 1, D))``;
- ``L = lambda_low * L_low - lambda_high * L_high``.

``||.||_*`` is the nuclear norm (sum of singular values). Each normaliser is the largest nuclear
norm unit rows can reach (``||M||_* <= sqrt(rank) ||M||_F``, rank at most ``V - 1`` or ``N - 1``
after centring, ``||M||_F^2 <= V``), so both terms lie in [0, 1] whatever the batch size, number
of views and dimension, and the two weights are decoupled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.misc import gather
from torch import Tensor, nn

from solo_fgsynth.methods.knobs import check_known_keys
from solo_fgsynth.validation import check_int, check_number

DEFAULT_LAMBDA_LOW = 1.0
DEFAULT_LAMBDA_HIGH = 1.0


def ssole_loss_func(z: Tensor, lambda_low: float, lambda_high: float) -> Tensor:
    """SSOLE's loss (module docstring) of ``z``: V x N x D projections, V >= 2 views of N >= 2
    samples, normalised here; computed in fp32."""
    if z.dim() != 3 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(
            f"z {tuple(z.shape)} is not V x N x D projections with V >= 2 views of N >= 2 samples"
        )
    z = F.normalize(z.float(), dim=-1)
    views, samples, dims = z.shape
    per_sample = (z - z.mean(dim=0, keepdim=True)).transpose(0, 1)  # N x V x D
    per_view = z - z.mean(dim=1, keepdim=True)  # V x N x D
    low = torch.linalg.matrix_norm(per_sample, ord="nuc").mean()
    high = torch.linalg.matrix_norm(per_view, ord="nuc").mean()
    low = low / math.sqrt(views * min(views - 1, dims))
    high = high / math.sqrt(samples * min(samples - 1, dims))
    return lambda_low * low - lambda_high * high


def add_ssole_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Validate the SSOLE knobs of ``method_kwargs`` and fill their defaults."""
    kwargs = cfg.method_kwargs
    allowed = ("proj_hidden_dim", "proj_output_dim", "lambda_low", "lambda_high")
    check_known_keys(kwargs, allowed, "ssole")
    for key in ("proj_hidden_dim", "proj_output_dim"):
        kwargs[key] = check_int(f"method_kwargs.{key}", kwargs.get(key), 1)
    kwargs.lambda_low = check_number(
        "method_kwargs.lambda_low", kwargs.get("lambda_low", DEFAULT_LAMBDA_LOW), 0
    )
    kwargs.lambda_high = check_number(
        "method_kwargs.lambda_high", kwargs.get("lambda_high", DEFAULT_LAMBDA_HIGH), 0
    )
    return cfg


class SSOLE(BaseMethod):
    """A backbone and projector trained by SSOLE's loss over every crop; one encoder, no queue."""

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.lambda_low = float(kwargs.lambda_low)
        self.lambda_high = float(kwargs.lambda_high)
        hidden = int(kwargs.proj_hidden_dim)
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, int(kwargs.proj_output_dim)),
        )

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """solo-learn's base checks, then the SSOLE knobs."""
        return add_ssole_cfg(super(SSOLE, SSOLE).add_and_assert_specific_cfg(cfg))

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """The base parameter groups and the projector."""
        return [
            *super().learnable_params,
            {"name": "projector", "params": self.projector.parameters()},
        ]

    def forward(self, X: Tensor) -> dict[str, Any]:
        """The base forward plus the projection ``z``."""
        out = super().forward(X)
        out["z"] = self.projector(out["feats"])
        return out

    def multicrop_forward(self, X: Tensor) -> dict[str, Any]:
        """The base small-crop forward plus the projection ``z``."""
        out = super().multicrop_forward(X)
        out["z"] = self.projector(out["feats"])
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """SSOLE's loss over every crop of the gathered batch, plus the online classifier's loss.

        Every process computes the loss of the whole gathered batch; the gather's backward sums
        the processes' gradients, which DDP's average turns into that loss's gradient.
        """
        out = super().training_step(batch, batch_idx)
        z = gather(torch.stack(out["z"]), dim=1)
        loss = ssole_loss_func(z, self.lambda_low, self.lambda_high)
        self.log("train_ssole_loss", loss, on_epoch=True, sync_dist=True)
        return loss + out["loss"]

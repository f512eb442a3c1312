"""``method: supervised``: cross-entropy on the labels through the backbone, for a generic init.

solo-learn's methods train the backbone with a self-supervised loss and fit their online
classifier on detached features; this one lets the classifier's cross-entropy reach the
backbone, as an ImageNet classifier is trained. The benchmark's generic init (the stand-in
for ImageNet weights, ``scripts/pretrain/fgmarks/generic_init.yaml``) is trained with it on
classes the benchmark never uses. It is not a comparison cell: the benchmark's labelled
reference stays supcon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
from solo.methods.base import BaseMethod
from torch import Tensor


class Supervised(BaseMethod):
    """A backbone and a linear classifier trained end to end by cross-entropy."""

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """solo-learn's base checks; the method has no knobs of its own."""
        cfg = super(Supervised, Supervised).add_and_assert_specific_cfg(cfg)
        if cfg.get("method_kwargs"):
            keys = ", ".join(sorted(cfg.method_kwargs))
            raise ValueError(f"method supervised takes no method_kwargs, got {keys}")
        return cfg

    def forward(self, X: Tensor) -> dict[str, Any]:
        """Features and logits, with the logits' gradient reaching the backbone (not detached)."""
        if not self.no_channel_last:
            X = X.to(memory_format=torch.channels_last)
        feats = self.backbone(X)
        return {"logits": self.classifier(feats), "feats": feats}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """The mean cross-entropy over the large crops: the loss that trains everything."""
        return super().training_step(batch, batch_idx)["loss"]

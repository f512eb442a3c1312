"""``method: lcr``: MoCo v2+ plus a rationale branch fitted to the Grad-CAM of the MoCo loss.

Sources read: Shu, van den Hengel and Liu, "Learning Common Rationale to Improve Self-Supervised
Representation for Fine-Grained Visual Recognition Problems" (CVPR 2023); its public code,
GANPerf/LCR (``moco/builder.py``, ``main_moco.py``), read for reference, not copied.

Stock solo-learn ``mocov2plus`` (projector, momentum encoder, key queue, InfoNCE ``L_MoCo``)
plus, on the backbone's last feature map ``A`` (B x C x h x w; ``method_kwargs.feature_module``,
the module fgsynth watches, ``layer4`` for ResNets):

- a rationale branch ``R``: 1x1 conv C -> ``attention_hidden_dim``, BatchNorm, ReLU, 1x1 conv
  -> 1, an attention logit ``a_hw`` per position;
- ``L = L_MoCo + kl_weight * KL(P || softmax_hw(a))``, ``P = G / sum_hw G`` with ``G`` the
  Grad-CAM map of ``L_MoCo`` on ``A`` (:func:`solo_fgsynth.synth.gradcam_map`), detached: the
  target moves only ``R`` and, through ``A``, the backbone. Averaged over samples and both crops.

Features for evaluation are attention-pooled: ``forward`` returns ``feats = sum_hw softmax(a)_hw
A_hw``, which the online linear probe, the online kNN and ``solo-fgsynth knn`` (it builds the method
from ``args.json``) read; the MoCo query still projects the backbone's own pooled feature, as stock
MoCo. Tools that load the bare backbone (``solo-fgsynth linear``, the benchmark's frozen-feature
evaluation) see its average pooling instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
import torch.nn.functional as F
from solo.methods.mocov2plus import MoCoV2Plus
from torch import Tensor, nn

from solo_fgsynth.methods.fgsynth import checked_feature_module, feature_map_module, loss_scale
from solo_fgsynth.methods.knobs import check_known_keys
from solo_fgsynth.synth import forward_with_feature_map, gradcam_map
from solo_fgsynth.validation import check_int, check_number

MOCO_KEYS = ("proj_hidden_dim", "proj_output_dim", "temperature", "queue_size")
DEFAULT_KL_WEIGHT = 0.01  # LCR's ``--nu``
DEFAULT_ATTENTION_HIDDEN_DIM = 32  # LCR's branch width before its one-channel map


def lcr_rationale_loss(attention_logits: Tensor, cam: Tensor) -> Tensor:
    """``mean_b KL(P_b || softmax(a_b))``: the rationale branch's fit to the Grad-CAM map.

    ``attention_logits`` and ``cam`` hold one map per sample (B x h x w or B x 1 x h x w); ``cam``
    is non-negative and detached here, normalised to ``P = cam / sum cam`` (a sample whose map is
    zero everywhere adds nothing). fp32 whatever the inputs' precision.
    """
    logits, target = attention_logits.flatten(1).float(), cam.detach().flatten(1).float()
    if logits.shape != target.shape:
        raise ValueError(
            f"attention_logits {tuple(attention_logits.shape)} and cam {tuple(cam.shape)} do not "
            "hold the same positions per sample"
        )
    target = target / target.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return F.kl_div(logits.log_softmax(dim=1), target, reduction="batchmean")


def attention_pool(feature_map: Tensor, attention_logits: Tensor) -> Tensor:
    """``sum_hw softmax(a)_hw A_hw`` (B x C): the feature map averaged with the branch's weights."""
    weights = (
        attention_logits.flatten(1)
        .softmax(dim=1)
        .view(feature_map.shape[0], *feature_map.shape[2:])
    )
    return torch.einsum("bchw,bhw->bc", feature_map, weights.to(feature_map.dtype))


def add_lcr_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Validate the LCR knobs of ``method_kwargs`` and fill their defaults."""
    kwargs = cfg.method_kwargs
    allowed = (*MOCO_KEYS, "kl_weight", "attention_hidden_dim", "feature_module")
    check_known_keys(kwargs, allowed, "lcr")
    for key in ("proj_hidden_dim", "proj_output_dim"):
        kwargs[key] = check_int(f"method_kwargs.{key}", kwargs.get(key), 1)
    kwargs.kl_weight = check_number(
        "method_kwargs.kl_weight", kwargs.get("kl_weight", DEFAULT_KL_WEIGHT), 0
    )
    kwargs.attention_hidden_dim = check_int(
        "method_kwargs.attention_hidden_dim",
        kwargs.get("attention_hidden_dim", DEFAULT_ATTENTION_HIDDEN_DIM),
        1,
    )
    kwargs.feature_module = checked_feature_module(cfg)
    return cfg


class LCR(MoCoV2Plus):
    """MoCo v2+ with LCR's rationale branch; ``feats`` are pooled with the branch's attention."""

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.kl_weight = float(kwargs.kl_weight)
        self.feature_module = str(kwargs.feature_module)
        # located once to refuse a wrong path early; looked up by path at each forward, so it is
        # not registered twice (which would add its weights to the state dict again)
        feature_map_module(self.backbone, self.feature_module, self.backbone_name, "lcr")
        hidden = int(kwargs.attention_hidden_dim)
        self.rationale = nn.Sequential(
            nn.Conv2d(self.features_dim, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )
        self._step_maps: list[tuple[Tensor, Tensor]] = []

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock MoCo v2+ checks, then the LCR knobs."""
        return add_lcr_cfg(MoCoV2Plus.add_and_assert_specific_cfg(cfg))

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """MoCo v2+'s parameter groups and the rationale branch."""
        return [
            *super().learnable_params,
            {"name": "rationale", "params": self.rationale.parameters()},
        ]

    def forward(self, X: Tensor) -> dict[str, Any]:
        """Query ``z`` from the pooled backbone feature; ``feats`` (and the online classifier's
        input) attention-pooled; the feature map and the attention logits for the KL term."""
        if not self.no_channel_last:
            X = X.to(memory_format=torch.channels_last)
        module = self.backbone.get_submodule(self.feature_module)
        pooled, feature_map = forward_with_feature_map(self.backbone, module, X)
        attention = self.rationale(feature_map).flatten(1)
        feats = attention_pool(feature_map, attention)
        return {
            "logits": self.classifier(feats.detach()),
            "feats": feats,
            "z": F.normalize(self.projector(pooled), dim=-1),
            "feature_map": feature_map,
            "attention": attention,
        }

    def base_training_step(self, X: Tensor, targets: Tensor) -> dict[str, Any]:
        """The stock step of one large crop, keeping its feature map and attention for the KL."""
        out = super().base_training_step(X, targets)
        self._step_maps.append((out["feature_map"], out["attention"]))
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """Stock MoCo v2+ loss plus ``kl_weight`` times the rationale KL of both large crops.

        The Grad-CAM gradient is ``d loss / dA`` of the stock loss, whose only path to ``A`` is
        the MoCo term (the online classifier reads detached features); it is taken at the mixed
        precision loss scale, which the normalised map does not see, so fp16 does not flush it.
        """
        self._step_maps = []
        loss = super().training_step(batch, batch_idx)
        maps, attentions = zip(*self._step_maps, strict=True)
        self._step_maps = []
        scale = loss_scale(self.trainer)
        grads = torch.autograd.grad(loss * scale, maps, retain_graph=True)
        kl = torch.stack(
            [
                lcr_rationale_loss(attention, gradcam_map(grad, feature_map))
                for attention, grad, feature_map in zip(attentions, grads, maps, strict=True)
            ]
        ).mean()
        self.log("train_rationale_kl", kl, on_epoch=True, sync_dist=True)
        return loss + self.kl_weight * kl

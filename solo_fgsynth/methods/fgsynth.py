"""``method: fgsynth`` for solo-learn: stock BYOL or SimCLR plus the synthesized-pair term.

The algorithm lives in :mod:`solo_fgsynth.synth`; this module only wires it into
solo-learn's training step, optimizer groups, config checks and logging.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
from solo.losses.byol import byol_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.methods.byol import BYOL
from solo.methods.simclr import SimCLR
from torch import Tensor, nn

from solo_fgsynth.errors import ConfigValueError
from solo_fgsynth.synth import FGSynth, FGSynthConfig
from solo_fgsynth.synth.config import check_choice

BASES = ("byol", "simclr")
BASE_METHOD_KEYS = {
    "byol": ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim"),
    "simclr": ("proj_hidden_dim", "proj_output_dim", "temperature"),
}
ADAPTER_KEYS = ("base", "decoder_lr")


def feature_map_module(backbone: nn.Module) -> nn.Module:
    """The module whose output is the last spatial feature map ``A`` (``z = GAP(A)``)."""
    if isinstance(getattr(backbone, "layer4", None), nn.Module):
        return backbone.layer4
    raise ConfigValueError(
        f"fgsynth needs a ResNet-style backbone with a 'layer4' feature map "
        f"(resnet18, resnet50, wide_resnet...), got {type(backbone).__name__}"
    )


def add_fgsynth_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Validate ``method_kwargs`` of an fgsynth config and fill the documented defaults."""
    kwargs = cfg.method_kwargs
    base = kwargs.get("base", "byol")
    check_choice("method_kwargs.base", base, BASES)
    allowed = set(FGSynthConfig.__dataclass_fields__) | set(ADAPTER_KEYS)
    allowed |= set(BASE_METHOD_KEYS[base])
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"method_kwargs.{key} is not a knob of fgsynth with base {base!r}{hint}; "
                f"allowed are {', '.join(sorted(allowed))}"
            )
    synth_values = {key: kwargs[key] for key in FGSynthConfig.__dataclass_fields__ if key in kwargs}
    try:
        config = FGSynthConfig(**synth_values)
    except ValueError as error:
        raise ValueError(f"method_kwargs.{error}") from None
    kwargs.base = base
    for key, value in config.to_dict().items():
        kwargs[key] = value
    decoder_lr = kwargs.get("decoder_lr")
    if decoder_lr is not None and not (isinstance(decoder_lr, int | float) and decoder_lr > 0):
        raise ValueError(
            f"method_kwargs.decoder_lr={decoder_lr!r} is out of range: allowed is null "
            "(use optimizer.lr) or a number > 0"
        )
    kwargs.decoder_lr = decoder_lr
    return cfg


class FGSynthMixin:
    """What fgsynth adds to a stock solo-learn method; combined with BYOL or SimCLR below.

    Each combination supplies ``pair_loss(view_a, view_b)``: its base method's own loss on a
    synthesized positive pair.
    """

    backbone: nn.Module

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)  # type: ignore[call-arg]
        crop_size = int(cfg.augmentations[0].crop_size)
        self.fgsynth = FGSynth(
            self.features_dim,  # type: ignore[attr-defined]
            crop_size,
            FGSynthConfig.from_mapping(dict(cfg.method_kwargs)),
        )
        self.fgsynth.attach(feature_map_module(self.backbone))
        self.decoder_lr: float = cfg.method_kwargs.decoder_lr or cfg.optimizer.lr
        self._first_view: tuple[Tensor, Tensor] | None = None

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """The base method's parameter groups plus the decoder's."""
        decoder_group = {
            "name": "fgsynth_decoder",
            "params": self.fgsynth.decoder.parameters(),
            "lr": self.decoder_lr,
        }
        return [*super().learnable_params, decoder_group]  # type: ignore[misc]

    def base_training_step(self, X: Tensor, targets: Tensor) -> dict[str, Any]:
        """The stock forward of one large crop, with both criteria watching the backbone."""
        with self.fgsynth.capture():
            out = super().base_training_step(X, targets)  # type: ignore[misc]
        if self._first_view is None:
            self._first_view = (X, out["feats"])
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """Stock loss, plus ``alpha * L_R`` and ``nu * L_Cp`` on synthesized pairs.

        Both large crops feed the criteria; the decoder and the pairs use the first one only,
        which halves the decoder's cost at no loss of pairs (``synth_fraction`` is of the batch).
        """
        self._first_view = None
        base_loss = super().training_step(batch, batch_idx)  # type: ignore[misc]
        if self._first_view is None:
            raise RuntimeError("the base training step ran no large crop through the backbone")
        views, feats = self._first_view
        self._first_view = None
        out = self.fgsynth(feats, views, epoch=self.current_epoch)  # type: ignore[attr-defined]
        pair_loss = None if out.pair is None else self.pair_loss(*out.pair)  # type: ignore[attr-defined]
        metrics = {"train_recon_loss": out.recon_loss.detach()}
        metrics.update({f"train_{name}": value for name, value in out.metrics().items()})
        if pair_loss is not None:
            metrics["train_synth_pair_loss"] = pair_loss.detach()
        self.log_dict(metrics, on_step=True, on_epoch=True, sync_dist=True)  # type: ignore[attr-defined]
        return self.fgsynth.total_loss(base_loss, out.recon_loss, pair_loss)

    def on_train_batch_end(self, outputs: Any, batch: Sequence[Any], batch_idx: int) -> None:
        """After the optimizer step: the stock hook, then fold the step into the statistics."""
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]
        self.fgsynth.update_statistics()


class FGSynthBYOL(FGSynthMixin, BYOL):
    """fgsynth on top of stock BYOL (online predictor against the momentum target)."""

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock BYOL checks, then the fgsynth knobs."""
        return add_fgsynth_cfg(BYOL.add_and_assert_specific_cfg(cfg))

    def pair_loss(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """Symmetric BYOL loss between the two synthesized views."""
        both = torch.cat([view_a, view_b])
        online_a, online_b = self(both)["p"].chunk(2)
        target_a, target_b = self.momentum_forward(both)["z"].chunk(2)
        return byol_loss_func(online_a, target_b) + byol_loss_func(online_b, target_a)


class FGSynthSimCLR(FGSynthMixin, SimCLR):
    """fgsynth on top of stock SimCLR (NT-Xent over the synthesized pairs)."""

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock SimCLR checks, then the fgsynth knobs."""
        return add_fgsynth_cfg(SimCLR.add_and_assert_specific_cfg(cfg))

    def pair_loss(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """SimCLR's NT-Xent with each synthesized pair as the positives."""
        z = self(torch.cat([view_a, view_b]))["z"]
        indexes = torch.arange(view_a.shape[0], device=z.device).repeat(2)
        return simclr_loss_func(z, indexes=indexes, temperature=self.temperature)


VARIANTS: dict[str, type[FGSynthMixin]] = {"byol": FGSynthBYOL, "simclr": FGSynthSimCLR}


def variant_for(cfg: omegaconf.DictConfig) -> type[FGSynthMixin]:
    """The fgsynth class for ``cfg.method_kwargs.base`` (default byol)."""
    base = omegaconf.OmegaConf.select(cfg, "method_kwargs.base", default="byol")
    check_choice("method_kwargs.base", base, BASES)
    return VARIANTS[base]


class FGSynthMethod:
    """The entry registered as ``METHODS['fgsynth']``: builds the variant the config asks for."""

    def __new__(cls, cfg: omegaconf.DictConfig) -> Any:
        return variant_for(cfg)(cfg)

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Checks and defaults of the variant the config asks for."""
        return variant_for(cfg).add_and_assert_specific_cfg(cfg)  # type: ignore[attr-defined]

    @staticmethod
    def load_from_checkpoint(
        path: str, *args: Any, cfg: omegaconf.DictConfig, **kwargs: Any
    ) -> Any:
        """Load a checkpoint into the variant ``cfg`` names (as solo-learn's kNN script does)."""
        variant = variant_for(cfg)
        return variant.load_from_checkpoint(path, *args, cfg=cfg, **kwargs)  # type: ignore[attr-defined]

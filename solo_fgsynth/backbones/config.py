"""``backbone.init`` in launcher configs: pretraining starts from it, evaluation may measure it.

Pretraining loads it into the online backbone and copies it into a momentum backbone, as
solo-learn initialises one from the other. In linear/kNN evaluation an SSL checkpoint
(``pretrained_feature_extractor`` / ``pretrained_checkpoint_dir``) wins; ``backbone.init``
alone evaluates the starting weights themselves. Both together are accepted only when the
checkpoint records that it was pretrained from that same init; any other mix is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from solo_fgsynth.backbones.init import InitResult, init_backbone
from solo_fgsynth.errors import LaunchError
from solo_fgsynth.validation import check_bool


def init_settings(cfg: DictConfig) -> tuple[str | None, bool]:
    """``backbone.init`` (None: no init) and ``backbone.init_strict`` (default True), checked."""
    node = cfg.get("backbone") or {}
    spec = node.get("init")
    strict = node.get("init_strict", True)
    if spec is not None and (not isinstance(spec, str) or not spec.strip()):
        raise LaunchError(
            f"backbone.init={spec!r} is not valid: use timm:NAME.TAG, torchvision:ENUM.MEMBER, "
            "a weights file, a zoo name, or null"
        )
    check_bool("backbone.init_strict", strict, error=LaunchError)
    return spec, strict


def _init(backbone: nn.Module, spec: str, strict: bool) -> InitResult:
    result = init_backbone(backbone, spec, strict)
    rank_zero_info(f"backbone.init: loaded {len(result.loaded)} tensors from {result.source}")
    if result.dropped_head:
        rank_zero_info(f"backbone.init: dropped classifier head {', '.join(result.dropped_head)}")
    return result


def init_method_backbones(cfg: DictConfig, model: nn.Module) -> InitResult | None:
    """Pretraining: load ``backbone.init`` into ``model.backbone`` and its momentum copy."""
    spec, strict = init_settings(cfg)
    if spec is None:
        return None
    result = _init(model.backbone, spec, strict)
    momentum = getattr(model, "momentum_backbone", None)
    if isinstance(momentum, nn.Module):
        momentum.load_state_dict(model.backbone.state_dict(), strict=True)
    return result


def build_solo_backbone(cfg: DictConfig) -> nn.Module:
    """``cfg.backbone.name`` built as solo-learn's BaseMethod builds it (ResNet: fc = Identity)."""
    from solo.methods.base import BaseMethod

    name = cfg.backbone.get("name")
    if name not in BaseMethod._BACKBONES:
        raise LaunchError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(BaseMethod._BACKBONES))}"
        )
    kwargs = cfg.backbone.get("kwargs") or {}
    backbone = BaseMethod._BACKBONES[name](method=cfg.get("pretrain_method"), **kwargs)
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
        if cfg.data.dataset in ("cifar10", "cifar100"):
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            backbone.maxpool = nn.Identity()
    return backbone


def _recorded_init(args_json: Path) -> Any:
    """The ``backbone.init`` a run's args.json records (None when absent or unreadable)."""
    try:
        args = json.loads(args_json.read_text())
    except (OSError, ValueError):
        return None
    return (args.get("backbone") or {}).get("init")


def _checkpoint_wins(spec: str, checkpoint: str, args_json: Path, key: str) -> None:
    """Accept a checkpoint plus ``backbone.init`` only when it was pretrained from that init."""
    recorded = _recorded_init(args_json)
    if recorded == spec:
        rank_zero_info(f"evaluating {checkpoint}, pretrained from backbone.init={spec!r}")
        return
    started = f"was pretrained from {recorded!r}" if recorded else "records no backbone.init"
    raise LaunchError(
        f"ambiguous: {key}={checkpoint!r} {started}, but backbone.init={spec!r} is also set; "
        f"to evaluate the checkpoint set backbone.init=null, to evaluate the starting weights "
        f"set {key}=null"
    )


def init_evaluation_backbone(cfg: DictConfig, backbone: nn.Module) -> bool:
    """Linear evaluation: True when ``backbone`` now holds the starting weights to evaluate.

    False means the SSL checkpoint ``pretrained_feature_extractor`` is to be loaded instead.
    """
    spec, strict = init_settings(cfg)
    checkpoint = cfg.get("pretrained_feature_extractor")
    if spec is None:
        if checkpoint is None:
            raise LaunchError(
                "nothing to evaluate: set pretrained_feature_extractor (an SSL checkpoint) or "
                "backbone.init (the starting weights)"
            )
        return False
    if checkpoint is not None:
        path = Path(str(checkpoint))
        _checkpoint_wins(
            spec, str(checkpoint), path.parent / "args.json", "pretrained_feature_extractor"
        )
        return False
    _init(backbone, spec, strict)
    return True


class BackboneFeatures(nn.Module):
    """A bare backbone answering like a solo-learn method's forward: ``{"feats": ...}``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"feats": self.backbone(images)}


def knn_starting_weights(cfg: DictConfig) -> tuple[nn.Module, DictConfig] | None:
    """kNN: the ``backbone.init`` weights as a features model and a stand-in method config.

    None when a checkpoint is to be evaluated instead (it wins; see the module docstring).
    """
    spec, strict = init_settings(cfg)
    if spec is None:
        return None
    for key in ("pretrained_checkpoint_dir", "pretrained_feature_extractor"):
        checkpoint = cfg.get(key)
        if checkpoint is not None:
            path = Path(str(checkpoint))
            args_json = (
                path / "args.json"
                if key == "pretrained_checkpoint_dir"
                else path.parent / "args.json"
            )
            _checkpoint_wins(spec, str(checkpoint), args_json, key)
            return None
    if not (cfg.get("backbone") or {}).get("name"):
        raise LaunchError(
            f"backbone.init={spec!r} without a checkpoint needs backbone.name "
            "(the architecture to build), e.g. backbone.name=resnet50"
        )
    backbone = build_solo_backbone(cfg)
    _init(backbone, spec, strict)
    view = {
        "crop_size": 224,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
    }
    method_cfg = OmegaConf.create({"method": f"backbone.init={spec}", "augmentations": [view]})
    return BackboneFeatures(backbone), method_cfg

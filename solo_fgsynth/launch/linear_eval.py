"""Linear evaluation of a frozen pretrained backbone, as solo-learn's ``main_linear.py`` does it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from solo_fgsynth._solo import require_solo
from solo_fgsynth.backbones.config import build_solo_backbone, init_evaluation_backbone
from solo_fgsynth.checkpoints import (
    CheckpointError,
    backbone_part,
    load_fitting,
    read_lightning_state,
)
from solo_fgsynth.launch.common import (
    _classification_datasets,
    _eval_transforms,
    _fit,
)
from solo_fgsynth.launch.compat import lightning_devices
from solo_fgsynth.launch.config import (
    LaunchError,
    _checked_by_solo,
    _checked_copy,
    _prepare_data,
    _require_name,
    _resolve_devices,
)
from solo_fgsynth.launch.noise import silence_known_noise
from solo_fgsynth.launch.recipe import follow_recipe, recipe_beside


def _linear_backbone(cfg: DictConfig) -> nn.Module:
    """The pretrained backbone for linear evaluation, built as solo-learn's BaseMethod builds it.

    With ``backbone.init`` and no ``pretrained_feature_extractor``, the starting weights.
    """
    backbone = build_solo_backbone(cfg)
    if init_evaluation_backbone(cfg, backbone):
        return backbone

    path = str(cfg.pretrained_feature_extractor)
    weights = backbone_part(read_lightning_state(path, f"pretrained_feature_extractor={path!r}"))
    misfit = f"{path} does not fit backbone {cfg.backbone.name!r}"
    load_fitting(backbone, weights, misfit)
    rank_zero_info(f"Loaded {path}")
    return backbone


def _follow_checkpoint(cfg: DictConfig) -> None:
    """Take the checkpoint's backbone and data (its args.json) where ``cfg`` leaves them unset."""
    checkpoint = OmegaConf.select(
        cfg, "pretrained_feature_extractor", default=None, throw_on_missing=False
    )
    if checkpoint is not None and not Path(str(checkpoint)).expanduser().exists():
        what = f"pretrained_feature_extractor={str(checkpoint)!r}"
        raise CheckpointError(f"{what} does not exist (from {Path.cwd()})")
    recipe = recipe_beside(checkpoint) if checkpoint is not None else None
    if recipe is not None:
        summary = follow_recipe(cfg, recipe).summary()
        if rank_zero_only.rank == 0:
            print(summary, flush=True)
    if OmegaConf.select(cfg, "backbone.name", default=None) is None:
        source = (
            f"{checkpoint} has no args.json beside it" if checkpoint else "no checkpoint is set"
        )
        raise LaunchError(
            f"backbone.name is not set and {source} to take it from: set backbone.name "
            "(and backbone.kwargs) to the architecture being evaluated"
        )


def _linear_loss(cfg: DictConfig) -> tuple[nn.Module, Callable | None]:
    """Loss and optional mixup/cutmix, chosen as solo-learn's main_linear.py chooses them."""
    from timm.data.mixup import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            cutmix_minmax=None,
            prob=1.0,
            switch_prob=0.5,
            mode="batch",
            label_smoothing=cfg.label_smoothing,
            num_classes=cfg.data.num_classes,
        )
        return SoftTargetCrossEntropy(), mixup
    if cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing), None
    return nn.CrossEntropyLoss(), None


def run_linear(cfg: DictConfig) -> dict[str, float]:
    """Train a linear classifier on a frozen pretrained backbone, as solo-learn's main_linear.py.

    Returns the final validation metrics: ``val_acc1`` (top-1, %), ``val_acc5`` and ``val_loss``.
    """
    require_solo()
    silence_known_noise()
    from solo.args.linear import parse_cfg
    from solo.data.classification_dataloader import prepare_dataloaders
    from solo.methods.linear import LinearModel
    from solo.utils.misc import make_contiguous
    from timm.data import create_transform

    cfg = _checked_copy(cfg)
    _require_name(cfg)
    _follow_checkpoint(cfg)
    _resolve_devices(cfg)  # a config this machine cannot run fails before any data work
    _prepare_data(cfg)
    cfg = _checked_by_solo(parse_cfg, cfg)
    if cfg.data.num_classes < 5:
        raise LaunchError(
            f"linear evaluation reports top-5 accuracy and needs at least 5 classes; "
            f"data.train_path={cfg.data.train_path!r} has {cfg.data.num_classes}"
        )
    lightning_devices(cfg)
    seed_everything(cfg.seed, verbose=False)  # no line on stderr before a config error

    loss_func, mixup_func = _linear_loss(cfg)
    model = LinearModel(_linear_backbone(cfg), loss_func=loss_func, mixup_func=mixup_func, cfg=cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    view = cfg.data.augmentations
    t_train, t_val = _eval_transforms(cfg.data.dataset, view.crop_size, view.mean, view.std)
    if cfg.auto_augment:
        t_train = create_transform(
            input_size=view.crop_size if cfg.data.dataset == "custom" else 224,
            is_training=True,
            color_jitter=None,
            auto_augment="rand-m9-mstd0.5-inc1",
            interpolation="bicubic",
            re_prob=0.25,
            re_mode="pixel",
            re_count=1,
            mean=tuple(view.mean),
            std=tuple(view.std),
        )
    train_dataset, val_dataset = _classification_datasets(cfg, t_train, t_val, cfg.data.fraction)
    train_loader, val_loader = prepare_dataloaders(
        train_dataset,
        val_dataset,
        batch_size=cfg.optimizer.batch_size,
        num_workers=cfg.data.num_workers,
    )
    trainer, _ = _fit(cfg, model, train_loader, val_loader, Path(cfg.checkpoint.dir) / "linear")
    results = trainer.validate(model, val_loader, verbose=False)
    return {key: float(value) for key, value in results[0].items()}

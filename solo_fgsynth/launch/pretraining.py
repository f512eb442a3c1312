"""Pretraining: any registered solo-learn method, as solo-learn's ``main_pretrain.py`` does it."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader

from solo_fgsynth._solo import require_solo
from solo_fgsynth.backbones.config import init_method_backbones
from solo_fgsynth.callbacks import best_checkpoint_from_cfg
from solo_fgsynth.launch.common import (
    _classification_datasets,
    _eval_transforms,
    _fit,
)
from solo_fgsynth.launch.compat import check_online_knn, lightning_devices
from solo_fgsynth.launch.config import (
    LaunchError,
    _checked_by_solo,
    _checked_copy,
    _method_class,
    _prepare_data,
    _require_name,
    _resolve_devices,
)
from solo_fgsynth.launch.noise import silence_known_noise
from solo_fgsynth.methods.knobs import plugin_knob_check


def _auto_umap(cfg: DictConfig) -> list[Callback]:
    """solo-learn's optional AutoUMAP callback, when the config enables it."""
    from solo.utils.misc import omegaconf_select

    if not omegaconf_select(cfg, "auto_umap.enabled", False):
        return []
    try:
        from solo.utils.auto_umap import AutoUMAP
    except ImportError as error:
        raise LaunchError(
            "auto_umap.enabled=True needs umap-learn: pip install umap-learn"
        ) from error
    logdir = Path(cfg.auto_umap.dir) / cfg.method
    return [AutoUMAP(cfg.name, logdir=logdir, frequency=cfg.auto_umap.frequency)]


def run_pretrain(cfg: DictConfig, extra_callbacks: Iterable[Callback] = ()) -> Path | None:
    """Pretrain ``cfg.method`` as solo-learn's main_pretrain.py does; return the last checkpoint.

    Returns None when ``checkpoint.enabled`` is false. A rerun of a finished run (auto-resume
    finds a checkpoint holding every epoch) trains nothing, says so and returns that checkpoint.
    ``cfg`` itself is left unchanged.
    """
    require_solo()
    silence_known_noise()
    from solo.args.pretrain import parse_cfg
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
        prepare_dataloader,
        prepare_datasets,
    )
    from solo.utils.misc import make_contiguous

    cfg = _checked_copy(cfg, method=True)
    method_class = _method_class(cfg.method)
    _require_name(cfg)
    _resolve_devices(cfg)  # a config this machine cannot run fails before any data work
    own_knobs = plugin_knob_check(cfg.method)
    if own_knobs is not None:  # a plugin method's knobs read nothing of the data: checked first
        own_knobs(copy.deepcopy(cfg))
    _prepare_data(cfg)
    cfg = _checked_by_solo(parse_cfg, cfg)
    lightning_devices(cfg)
    seed_everything(cfg.seed, verbose=False)  # no line on stderr before a config error
    if cfg.data.num_large_crops != 2 and cfg.method not in ("wmse", "mae"):
        raise LaunchError(
            f"{cfg.data.num_large_crops} large crops configured; method {cfg.method!r} needs 2 "
            "(only wmse and mae take another number)"
        )
    check_online_knn(cfg)

    model = method_class(cfg)  # parse_cfg checked its config: a failure here is a bug
    init_method_backbones(cfg, model)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    val_loader = None
    no_val = cfg.data.val_path is None or (cfg.data.dataset == "custom" and cfg.data.no_labels)
    view = cfg.augmentations[0]
    _, t_val = _eval_transforms(
        cfg.data.dataset,
        view.crop_size,
        view.get("mean", IMAGENET_DEFAULT_MEAN),
        view.get("std", IMAGENET_DEFAULT_STD),
    )
    if not no_val:
        val_dataset = _classification_datasets(cfg, t_val, t_val)[1]
        val_loader = DataLoader(
            val_dataset,
            batch_size=cfg.optimizer.batch_size,
            num_workers=cfg.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    transform = FullTransformPipeline(
        [
            NCropAugmentation(build_transform_pipeline(cfg.data.dataset, view), view.num_crops)
            for view in cfg.augmentations
        ]
    )
    if cfg.debug_augmentations:
        rank_zero_info(f"Transforms:\n{transform}")
    train_dataset = prepare_datasets(
        cfg.data.dataset,
        transform,
        train_data_path=cfg.data.train_path,
        data_format=cfg.data.format,
        no_labels=cfg.data.no_labels,
        data_fraction=cfg.data.fraction,
    )
    train_dataset, best_checkpoint = best_checkpoint_from_cfg(cfg, train_dataset, val_loader, t_val)
    train_loader = prepare_dataloader(
        train_dataset, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
    )
    logdir = Path(cfg.checkpoint.dir) / cfg.method
    callbacks = [*_auto_umap(cfg), *best_checkpoint, *extra_callbacks]
    _, last = _fit(cfg, model, train_loader, val_loader, logdir, callbacks, stop_if_finished=True)
    return last

"""Pretraining, linear evaluation and kNN for any solo-learn method, from solo-learn style yaml.

solo-learn's ``main_pretrain.py``, ``main_linear.py`` and ``main_knn.py`` are scripts outside its
package; this module does what they do with solo-learn's package functions, on CPU, GPU or DDP.
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from solo_fgsynth._solo import require_solo
from solo_fgsynth.backbones.config import (
    build_solo_backbone,
    init_evaluation_backbone,
    init_method_backbones,
    knn_starting_weights,
)
from solo_fgsynth.callbacks import best_checkpoint_from_cfg

KNN_DISTANCES = ("euclidean", "cosine")
KNN_FEATURES = ("backbone", "projector")
_GPU_ACCELERATORS = ("gpu", "cuda")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[\w.\-/@]+")


class LaunchError(ValueError):
    """A config value the launcher cannot run with; the message names it and what is allowed."""


# --------------------------------------------------------------------------- configs


def load_config(
    config_path: str | os.PathLike[str], config_name: str, overrides: Sequence[str] = ()
) -> DictConfig:
    """Compose a yaml config with hydra overrides; no hydra outputs dir, no change of cwd."""
    directory = Path(config_path).expanduser().resolve()
    if not directory.is_dir():
        raise LaunchError(f"config path {str(config_path)!r} is not a directory")
    name = config_name.removesuffix(".yaml")
    if not (directory / f"{name}.yaml").is_file():
        available = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
        raise LaunchError(f"no config {config_name!r} in {directory}; available: {available}")
    overrides = [_quote_equals(override) for override in overrides]
    with initialize_config_dir(
        config_dir=str(directory), version_base="1.2", job_name="solo_fgsynth"
    ):
        cfg = compose(config_name=name, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


def _quote_equals(override: str) -> str:
    """Quote a plain value holding '=' for hydra (as in solo-learn's ``...-ep=9.ckpt`` names)."""
    key, sep, value = override.partition("=")
    if (
        sep
        and "=" in value
        and _OVERRIDE_KEY.fullmatch(key)
        and not set("'\"\\[]{}(),") & set(value)
    ):
        return f"{key}='{value}'"
    return override


def _checked_copy(cfg: DictConfig, method: bool = False) -> DictConfig:
    """A private, writable copy of ``cfg``; refused for an unknown method or any unset ``???``."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(cfg, False)
    if method and not OmegaConf.is_missing(cfg, "method"):
        _method_class(cfg.get("method"))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise LaunchError(
            f"config values not set: {', '.join(missing)}; "
            f"pass them as overrides, e.g. {missing[0]}=VALUE"
        )
    return cfg


def _prepare_data(cfg: DictConfig) -> None:
    """Rewrite the plugin's datasets (fgmarks, cub200, ...) into solo-learn's ``custom`` dataset."""
    from solo_fgsynth.data import default_cache_dir, prepare_data_cfg

    try:
        prepare_data_cfg(cfg.data, default_cache_dir())
    except ValueError as error:
        raise LaunchError(str(error)) from error
    if cfg.data.get("format") == "dali":
        raise LaunchError(
            "data.format='dali' is not supported by solo-fgsynth's launcher; "
            "use 'image_folder' or 'h5'"
        )


def _resolve_devices(cfg: DictConfig) -> None:
    """Resolve ``accelerator: auto``; make ``devices`` the id list solo-learn's parse_cfg counts."""
    accelerator = str(cfg.get("accelerator") or "auto").lower()
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    cfg.accelerator = accelerator
    cfg.devices = _device_ids(cfg.get("devices", "auto"), accelerator)


def _device_ids(value: Any, accelerator: str) -> list[int]:
    """Device ids for a Lightning-style ``devices`` value (count, id list, '0,1' or 'auto')."""
    invalid = LaunchError(
        f"devices={value!r} is not valid: use a positive count, a list of device ids, "
        "a string like '0,1', or 'auto'"
    )
    if isinstance(value, bool):
        raise invalid
    if isinstance(value, ListConfig | list | tuple):
        ids = list(value)
        if ids and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            return ids
        raise invalid
    if value in (None, "auto", -1):
        count = torch.cuda.device_count() if accelerator in _GPU_ACCELERATORS else 1
        if count == 0:
            raise LaunchError(f"accelerator={accelerator!r} but no CUDA device is visible")
        return list(range(count))
    if isinstance(value, int) and value > 0:
        return list(range(value))
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if "," in value and all(part.isdigit() for part in parts):
            return [int(part) for part in parts]
        if value.strip().isdigit() and int(value) > 0:
            return list(range(int(value)))
    raise invalid


def _lightning_devices(cfg: DictConfig) -> None:
    """After parse_cfg: Lightning's CPU accelerator takes a count; SyncBatchNorm needs CUDA."""
    if cfg.accelerator != "cpu":
        return
    cfg.devices = len(cfg.devices)
    if cfg.get("sync_batchnorm"):
        if cfg.devices > 1:
            rank_zero_warn("sync_batchnorm needs CUDA; CPU processes keep per-process BatchNorm")
        cfg.sync_batchnorm = False


def _strategy(cfg: DictConfig) -> str | Strategy:
    """The Trainer strategy: solo-learn's DDP without unused-parameter search for ``ddp``."""
    strategy = cfg.get("strategy")
    if strategy is None:
        return "auto"
    if strategy == "ddp":
        return DDPStrategy(find_unused_parameters=False)
    return strategy


def _require_name(cfg: DictConfig) -> None:
    if not cfg.get("name"):
        raise LaunchError(
            "config has no 'name'; checkpoints and auto-resume need one, e.g. name=run1"
        )


def _method_class(name: Any) -> type[LightningModule]:
    """The solo-learn method registered as ``name``, with the registered names when unknown."""
    from solo.methods import METHODS

    if name not in METHODS:
        raise LaunchError(
            f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


# --------------------------------------------------------------------------- data


def _eval_transforms(
    dataset: str, crop_size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[Callable, Callable]:
    """Classification train/val transforms; ``custom`` data at ``crop_size`` (solo-learn: 224)."""
    from solo.data.classification_dataloader import prepare_transforms

    if dataset != "custom":
        return prepare_transforms(dataset)
    normalize = transforms.Normalize(mean=list(mean), std=list(std))
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(crop_size, scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    val = transforms.Compose(
        [
            transforms.Resize(round(crop_size * 256 / 224)),
            transforms.CenterCrop(crop_size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, val


def _classification_datasets(
    cfg: DictConfig, t_train: Callable, t_val: Callable, data_fraction: float = -1.0
) -> tuple[Any, Any]:
    from solo.data.classification_dataloader import prepare_datasets

    return prepare_datasets(
        cfg.data.dataset,
        t_train,
        t_val,
        train_data_path=cfg.data.train_path,
        val_data_path=cfg.data.val_path,
        data_format=cfg.data.format,
        data_fraction=data_fraction,
    )


# --------------------------------------------------------------------------- training runs


def _resume(cfg: DictConfig, logdir: Path) -> tuple[str | None, str | None]:
    """Checkpoint to resume and its wandb run id: solo-learn's AutoResumer, or an explicit path."""
    from solo.utils.auto_resumer import AutoResumer

    if cfg.auto_resume.enabled and cfg.resume_from_checkpoint is None:
        resumer = AutoResumer(checkpoint_dir=logdir, max_hours=cfg.auto_resume.max_hours)
        found, run_id = resumer.find_checkpoint(cfg)
        if found is None:
            return None, None
        rank_zero_info(f"Resuming from previous checkpoint that matches specifications: '{found}'")
        return str(found), run_id
    if cfg.resume_from_checkpoint is not None:
        path = str(cfg.resume_from_checkpoint)
        del cfg.resume_from_checkpoint
        if not Path(path).is_file():
            raise LaunchError(f"resume_from_checkpoint={path!r} is not a file")
        return path, None
    return None, None


def _logger(cfg: DictConfig, logdir: Path, run_id: str | None, model: nn.Module) -> Logger:
    """wandb when ``wandb.enabled`` (as solo-learn), else a CSV log next to the checkpoints."""
    from solo.utils.checkpointer import Checkpointer

    if cfg.wandb.enabled:
        logger: Logger = WandbLogger(
            name=cfg.name,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            offline=cfg.wandb.offline,
            resume="allow" if run_id else None,
            id=run_id,
        )
        logger.watch(model, log="gradients", log_freq=100)
    else:
        existing = set(os.listdir(logdir)) if logdir.is_dir() else set()
        version = f"offline-{Checkpointer.random_string()}"
        while version in existing:
            version = f"offline-{Checkpointer.random_string()}"
        logger = CSVLogger(save_dir=logdir, name="", version=version)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def _fit(
    cfg: DictConfig,
    model: LightningModule,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    logdir: Path,
    callbacks: Iterable[Callback] = (),
) -> tuple[Trainer, Path | None]:
    """Resume, checkpoint, log and fit as solo-learn's scripts do; return trainer and checkpoint."""
    from solo.utils.checkpointer import Checkpointer

    ckpt_path, run_id = _resume(cfg, logdir)
    all_callbacks: list[Callback] = []
    checkpointer = None
    if cfg.checkpoint.enabled:
        checkpointer = Checkpointer(
            cfg,
            logdir=logdir,
            frequency=cfg.checkpoint.frequency,
            keep_prev=cfg.checkpoint.keep_prev,
        )
        all_callbacks.append(checkpointer)
    all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    all_callbacks.extend(callbacks)

    trainer_kwargs = OmegaConf.to_container(cfg, resolve=True)
    valid = inspect.signature(Trainer.__init__).parameters
    trainer_kwargs = {key: value for key, value in trainer_kwargs.items() if key in valid}
    trainer_kwargs.update(
        logger=_logger(cfg, logdir, run_id, model),
        callbacks=all_callbacks,
        enable_checkpointing=False,
        strategy=_strategy(cfg),
    )
    trainer = Trainer(**trainer_kwargs)
    trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)

    last = getattr(checkpointer, "last_ckpt", None) or ckpt_path
    return trainer, Path(last) if checkpointer is not None and last else None


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


def _check_online_knn(cfg: DictConfig) -> None:
    """solo-learn's online kNN metric passes ``compute_on_step``, which torchmetrics>=1 rejects."""
    from solo.utils.knn import WeightedKNNClassifier
    from solo.utils.misc import omegaconf_select

    if not omegaconf_select(cfg, "knn_eval.enabled", False):
        return
    try:
        WeightedKNNClassifier()
    except ValueError as error:
        raise LaunchError(
            f"knn_eval.enabled=True: solo-learn's online kNN does not run here ({error}); "
            "set knn_eval.enabled=False and use 'solo-fgsynth knn' on the checkpoint"
        ) from error


def run_pretrain(cfg: DictConfig, extra_callbacks: Iterable[Callback] = ()) -> Path | None:
    """Pretrain ``cfg.method`` as solo-learn's main_pretrain.py does; return the last checkpoint.

    Returns None when ``checkpoint.enabled`` is false. ``cfg`` itself is left unchanged.
    """
    require_solo()
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
    _prepare_data(cfg)
    _resolve_devices(cfg)
    cfg = parse_cfg(cfg)
    _lightning_devices(cfg)
    seed_everything(cfg.seed)
    if cfg.data.num_large_crops != 2 and cfg.method not in ("wmse", "mae"):
        raise LaunchError(
            f"{cfg.data.num_large_crops} large crops configured; method {cfg.method!r} needs 2 "
            "(only wmse and mae take another number)"
        )
    _check_online_knn(cfg)

    model = method_class(cfg)
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
    _, last = _fit(cfg, model, train_loader, val_loader, logdir, callbacks)
    return last


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The Lightning ``state_dict`` of a checkpoint file, loaded on CPU as plain tensors."""
    if not path.endswith(_CHECKPOINT_SUFFIXES) or not Path(path).is_file():
        raise LaunchError(
            f"pretrained_feature_extractor={path!r} is not a {'/'.join(_CHECKPOINT_SUFFIXES)} file"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise LaunchError(f"{path} has no 'state_dict'; expected a solo-learn/Lightning checkpoint")
    return checkpoint["state_dict"]


def _linear_backbone(cfg: DictConfig) -> nn.Module:
    """The pretrained backbone for linear evaluation, built as solo-learn's BaseMethod builds it."""
    backbone = build_solo_backbone(cfg)
    if init_evaluation_backbone(cfg, backbone):
        return backbone

    path = str(cfg.pretrained_feature_extractor)
    state = _load_state_dict(path)
    weights = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    misfit = f"{path} does not fit backbone {cfg.backbone.name!r}"
    try:
        missing, _ = backbone.load_state_dict(weights, strict=False)
    except RuntimeError as error:
        first_problem = str(error).splitlines()[1].strip()
        raise LaunchError(f"{misfit}: {first_problem}") from error
    if missing:
        more = " ..." if len(missing) > 4 else ""
        raise LaunchError(f"{misfit}: no weights for {', '.join(missing[:4])}{more}")
    rank_zero_info(f"Loaded {path}")
    return backbone


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
    from solo.args.linear import parse_cfg
    from solo.data.classification_dataloader import prepare_dataloaders
    from solo.methods.linear import LinearModel
    from solo.utils.misc import make_contiguous
    from timm.data import create_transform

    cfg = _checked_copy(cfg)
    _require_name(cfg)
    _prepare_data(cfg)
    _resolve_devices(cfg)
    cfg = parse_cfg(cfg)
    if cfg.data.num_classes < 5:
        raise LaunchError(
            f"linear evaluation reports top-5 accuracy and needs at least 5 classes; "
            f"data.train_path={cfg.data.train_path!r} has {cfg.data.num_classes}"
        )
    _lightning_devices(cfg)
    seed_everything(cfg.seed)

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


# --------------------------------------------------------------------------- kNN


def _knn_checkpoint(cfg: DictConfig) -> tuple[Path, Path]:
    """The checkpoint and its args.json: ``pretrained_checkpoint_dir`` (newest .ckpt) or a file."""
    directory = cfg.get("pretrained_checkpoint_dir")
    file = cfg.get("pretrained_feature_extractor")
    if (directory is None) == (file is None):
        raise LaunchError(
            "set exactly one of pretrained_checkpoint_dir (a run directory with args.json) "
            "and pretrained_feature_extractor (a .ckpt file next to its args.json)"
        )
    if file is not None:
        ckpt = Path(file)
        if not ckpt.is_file():
            raise LaunchError(f"pretrained_feature_extractor={str(file)!r} is not a file")
    else:
        run_dir = Path(directory)
        candidates = sorted(run_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise LaunchError(f"pretrained_checkpoint_dir={str(directory)!r} holds no .ckpt file")
        ckpt = candidates[-1]
    args = ckpt.parent / "args.json"
    if not args.is_file():
        raise LaunchError(
            f"{ckpt} has no args.json next to it (solo-learn's Checkpointer writes one)"
        )
    return ckpt, args


def _knn_grid(cfg: DictConfig) -> tuple[list[int], list[float], list[str], list[str]]:
    """The k / temperature / distance / feature lists of a knn config, checked."""

    def as_list(key: str, default: Sequence[Any]) -> list[Any]:
        value = cfg.get(key, default)
        return list(value) if isinstance(value, ListConfig | list | tuple) else [value]

    ks = as_list("k", [20])
    temperatures = as_list("temperature", [0.07])
    distances = as_list("distance_function", ["cosine"])
    features = as_list("feature_type", ["backbone"])
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise LaunchError(f"k={k!r} is not valid: use positive integers")
    for t in temperatures:
        if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
            raise LaunchError(f"temperature={t!r} is not valid: use positive numbers")
    for name, values, allowed in (
        ("distance_function", distances, KNN_DISTANCES),
        ("feature_type", features, KNN_FEATURES),
    ):
        for value in values:
            if value not in allowed:
                raise LaunchError(f"{name}={value!r} is not valid: use {' or '.join(allowed)}")
    return ks, [float(t) for t in temperatures], distances, features


@functools.cache
def _knn_metric_class() -> type:
    """solo-learn's WeightedKNNClassifier, constructible under torchmetrics >= 1."""
    from solo.utils.knn import WeightedKNNClassifier
    from torchmetrics import Metric

    class _WeightedKNN(WeightedKNNClassifier):
        """Its parent's __init__ passes ``compute_on_step``, which torchmetrics >= 1 rejects."""

        def __init__(self, k: int, T: float | None, distance_fx: str) -> None:
            Metric.__init__(self)
            self.k, self.T, self.distance_fx = k, T, distance_fx
            self.max_distance_matrix_size = int(5e6)
            self.epsilon = 1e-5
            for state in ("train_features", "train_targets", "test_features", "test_targets"):
                self.add_state(state, default=[], persistent=False)

    return _WeightedKNN


@torch.no_grad()
def _features(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Backbone (``feats``) and projector (``z``) features of every image, and the labels."""
    feats, projected, labels = [], [], []
    for images, targets in loader:
        out = model(images.to(device))
        feats.append(out["feats"].float().cpu())
        if "z" in out:
            projected.append(out["z"].float().cpu())
        labels.append(targets)
    features = {"backbone": torch.cat(feats)}
    if projected:
        features["projector"] = torch.cat(projected)
    return features, torch.cat(labels)


def run_knn(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Weighted kNN of a pretrained checkpoint's features, as solo-learn's main_knn.py computes it.

    Returns ``{"<feature>/k=<k>/<distance>[/T=<t>]": {"acc1": %, "acc5": %}}`` over the grid.
    """
    require_solo()
    from solo.data.classification_dataloader import prepare_transforms

    cfg = _checked_copy(cfg)
    ks, temperatures, distances, feature_types = _knn_grid(cfg)
    starting_weights = knn_starting_weights(cfg)
    if starting_weights is None:
        ckpt, args_path = _knn_checkpoint(cfg)
        method_cfg = OmegaConf.create(json.loads(args_path.read_text()))
        model = _method_class(method_cfg.get("method")).load_from_checkpoint(
            ckpt, map_location="cpu", strict=False, cfg=method_cfg
        )
    else:
        model, method_cfg = starting_weights
    _prepare_data(cfg)
    _resolve_devices(cfg)
    if cfg.accelerator in _GPU_ACCELERATORS:
        device = torch.device("cuda", cfg.devices[0])
    elif cfg.accelerator in ("cpu", "mps"):
        device = torch.device(cfg.accelerator)
    else:
        raise LaunchError(
            f"accelerator={cfg.accelerator!r} is not valid for knn: use cpu, gpu or mps"
        )
    model = model.to(device).eval()

    dataset = cfg.data.dataset
    if dataset == "custom":
        trained = method_cfg.augmentations[0]
        view = cfg.data.get("augmentations") or {}
        _, transform = _eval_transforms(
            dataset,
            view.get("crop_size", trained.crop_size),
            view.get("mean", trained.get("mean", IMAGENET_DEFAULT_MEAN)),
            view.get("std", trained.get("std", IMAGENET_DEFAULT_STD)),
        )
    else:
        transform = prepare_transforms(dataset)[1]
    cfg.data.format = cfg.data.get("format", "image_folder")
    train_dataset, val_dataset = _classification_datasets(cfg, transform, transform)
    loaders = [
        DataLoader(ds, batch_size=cfg.get("batch_size", 16), num_workers=cfg.get("num_workers", 4))
        for ds in (train_dataset, val_dataset)
    ]
    (train_features, train_targets), (test_features, test_targets) = (
        _features(model, loader, device) for loader in loaders
    )
    missing = [f for f in feature_types if f not in train_features]
    if missing:
        raise LaunchError(
            f"feature_type {missing[0]!r}: method {method_cfg.method!r} returns no projector "
            "output 'z'; use feature_type=[backbone]"
        )

    knn_class = _knn_metric_class()
    results: dict[str, dict[str, float]] = {}
    for feature in feature_types:
        for k in ks:
            for distance in distances:
                for temperature in temperatures if distance == "cosine" else [None]:
                    knn = knn_class(k=k, T=temperature, distance_fx=distance)
                    knn(
                        train_features=train_features[feature],
                        train_targets=train_targets,
                        test_features=test_features[feature],
                        test_targets=test_targets,
                    )
                    acc1, acc5 = knn.compute()
                    key = f"{feature}/k={k}/{distance}"
                    if temperature is not None:
                        key += f"/T={temperature:g}"
                    results[key] = {"acc1": float(acc1), "acc5": float(acc5)}
    return results


# --------------------------------------------------------------------------- command line

_EPILOG = """\
overrides are hydra's: key=value, +new_key=value, ~key. Examples:
  solo-fgsynth pretrain --config-path scripts/pretrain/fgmarks --config-name fgsynth_byol
  solo-fgsynth pretrain -cp scripts/pretrain/custom -cn byol data.train_path=/d/train \\
      data.val_path=/d/val accelerator=cpu devices=2 strategy=ddp
  solo-fgsynth linear -cp scripts/linear/fgmarks -cn byol pretrained_feature_extractor=RUN.ckpt
  solo-fgsynth knn -cp scripts/knn/fgmarks -cn knn pretrained_checkpoint_dir=trained_models/byol/RUN
plugin datasets (fgmarks, cub200, cars, aircraft, imagefolder) are prepared under
$SOLO_FGSYNTH_DATA_DIR (default ~/.cache/solo-fgsynth/data)."""


def _parse(command: str, description: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"solo-fgsynth {command}",
        description=description,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-path",
        "-cp",
        help="directory of the yaml config (default: the directory part of --config-name, or .)",
    )
    parser.add_argument(
        "--config-name", "-cn", required=True, help="config name in that directory, e.g. byol"
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="hydra overrides")
    args = parser.parse_intermixed_args(list(argv))
    if args.config_path is None:
        name = Path(args.config_name)
        args.config_path, args.config_name = str(name.parent), name.name
    return args


def _command(command: str, description: str, argv: Sequence[str], action: Callable) -> int:
    """Parse ``argv``, compose the config, run ``action``; config errors are one line, exit 2."""
    require_solo()
    args = _parse(command, description, argv)
    try:
        cfg = load_config(args.config_path, args.config_name, args.overrides)
        result = action(cfg)
    except (LaunchError, HydraException) as error:
        print(f"solo-fgsynth {command}: {error}", file=sys.stderr)
        return 2
    if rank_zero_only.rank == 0:
        _report(result)
    return 0


def _report(result: Any) -> None:
    if isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {value}")
    else:
        print(f"last checkpoint: {result}")


def pretrain(argv: list[str]) -> int:
    """``solo-fgsynth pretrain``: pretrain any registered method; prints the last checkpoint."""
    return _command(
        "pretrain", "Pretrain a solo-learn method from a yaml config.", argv, run_pretrain
    )


def linear(argv: list[str]) -> int:
    """``solo-fgsynth linear``: offline linear evaluation; prints the final validation metrics."""
    return _command(
        "linear",
        "Linear evaluation of a pretrained checkpoint (solo-learn linear config).",
        argv,
        run_linear,
    )


def knn(argv: list[str]) -> int:
    """``solo-fgsynth knn``: weighted kNN of a checkpoint's features; prints acc@1/5 per setting."""
    return _command("knn", "Weighted kNN evaluation of a pretrained checkpoint.", argv, run_knn)

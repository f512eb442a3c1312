"""Weighted kNN of a pretrained checkpoint's features, as solo-learn's ``main_knn.py`` does it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from solo_fgsynth._io import atomic_write_json
from solo_fgsynth._solo import require_solo
from solo_fgsynth.backbones.config import knn_starting_weights
from solo_fgsynth.checkpoints import load_fitting, read_lightning_state, read_training_recipe
from solo_fgsynth.launch.common import (
    _classification_datasets,
    _eval_transforms,
)
from solo_fgsynth.launch.config import (
    GPU_ACCELERATORS,
    LaunchError,
    _checked_copy,
    _method_class,
    _prepare_data,
    _resolve_devices,
)
from solo_fgsynth.launch.noise import silence_known_noise
from solo_fgsynth.launch.recipe import follow_recipe
from solo_fgsynth.metrics import weighted_knn
from solo_fgsynth.validation import check_choice, check_int, check_number

KNN_DISTANCES = ("euclidean", "cosine")
KNN_FEATURES = ("backbone", "projector")


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
    ks = [check_int("k", k, 1, error=LaunchError) for k in ks]
    temperatures = [
        check_number("temperature", t, 0, low_open=True, error=LaunchError) for t in temperatures
    ]
    for name, values, allowed in (
        ("distance_function", distances, KNN_DISTANCES),
        ("feature_type", features, KNN_FEATURES),
    ):
        for value in values:
            check_choice(name, value, allowed, error=LaunchError)
    return ks, temperatures, distances, features


def trained_model(method_cfg: DictConfig, ckpt: Path, key: str) -> nn.Module:
    """The method of ``args.json`` with the checkpoint's weights; refused unless they all fit."""
    state = read_lightning_state(ckpt, f"{key}={str(ckpt)!r}")
    if method_cfg.get("method") == "fgsynth":
        from solo_fgsynth.methods.fgsynth import evaluable_recipe

        method_cfg = evaluable_recipe(method_cfg)
    model = _method_class(method_cfg.get("method"))(method_cfg)  # a recipe pretraining checked
    misfit = f"{ckpt} does not fit the method its args.json describes"
    load_fitting(model, state, misfit, ignore_unexpected=True)
    return model


@torch.no_grad()
def _features(
    model: nn.Module, loader: DataLoader, device: torch.device, description: str
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Backbone (``feats``) and projector (``z``) features of every image, and the labels."""
    feats, projected, labels = [], [], []
    for images, targets in tqdm(loader, desc=description, unit="batch", leave=False):
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

    Returns ``{"<feature>/k=<k>/<distance>[/T=<t>]": {"acc1": %, "acc5": %}}`` over the grid,
    also written beside the checkpoint as ``knn-<checkpoint stem>.json``. The data and crop
    follow the checkpoint's args.json where the config leaves them unset
    (:mod:`solo_fgsynth.launch.recipe`).
    """
    require_solo()
    silence_known_noise()
    from solo.data.classification_dataloader import prepare_transforms

    cfg = _checked_copy(cfg)
    ks, temperatures, distances, feature_types = _knn_grid(cfg)
    starting_weights = knn_starting_weights(cfg)
    if starting_weights is None:
        ckpt, args_path = _knn_checkpoint(cfg)
        method_cfg = OmegaConf.create(read_training_recipe(args_path))
        key = "pretrained_feature_extractor"
        if cfg.get("pretrained_feature_extractor") is None:
            key = "the newest checkpoint of pretrained_checkpoint_dir"
        print(follow_recipe(cfg, args_path).summary(), flush=True)
        model = trained_model(method_cfg, ckpt, key)
    else:
        ckpt = None
        model, method_cfg = starting_weights
    _resolve_devices(cfg)  # a config this machine cannot run fails before any data work
    if cfg.accelerator in GPU_ACCELERATORS:
        device = torch.device("cuda", cfg.devices[0])
    elif cfg.accelerator in ("cpu", "mps"):
        device = torch.device(cfg.accelerator)
    else:
        raise LaunchError(
            f"accelerator={cfg.accelerator!r} is not valid for knn: use cpu, gpu or mps"
        )
    _prepare_data(cfg)
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
        _features(model, loader, device, f"knn: {split} features")
        for loader, split in zip(loaders, ("training", "validation"), strict=True)
    )
    missing = [f for f in feature_types if f not in train_features]
    if missing:
        raise LaunchError(
            f"feature_type {missing[0]!r}: method {method_cfg.method!r} returns no projector "
            "output 'z'; use feature_type=[backbone]"
        )

    results: dict[str, dict[str, float]] = {}
    for feature in feature_types:
        for k in ks:
            for distance in distances:
                for temperature in temperatures if distance == "cosine" else [None]:
                    acc1, acc5 = weighted_knn(
                        train_features[feature],
                        train_targets,
                        test_features[feature],
                        test_targets,
                        k=k,
                        temperature=temperature or 1.0,
                        distance=distance,
                    )
                    key = f"{feature}/k={k}/{distance}"
                    if temperature is not None:
                        key += f"/T={temperature:g}"
                    results[key] = {"acc1": acc1, "acc5": acc5}
    if ckpt is not None:
        path = ckpt.with_name(f"knn-{ckpt.stem}.json")
        atomic_write_json(path, {"checkpoint": str(ckpt), "results": results})
        print(f"knn results written to {path}", flush=True)
    return results

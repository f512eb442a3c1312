"""Datasets for fine-grained SSL: the embedded fgmarks generator and FGVR layouts.

:func:`prepare_data_cfg` turns a solo-learn ``cfg.data`` node naming one of
:data:`DATASET_NAMES` into the stock ``custom`` + ``image_folder`` dataset that solo-learn loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from solo_fgsynth.data.checked_folder import checked_image_folder
from solo_fgsynth.data.fgmarks import FGMarksConfig, generate, materialize, sample_scenes
from solo_fgsynth.data.layouts import (
    EXPECTED_LAYOUTS,
    UnreadableImagesError,
    prepare_layout,
    verify_images,
)
from solo_fgsynth.errors import DataError, MissingDataError

DATASET_NAMES = ("fgmarks", "cub200", "cars", "aircraft", "imagefolder")
CACHE_ENV_VAR = "SOLO_FGSYNTH_DATA_DIR"

__all__ = [
    "CACHE_ENV_VAR",
    "DATASET_NAMES",
    "FGMarksConfig",
    "UnreadableImagesError",
    "check_custom_images",
    "default_cache_dir",
    "generate",
    "materialize",
    "prepare_data_cfg",
    "prepare_layout",
    "sample_scenes",
    "verify_images",
]


def default_cache_dir() -> Path:
    """Where prepared datasets live: ``$SOLO_FGSYNTH_DATA_DIR``, else the user cache folder."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "solo-fgsynth" / "data"


def _optional_value(node: DictConfig, key: str) -> Any:
    if key not in node or OmegaConf.is_missing(node, key):
        return None
    value = node[key]
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def prepare_data_cfg(data_cfg: DictConfig, cache_dir: Path, progress: bool = True) -> None:
    """Materialise the dataset that ``data_cfg.dataset`` names and rewrite the node in place.

    For a name in :data:`DATASET_NAMES` the node becomes ``dataset: custom``,
    ``format: image_folder`` with ``train_path``/``val_path`` set and ``no_labels: false``; the
    original name is kept in ``source_dataset``. fgmarks reads its knobs from ``data.fgmarks``;
    the FGVR layouts read the dataset location from ``data.root`` and leave unreadable images out
    when ``data.skip_unreadable`` is true. Other names are left untouched.
    """
    name = _optional_value(data_cfg, "dataset")
    if name not in DATASET_NAMES:
        return
    cache_dir = Path(cache_dir).expanduser()
    if name == "fgmarks":
        config = FGMarksConfig.from_mapping(_optional_value(data_cfg, "fgmarks"))
        train_dir, val_dir = materialize(config, cache_dir / "fgmarks", progress=progress)
    else:
        root = _optional_value(data_cfg, "root")
        if root is None:
            raise DataError(
                f"data.root must be set to the folder holding the {name} dataset "
                f"({EXPECTED_LAYOUTS[name]}): add ++data.root=PATH"
            )
        skip = bool(_optional_value(data_cfg, "skip_unreadable"))
        train_dir, val_dir = prepare_layout(
            name, Path(str(root)), cache_dir, progress=progress, skip_unreadable=skip
        )
    with open_dict(data_cfg):
        data_cfg.source_dataset = name
        data_cfg.dataset = "custom"
        data_cfg.format = "image_folder"
        data_cfg.train_path = str(train_dir)
        data_cfg.val_path = str(val_dir)
        data_cfg.no_labels = False


def check_custom_images(data_cfg: DictConfig, cache_dir: Path, progress: bool = True) -> None:
    """Decode every image of a user's ``custom`` image_folder dataset before training.

    An unreadable image raises :class:`UnreadableImagesError` naming it; with
    ``data.skip_unreadable`` true, ``train_path``/``val_path`` are pointed at cached trees
    without the unreadable files instead, with a warning. The plugin's own datasets are
    checked when they are prepared, other formats and datasets are left alone.
    """
    is_image_folder = _optional_value(data_cfg, "format") in (None, "image_folder")
    if _optional_value(data_cfg, "dataset") != "custom" or not is_image_folder:
        return
    if _optional_value(data_cfg, "source_dataset") is not None:
        return
    skip = bool(_optional_value(data_cfg, "skip_unreadable"))
    unlabelled_train = bool(_optional_value(data_cfg, "no_labels"))
    for key, labelled in (("train_path", not unlabelled_train), ("val_path", True)):
        path = _optional_value(data_cfg, key)
        if path is None:
            continue
        if not Path(str(path)).expanduser().is_dir():
            raise MissingDataError(
                f"data.{key}={str(path)!r} does not exist or is not a directory; "
                "a custom dataset is a folder of class folders of images"
            )
        checked = checked_image_folder(
            Path(str(path)), labelled, Path(cache_dir), skip_unreadable=skip, progress=progress
        )
        if checked != Path(str(path)).expanduser().resolve():
            with open_dict(data_cfg):
                data_cfg[key] = str(checked)

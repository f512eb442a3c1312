"""The launcher's config: hydra composition, and the value checks every stage shares.

Devices, the plugin's datasets and the method name are resolved or refused here, and solo-learn's
own config checks are turned into one line naming the value; a stage's own checks (checkpoint
paths, kNN options) stay in its module.
"""

from __future__ import annotations

import copy
import os
import re
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_fgsynth.errors import LaunchError, UserError
from solo_fgsynth.resources import config_dir, scripts_dir

GPU_ACCELERATORS = ("gpu", "cuda")
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[\w.\-/@]+")


def load_config(
    config_path: str | os.PathLike[str], config_name: str, overrides: Sequence[str] = ()
) -> DictConfig:
    """Compose a yaml config with hydra overrides; no hydra outputs dir, no change of cwd.

    ``config_path`` is a folder, or the relative name of a packaged one (``scripts/pretrain/
    fgmarks``); a folder that exists from the working directory wins.
    """
    directory = config_dir(config_path)
    if directory is None:
        raise LaunchError(
            f"config path {str(config_path)!r} is not a directory, here or among the packaged "
            f"configs in {scripts_dir()} (pretrain/, linear/, knn/)"
        )
    name = config_name.removesuffix(".yaml")
    if not (directory / f"{name}.yaml").is_file():
        available = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
        raise LaunchError(f"no config {config_name!r} in {directory}; available: {available}")
    overrides = [_quote_equals(override) for override in overrides]
    with initialize_config_dir(
        config_dir=str(directory), version_base="1.2", job_name="solo_fgsynth"
    ):
        try:
            cfg = compose(config_name=name, overrides=list(overrides))
        except HydraException as error:
            raise LaunchError(str(error)) from error
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
    """Rewrite the plugin's datasets (fgmarks, cub200, ...) into solo-learn's ``custom`` dataset,
    and decode every image of a user's image folder, before any training."""
    from solo_fgsynth.data import check_custom_images, default_cache_dir, prepare_data_cfg

    if cfg.get("name") is not None:  # "byol-${data.dataset}" names the dataset the user chose,
        cfg.name = str(cfg.name)  # not the 'custom' it is rewritten into below
    prepare_data_cfg(cfg.data, default_cache_dir())
    check_custom_images(cfg.data, default_cache_dir())
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
    on_cpu = "accelerator=cpu devices=1 precision=32"
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise LaunchError(
            f"accelerator={cfg.get('accelerator')!r} but this machine has no CUDA device; "
            f"to run on the CPU add {on_cpu}"
        )
    cfg.accelerator = accelerator
    cfg.devices = _device_ids(cfg.get("devices", "auto"), accelerator)
    if accelerator in GPU_ACCELERATORS:
        visible = torch.cuda.device_count()
        absent = [i for i in cfg.devices if i >= visible]
        if absent:
            raise LaunchError(
                f"devices={list(cfg.devices)} but only {visible} CUDA device(s) are visible "
                f"(ids 0-{visible - 1})"
            )
    precision = str(cfg.get("precision", "32"))
    if accelerator == "cpu" and precision in ("16", "16-mixed", "16-true"):
        raise LaunchError(
            f"precision={precision!r} needs a GPU; on the CPU use precision=32 (or bf16-mixed)"
        )


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
        count = torch.cuda.device_count() if accelerator in GPU_ACCELERATORS else 1
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


def _checked_by_solo(step: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a solo-learn config check (``parse_cfg``, which runs the method's
    ``add_and_assert_specific_cfg``); its failed checks become one line naming the value.

    Those checks read nothing but the config, so a ValueError, KeyError or failed assert there
    is a value the config holds; a bare assert is reported by its condition. Nothing else runs
    under it (building a model, say), so a bug elsewhere stays a traceback.
    """
    try:
        return step(cfg)
    except UserError:
        raise
    except (ValueError, AssertionError, KeyError) as error:
        message = str(error).strip()
        if not message:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            message = f"solo-learn's config check `{frame.line}` failed ({where})"
        raise LaunchError(f"invalid config: {message}") from error


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

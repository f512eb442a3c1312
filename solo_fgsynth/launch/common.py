"""What every launcher stage shares: config composition, data and device set-up, fit, CLI."""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import re
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from solo_fgsynth._solo import require_solo
from solo_fgsynth.errors import ConfigValueError, UserError, report_user_error
from solo_fgsynth.resources import config_dir, scripts_dir

GPU_ACCELERATORS = ("gpu", "cuda")
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[\w.\-/@]+")


class LaunchError(ConfigValueError):
    """A config value the launcher cannot run with; the message names it and what is allowed."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


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
    from solo_fgsynth.data import (
        UnreadableImagesError,
        check_custom_images,
        default_cache_dir,
        prepare_data_cfg,
    )

    try:
        prepare_data_cfg(cfg.data, default_cache_dir())
        check_custom_images(cfg.data, default_cache_dir())
    except UnreadableImagesError as error:
        raise LaunchError(
            f"{error.summary()}; fix or remove them, or skip them with a warning: "
            "++data.skip_unreadable=true",
            details=str(error).splitlines(),
        ) from error
    except (ValueError, FileNotFoundError) as error:
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
    """Run a solo-learn step that validates the config (``parse_cfg``, a method's constructor,
    which checks its ``method_kwargs``); its failed checks become one line naming the value.

    Those steps read nothing but the config, so a ValueError, KeyError or failed assert there is
    a value the config holds; a bare assert is reported by its condition.
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


def load_weights_or_refuse(module: nn.Module, state: dict[str, Any], misfit: str) -> None:
    """Load ``state`` into ``module``; a shape mismatch or a missing weight is a LaunchError.

    Keys the module does not have (a method's projector, for a bare backbone) are ignored, as
    solo-learn's evaluation scripts ignore them; ``misfit`` starts the message.
    """
    try:
        missing, _ = module.load_state_dict(state, strict=False)
    except RuntimeError as error:
        first_problem = str(error).splitlines()[1].strip()
        raise LaunchError(f"{misfit}: {first_problem}") from error
    if missing:
        more = " ..." if len(missing) > 4 else ""
        raise LaunchError(f"{misfit}: no weights for {', '.join(missing[:4])}{more}")


def _checkpoint_state(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The Lightning ``state_dict`` of the checkpoint that config key ``key`` names, on CPU."""
    path = str(path)
    if not path.endswith(CHECKPOINT_SUFFIXES) or not Path(path).is_file():
        raise LaunchError(f"{key}={path!r} is not a {'/'.join(CHECKPOINT_SUFFIXES)} file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises pickle, zip, EOF or runtime errors
        reason = (str(error).strip().splitlines() or [""])[0]
        raise LaunchError(
            f"{key}={path!r} is not a readable checkpoint ({type(error).__name__}: {reason})"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LaunchError(f"{path} has no 'state_dict'; expected a solo-learn/Lightning checkpoint")
    return checkpoint["state_dict"]


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
    except UserError as error:
        return report_user_error(command, error)
    if rank_zero_only.rank == 0:
        _report(result)
    return 0


def _report(result: Any) -> None:
    if isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {value}")
    else:
        print(f"last checkpoint: {result}")

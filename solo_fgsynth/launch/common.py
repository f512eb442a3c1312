"""What every launcher stage shares once its config is checked: weights, fit, logging."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from solo_fgsynth.checkpoints import read_checkpoint
from solo_fgsynth.launch.config import LaunchError


def _strategy(cfg: DictConfig) -> str | Strategy:
    """The Trainer strategy: solo-learn's DDP without unused-parameter search for ``ddp``."""
    strategy = cfg.get("strategy")
    if strategy is None:
        return "auto"
    if strategy == "ddp":
        return DDPStrategy(find_unused_parameters=False)
    return strategy


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


def finished_training(cfg: DictConfig, checkpoint: str | Path) -> int | None:
    """The checkpoint's global step when it already holds all the training ``cfg`` asks for.

    Finished means its epoch is the last of ``max_epochs`` or, with ``max_steps`` set, its step
    reached it; None otherwise (also for a checkpoint that records neither).
    """
    state = read_checkpoint(checkpoint)
    epoch, step = state.get("epoch"), state.get("global_step")
    if not isinstance(epoch, int) or not isinstance(step, int):
        return None
    max_steps = cfg.get("max_steps") or -1
    done = step >= max_steps if max_steps > 0 else epoch + 1 >= cfg.get("max_epochs", 0)
    return step if done else None


def _fit(
    cfg: DictConfig,
    model: LightningModule,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    logdir: Path,
    callbacks: Iterable[Callback] = (),
    stop_if_finished: bool = False,
) -> tuple[Trainer | None, Path | None]:
    """Resume, checkpoint, log and fit as solo-learn's scripts do; return trainer and checkpoint.

    With ``stop_if_finished``, a resumed checkpoint that already holds the whole training is
    returned as it is, with no trainer and no new log folder, and a line saying so.
    """
    from solo.utils.checkpointer import Checkpointer

    ckpt_path, run_id = _resume(cfg, logdir)
    if stop_if_finished and ckpt_path is not None and cfg.checkpoint.enabled:
        step = finished_training(cfg, ckpt_path)
        if step is not None:
            if rank_zero_only.rank == 0:
                print(
                    f"already finished at step {step} ({ckpt_path}); nothing to train; pass "
                    "auto_resume.enabled=false to start over",
                    flush=True,
                )
            return None, Path(ckpt_path)
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

"""Keep the checkpoint with the best leave-one-out retrieval score, as FGVR-SSL practice does.

LCR's maintainers keep the checkpoint with the best retrieval score, not the last one. CUB,
Cars and Aircraft have no validation split (our "val" is their official test split), so by
default the score is measured on a held-out part of the training split, fixed by a seed and
left out of pretraining; selecting on the test split is an explicitly named option whose
results are labelled as such.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from solo_fgsynth._io import atomic_write_json
from solo_fgsynth.errors import LaunchError
from solo_fgsynth.metrics import retrieval_metrics
from solo_fgsynth.validation import check_choice, check_int, check_number

SELECTIONS = {
    "train_holdout": "held-out part of the training split",
    "test": "the test split (LCR's selection; the test set leaks into the choice)",
}
METRICS = ("retrieval_map", "retrieval_top1", "retrieval_top5")
# What a benchmark evaluates: the last checkpoint, or the best one by a named selection.
CHECKPOINT_CHOICES = {"last": None, "best": "train_holdout", "best-on-test": "test"}
BEST_NAME = "best.pth"  # not *.ckpt: auto-resume and kNN's run-directory mode pick *.ckpt files


def checkpoint_label(choice: str) -> str:
    """How results of a ``CHECKPOINT_CHOICES`` entry are labelled."""
    selection = CHECKPOINT_CHOICES[choice]
    if selection is None:
        return "last checkpoint"
    return f"best checkpoint by retrieval mAP, selected on {SELECTIONS[selection]}"


def holdout_split(
    targets: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices to train on and to hold out: ``fraction`` of every class, fixed by ``seed``.

    Each class keeps at least one image for training; the split depends only on the labels,
    the fraction and the seed, so every method and every rank gets the same one.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(list(targets))
    held: list[int] = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(round(fraction * len(members)), len(members) - 1)
        held.extend(members[:count].tolist())
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


class BestRetrievalCheckpoint(Callback):
    """Every ``every_n_epochs`` (and at the last epoch) score the frozen backbone; keep the best.

    The score is leave-one-out cosine retrieval on ``loader``'s images; ``metric`` (mAP by
    default) decides, ties keep the earlier epoch. The metrics are logged as
    ``best_checkpoint/<selection>/<metric>``; the best epoch's full checkpoint is written as
    ``best.pth`` in ``dirpath`` (default: the run directory of solo-learn's Checkpointer), with
    ``best.json`` recording the epoch, the scores and the selection. Epochs in between cost
    nothing.
    """

    def __init__(
        self,
        loader: DataLoader,
        every_n_epochs: int = 1,
        metric: str = "retrieval_map",
        selection: str = "train_holdout",
        dirpath: str | Path | None = None,
    ) -> None:
        check_choice("best_checkpoint.metric", metric, METRICS)
        check_choice("best_checkpoint.selection", selection, SELECTIONS)
        check_int("best_checkpoint.every_n_epochs", every_n_epochs, 1)
        self.loader = loader
        self.every_n_epochs = every_n_epochs
        self.metric = metric
        self.selection = selection
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.best_score = -math.inf
        self.best_epoch: int | None = None

    def due(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether ``epoch`` (0-based) is scored: every N-th epoch, and the last one."""
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == max_epochs

    @torch.no_grad()
    def evaluate(self, trainer: Trainer, module: LightningModule) -> dict[str, float]:
        """Retrieval metrics of ``module.backbone`` (eval mode, no gradients) on the loader."""
        backbone = module.backbone
        was_training = backbone.training
        backbone.eval()
        features, labels = [], []
        try:
            with trainer.precision_plugin.forward_context():
                for batch in self.loader:
                    images, targets = batch[-2], batch[-1]
                    features.append(backbone(images.to(module.device)).float().cpu())
                    labels.append(targets)
        finally:
            backbone.train(was_training)
        return retrieval_metrics(torch.cat(features), torch.cat(labels))

    def _directory(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath
        from solo.utils.checkpointer import Checkpointer

        for callback in trainer.callbacks:
            if isinstance(callback, Checkpointer) and hasattr(callback, "path"):
                return Path(callback.path)
        raise RuntimeError("best_checkpoint needs checkpoint.enabled=True (or a dirpath)")

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not self.due(epoch, trainer.max_epochs):
            return
        metrics = self.evaluate(trainer, module) if trainer.is_global_zero else None
        metrics = trainer.strategy.broadcast(metrics, src=0)
        for name, value in metrics.items():
            module.log(f"best_checkpoint/{self.selection}/{name}", value, on_epoch=True)
        score = metrics[self.metric]
        if score <= self.best_score:
            return
        self.best_score, self.best_epoch = score, epoch
        directory = self._directory(trainer)
        temporary = directory / f".{BEST_NAME}.tmp"
        trainer.save_checkpoint(temporary)
        if trainer.is_global_zero:
            temporary.replace(directory / BEST_NAME)
            record = {
                "epoch": epoch,
                "metric": self.metric,
                "score": score,
                "metrics": metrics,
                "selection": self.selection,
                "selected_on": SELECTIONS[self.selection],
            }
            atomic_write_json(directory / "best.json", record)
        rank_zero_info(f"best_checkpoint: epoch {epoch} {self.metric}={score:.2f} -> {BEST_NAME}")

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]


def best_checkpoint_from_cfg(
    cfg: DictConfig,
    train_dataset: Dataset,
    val_loader: DataLoader | None,
    eval_transform: Callable,
) -> tuple[Dataset, list[Callback]]:
    """The pretraining dataset and callbacks for a config's ``best_checkpoint`` node.

    With ``selection: train_holdout`` the held-out images are removed from ``train_dataset``
    and scored through ``eval_transform``; with ``selection: test`` the validation (official
    test) loader is scored and the training data is unchanged. Disabled: nothing changes.
    """
    node = cfg.get("best_checkpoint") or {}
    if not node.get("enabled", False):
        return train_dataset, []
    key = "best_checkpoint."
    every = check_int(f"{key}every_n_epochs", node.get("every_n_epochs", 1), 1)
    metric = check_choice(f"{key}metric", node.get("metric", "retrieval_map"), METRICS)
    selection = check_choice(f"{key}selection", node.get("selection", "train_holdout"), SELECTIONS)
    fraction = check_number(
        f"{key}holdout_fraction",
        node.get("holdout_fraction", 0.1),
        0,
        1,
        low_open=True,
        high_open=True,
    )
    seed = check_int(f"{key}holdout_seed", node.get("holdout_seed", 0))
    if not cfg.checkpoint.enabled:
        raise LaunchError(
            "best_checkpoint.enabled=True needs checkpoint.enabled=True "
            f"({BEST_NAME} is kept beside the last checkpoint)"
        )
    batch_size, workers = cfg.optimizer.batch_size, cfg.data.num_workers
    if selection == "test":
        if val_loader is None:
            raise LaunchError("best_checkpoint.selection=test needs a labelled data.val_path")
        loader = DataLoader(val_loader.dataset, batch_size=batch_size, num_workers=workers)
    else:
        targets = getattr(train_dataset, "targets", None)
        if targets is None or cfg.data.get("no_labels"):
            raise LaunchError(
                "best_checkpoint.selection=train_holdout needs labelled training data; "
                "use selection=test or disable best_checkpoint"
            )
        train_indices, held_indices = holdout_split(targets, fraction, seed)
        if len(held_indices) < 2:
            raise LaunchError(
                f"best_checkpoint.holdout_fraction={fraction} holds out {len(held_indices)} "
                "image(s); retrieval needs at least 2 of a class"
            )
        scored = copy.copy(train_dataset)
        scored.transform = eval_transform
        loader = DataLoader(
            Subset(scored, held_indices), batch_size=batch_size, num_workers=workers
        )
        train_dataset = Subset(train_dataset, train_indices)
        rank_zero_info(
            f"best_checkpoint: {len(held_indices)} training images held out for selection "
            f"(fraction {fraction}, seed {seed})"
        )
    callback = BestRetrievalCheckpoint(loader, every, metric, selection)
    return train_dataset, [callback]

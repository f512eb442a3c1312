"""Best-by-retrieval checkpointing: the held-out split, the choice of epoch, and idle epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from solo_fgsynth.callbacks import BEST_NAME, BestRetrievalCheckpoint, holdout_split
from solo_fgsynth.metrics import retrieval_metrics


def test_holdout_takes_the_fraction_of_every_class_fixed_by_the_seed() -> None:
    targets = [0] * 30 + [1] * 20 + [2] * 1
    train, held = holdout_split(targets, 0.1, seed=0)
    assert sorted(train + held) == list(range(51))
    assert [sum(targets[i] == c for i in held) for c in range(3)] == [3, 2, 0]
    assert holdout_split(targets, 0.1, seed=0) == (train, held)
    assert holdout_split(targets, 0.1, seed=1)[1] != held
    _, most = holdout_split([0, 0, 1, 1], 0.9, seed=0)
    assert len(most) == 2  # each class keeps one image to train on


class _CountingDataset(Dataset):
    """Eight 4-d points of two classes; counts how often an item is read."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 4, generator=generator)
        self.y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        self.reads = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        self.reads += 1
        return self.x[index], self.y[index]


class _Model(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 3)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self.backbone(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callbacks: list[Callback], epochs: int) -> _Model:
    model = _Model()
    train = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, train)
    return model


class _Scripted(BestRetrievalCheckpoint):
    """Scores come from a list instead of the features: one per scored epoch."""

    def __init__(self, scores: list[float], directory: Path) -> None:
        super().__init__(DataLoader(_CountingDataset()), every_n_epochs=1, dirpath=directory)
        self.scores = iter(scores)

    def evaluate(self, trainer: Trainer, module: LightningModule) -> dict[str, float]:
        score = next(self.scores)
        return {"retrieval_map": score, "retrieval_top1": 0.0, "retrieval_top5": 0.0}


class _Snapshots(Callback):
    def __init__(self) -> None:
        self.weights: list[Tensor] = []

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.weights.append(module.backbone.weight.detach().clone())


def test_keeps_the_epoch_with_the_best_score_and_the_first_of_a_tie(tmp_path: Path) -> None:
    snapshots = _Snapshots()
    _fit([snapshots, _Scripted([50.0, 70.0, 60.0, 80.0, 80.0, 75.0], tmp_path)], epochs=6)
    best = torch.load(tmp_path / BEST_NAME, map_location="cpu", weights_only=False)
    assert best["epoch"] == 3
    assert torch.equal(best["state_dict"]["backbone.weight"], snapshots.weights[3])
    record = json.loads((tmp_path / "best.json").read_text())
    assert (record["epoch"], record["score"], record["selection"]) == (3, 80.0, "train_holdout")
    assert record["selected_on"] == "held-out part of the training split"
    assert not list(tmp_path.glob(".*tmp"))


def test_scores_only_every_nth_and_the_last_epoch_and_reads_nothing_between(
    tmp_path: Path,
) -> None:
    dataset = _CountingDataset()
    callback = BestRetrievalCheckpoint(
        DataLoader(dataset, batch_size=3), every_n_epochs=3, dirpath=tmp_path
    )
    scored: list[int] = []
    original = callback.evaluate

    def evaluate(trainer: Trainer, module: LightningModule) -> dict[str, float]:
        scored.append(trainer.current_epoch)
        return original(trainer, module)

    callback.evaluate = evaluate
    model = _fit([callback], epochs=7)
    assert scored == [2, 5, 6]
    assert dataset.reads == 3 * len(dataset)
    with torch.no_grad():
        final = retrieval_metrics(model.backbone(dataset.x), dataset.y)["retrieval_map"]
    assert callback.best_epoch in scored and callback.best_score >= final - 1e-9


def test_logged_metrics_equal_retrieval_of_the_frozen_backbone(tmp_path: Path) -> None:
    dataset = _CountingDataset()
    callback = BestRetrievalCheckpoint(DataLoader(dataset, batch_size=5), dirpath=tmp_path)
    model = _Model()
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4))
    with torch.no_grad():
        expected = retrieval_metrics(model.backbone(dataset.x), dataset.y)
    for name, value in expected.items():
        logged = float(trainer.callback_metrics[f"best_checkpoint/train_holdout/{name}"])
        assert logged == pytest.approx(value, abs=1e-4)
    assert model.backbone.training  # the callback restored the mode it found


def test_bad_settings_are_named() -> None:
    loader = DataLoader(_CountingDataset())
    with pytest.raises(
        ValueError, match=r"selection='val' is not supported: allowed are train_holdout, "
    ):
        BestRetrievalCheckpoint(loader, selection="val")
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        BestRetrievalCheckpoint(loader, every_n_epochs=0)


@pytest.fixture(scope="module")
def image_folder(make_image_folder) -> Path:
    """5 classes of four 32 px images each."""
    return make_image_folder(4)


@pytest.mark.solo
@pytest.mark.parametrize(("selection", "batches"), [("train_holdout", 2), ("test", 5)])
def test_launcher_keeps_best_beside_the_last_and_trains_without_the_held_out_images(
    selection: str, batches: int, image_folder: Path, tmp_path: Path, batch_counter: Callback
) -> None:
    from solo_fgsynth.launch import load_config, run_pretrain

    cfg = load_config(
        Path(__file__).resolve().parents[1] / "scripts" / "pretrain" / "custom",
        "byol",
        [
            "backbone.name=resnet18",
            "optimizer.batch_size=4",
            "data.num_workers=0",
            "accelerator=cpu",
            "devices=1",
            "strategy=auto",
            "precision=32",
            "max_epochs=1",
            "+num_sanity_val_steps=0",
            "+enable_progress_bar=False",
            f"data.train_path={image_folder}",
            f"data.val_path={image_folder}",
            "augmentations.0.crop_size=32",
            "augmentations.1.crop_size=32",
            f"checkpoint.dir={tmp_path}",
            "++best_checkpoint.enabled=True",
            f"++best_checkpoint.selection={selection}",
            "++best_checkpoint.holdout_fraction=0.5",
        ],
    )
    last = run_pretrain(cfg, extra_callbacks=[batch_counter])
    assert batch_counter.batches == batches  # 20 images, or 10 left after holding out half; batch 4
    assert last is not None and (last.parent / BEST_NAME).is_file()
    record = json.loads((last.parent / "best.json").read_text())
    assert record["selection"] == selection and record["epoch"] == 0
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == [last.name]

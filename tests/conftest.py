"""Shared test setup: the ``solo`` marker skips, with the install lines, without solo-learn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf

from solo_fgsynth._solo import SOLO_INSTALL_HELP, solo_available

SOLO_SKIP_REASON = f"needs solo-learn. {SOLO_INSTALL_HELP}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``solo`` with a reason that says how to install solo-learn."""
    if solo_available():
        return
    skip = pytest.mark.skip(reason=SOLO_SKIP_REASON)
    for item in items:
        if "solo" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    """Every test starts from the same seed on a single thread, so values are reproducible."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def make_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """A factory of image folders: 5 classes of ``per_class`` random 32 px images, seed 0."""
    from PIL import Image

    def make(per_class: int) -> Path:
        root = tmp_path_factory.mktemp("images")
        generator = torch.Generator().manual_seed(0)
        for c in range(5):
            (root / f"c{c}").mkdir()
            for i in range(per_class):
                shape = (32, 32, 3)
                pixels = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / f"c{c}" / f"{i}.png")
        return root

    return make


class BatchCounter(Callback):
    """Counts the training batches a run trains, so a test can tell what a resume skipped."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.batches += 1


@pytest.fixture
def batch_counter() -> BatchCounter:
    """A fresh :class:`BatchCounter` for one run."""
    return BatchCounter()


def tiny_method_cfg(
    method: str,
    method_kwargs: dict,
    backbone: dict,
    augmentations: list[dict],
    batch_size: int,
    max_epochs: int,
) -> DictConfig:
    """A minimal, already-parsed solo-learn config for a method test: SGD, no scheduler, four
    classes, two large crops (and the small ones ``augmentations`` lists)."""
    small_crops = sum(view["num_crops"] for view in augmentations[1:])
    cfg = OmegaConf.create(
        {
            "name": "test",
            "method": method,
            "backbone": backbone,
            "data": {
                "dataset": "custom",
                "num_large_crops": 2,
                "num_small_crops": small_crops,
                "num_classes": 4,
            },
            "augmentations": augmentations,
            "optimizer": {
                "name": "sgd",
                "batch_size": batch_size,
                "lr": 0.05,
                "classifier_lr": 0.05,
                "weight_decay": 1e-5,
                "kwargs": {"momentum": 0.9},
            },
            "scheduler": {"name": "none"},
            "momentum": {"base_tau": 0.99, "final_tau": 0.99},
            "max_epochs": max_epochs,
            "method_kwargs": method_kwargs,
        }
    )
    OmegaConf.set_struct(cfg, False)
    return cfg

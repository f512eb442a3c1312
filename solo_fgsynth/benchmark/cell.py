"""One benchmark cell, run in its own process: pretrain one method/seed, then evaluate it.

A process per cell isolates peak memory and any crash; the result is written atomically,
so a finished cell is never redone unless asked and an interrupted one is never trusted.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from solo_fgsynth._io import atomic_write_json
from solo_fgsynth.backbones import init_backbone
from solo_fgsynth.benchmark.metrics import (
    LinearProbe,
    fit_linear_probe,
    knn_top1,
    probe_top1,
    retrieval_metrics,
)
from solo_fgsynth.callbacks import BEST_NAME, CHECKPOINT_CHOICES, checkpoint_label

BASE_LOSS_KEYS = ("train_neg_cos_sim_step", "train_nce_loss_step")
WARMUP_STEPS = 5


class TrainingProbe(Callback):
    """Step time, losses and the trained backbone, recorded during ``fit``."""

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self.losses: list[float] = []
        self.base_losses: list[float] = []
        self.backbone: nn.Module | None = None
        self._started = 0.0

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, *_: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, module: LightningModule, outputs: Any, *_: Any
    ) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_times.append(time.perf_counter() - self._started)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        for key in BASE_LOSS_KEYS:
            if key in trainer.callback_metrics:
                self.base_losses.append(float(trainer.callback_metrics[key]))
                break

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.backbone = module.backbone

    @property
    def step_time(self) -> float:
        """Median seconds per training step after the first few (warm-up) steps."""
        steady = self.step_times[WARMUP_STEPS:] or self.step_times
        return statistics.median(steady)


def peak_memory_mb() -> float:
    """Peak accelerator memory when on a GPU, else this process's peak resident set."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def eval_transform(crop_size: int) -> transforms.Compose:
    """Deterministic evaluation view: resize to the crop size, normalize like training."""
    return transforms.Compose(
        [
            transforms.Resize((crop_size, crop_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )


@torch.no_grad()
def extract(backbone: nn.Module, folder: str, crop_size: int, batch_size: int) -> tuple:
    """Pooled features and labels of every image in an image folder."""
    dataset = datasets.ImageFolder(folder, transform=eval_transform(crop_size))
    features, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=0):
        features.append(backbone(images))
        labels.append(targets)
    return torch.cat(features).float(), torch.cat(labels)


def gradcam_overlays(
    backbone: nn.Module,
    probe: LinearProbe,
    val_folder: str,
    crop_size: int,
    count: int,
) -> np.ndarray:
    """Grad-CAM (pytorch-grad-cam) of the linear probe's true-class score on ``count`` images.

    Returns a uint8 strip (H x count*W x 3) of heat maps over the images.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    dataset = datasets.ImageFolder(val_folder)
    picks = np.linspace(0, len(dataset) - 1, count).astype(int)
    model = nn.Sequential(backbone, probe).eval()
    panels = []
    with GradCAM(model=model, target_layers=[backbone.layer4]) as cam:
        for index in picks:
            image, label = dataset[int(index)]
            tensor = eval_transform(crop_size)(image)[None]
            heat = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(label)])[0]
            rgb = np.asarray(image.convert("RGB").resize((crop_size, crop_size))) / 255.0
            panels.append(show_cam_on_image(rgb.astype(np.float32), heat, use_rgb=True))
    return np.concatenate(panels, axis=1)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Pretrain per ``spec`` through the launcher, evaluate the backbone, return the record."""
    from solo_fgsynth.data import default_cache_dir, prepare_data_cfg
    from solo_fgsynth.launch import load_config, run_pretrain

    cell_dir = Path(spec["cell_dir"])
    choice = spec.get("checkpoint_choice", "last")
    selection = CHECKPOINT_CHOICES[choice]
    best = ["++best_checkpoint.enabled=True", f"++best_checkpoint.selection={selection}"]
    overrides = [
        *spec["overrides"],
        *(best if selection else []),
        f"++seed={spec['seed']}",
        f"++name={spec['cell']}-seed{spec['seed']}",
        f"++checkpoint.dir={cell_dir / 'checkpoints'}",
        "++wandb.enabled=False",
        "++auto_resume.enabled=False",
    ]
    cfg = load_config(spec["config_path"], spec["config_name"], overrides)
    prepare_data_cfg(cfg.data, default_cache_dir())
    training = TrainingProbe()
    checkpoint = run_pretrain(cfg, extra_callbacks=[training])
    memory = peak_memory_mb()
    if training.backbone is None:
        raise RuntimeError(f"cell {spec['cell']}: training ended without a backbone")
    backbone = training.backbone.cpu().float().eval()
    if selection is not None:
        init_backbone(backbone, str(Path(checkpoint).parent / BEST_NAME))
    crop = int(cfg.augmentations[0].crop_size)
    batch = int(spec["eval"]["batch_size"])
    train = extract(backbone, cfg.data.train_path, crop, batch)
    val = extract(backbone, cfg.data.val_path, crop, batch)
    num_classes = int(max(train[1].max(), val[1].max())) + 1
    probe = fit_linear_probe(*train, num_classes=num_classes)
    metrics = {
        "linear_top1": probe_top1(probe, *val),
        "knn_top1": knn_top1(*train, *val, k=int(spec["eval"]["knn_k"])),
        **retrieval_metrics(*val),
    }
    overlay = gradcam_overlays(backbone, probe, cfg.data.val_path, crop, spec["eval"]["gradcam"])
    Image.fromarray(overlay).save(cell_dir / "gradcam.png")
    return {
        "cell": spec["cell"],
        "method": spec["method"],
        "ablation": spec.get("ablation"),
        "seed": spec["seed"],
        "metrics": metrics,
        "step_time_s": training.step_time,
        "peak_memory_mb": memory,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "steps": len(training.losses),
        "losses": training.losses,
        "base_losses": training.base_losses,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_choice": choice,
        "evaluated": checkpoint_label(choice),
    }


def main(argv: list[str]) -> int:
    """``python -m solo_fgsynth.benchmark.cell SPEC.json``: run one cell, write its result."""
    spec = json.loads(Path(argv[0]).read_text())
    result = run_cell(spec)
    atomic_write_json(Path(spec["cell_dir"]) / "result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

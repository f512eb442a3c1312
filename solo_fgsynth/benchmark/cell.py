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
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets

from solo_fgsynth._io import atomic_write_json
from solo_fgsynth.backbones.init import init_backbone
from solo_fgsynth.benchmark.pairs import HEADROOM_STEPS, measure_cell_pairs
from solo_fgsynth.benchmark.reuse import (
    CHECKPOINT_FOLDER,
    RESULT_FILE,
    TRAINING_RECORD,
    finished_training,
    trained_fgsynth,
)
from solo_fgsynth.callbacks import BEST_NAME, CHECKPOINT_CHOICES, checkpoint_label
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.metrics import (
    LinearProbe,
    fit_linear_probe,
    knn_top1,
    probe_top1,
    retrieval_metrics,
)
from solo_fgsynth.synth.stats import TRACKED_STATISTICS

BASE_LOSS_KEYS = ("train_neg_cos_sim_step", "train_nce_loss_step")
WARMUP_STEPS = 5


class TrainingProbe(Callback):
    """Step time, losses and the trained module, recorded during ``fit``."""

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self.losses: list[float] = []
        self.base_losses: list[float] = []
        self.module: LightningModule | None = None
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
        self.module = module

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


@torch.no_grad()
def extract(backbone: nn.Module, folder: str, view: EvalView, batch_size: int) -> tuple:
    """Pooled features (on the CPU) and labels of every image in an image folder."""
    device = next(backbone.parameters()).device
    dataset = datasets.ImageFolder(folder, transform=view.transform())
    features, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=0):
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


class LearningCurve(Callback):
    """Validation linear-probe top-1 of the frozen backbone every ``every`` optimizer steps.

    The probe is refit from scratch at each point, on the train split's eval-view features,
    exactly as the final evaluation does; the backbone is put back in train mode after. The
    final point is the cell's own final evaluation, added by :func:`run_cell`.
    """

    def __init__(self, every: int, train_path: str, val_path: str, view: EvalView, batch: int):
        if every < 1:
            raise ValueError(f"eval.curve_every={every} is out of range: allowed is >= 1")
        self.every, self.view, self.batch = every, view, batch
        self.train_path, self.val_path = train_path, val_path
        self.points: list[tuple[int, float]] = []

    def measure(self, backbone: nn.Module, step: int) -> None:
        """Fit a probe on the current backbone's features and record ``(step, val top-1)``."""
        was_training = backbone.training
        backbone.eval()
        train = extract(backbone, self.train_path, self.view, self.batch)
        val = extract(backbone, self.val_path, self.view, self.batch)
        backbone.train(was_training)
        num_classes = int(max(train[1].max(), val[1].max())) + 1
        probe = fit_linear_probe(*train, num_classes=num_classes)
        self.points.append((step, probe_top1(probe, *val)))
        print(f"step {step}: val linear top-1 {self.points[-1][1]:.2f}", flush=True)

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *_: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.measure(module.backbone, trainer.global_step)


def gradcam_overlays(
    backbone: nn.Module,
    probe: LinearProbe,
    val_folder: str,
    view: EvalView,
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
            tensor = view.transform()(image)[None]
            heat = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(label)])[0]
            size = (view.crop_size, view.crop_size)
            rgb = np.asarray(image.convert("RGB").resize(size)) / 255.0
            panels.append(show_cam_on_image(rgb.astype(np.float32), heat, use_rgb=True))
    return np.concatenate(panels, axis=1)


def _diagnose_cell(
    cfg: Any,
    backbone: nn.Module,
    tracked: dict[str, torch.Tensor] | None,
    view: EvalView,
    cell_dir: Path,
) -> list[dict[str, Any]] | None:
    """The factor diagnostic of a cell trained on fgmarks (None on other data)."""
    if cfg.data.get("source_dataset", cfg.data.dataset) != "fgmarks":
        return None
    from solo_fgsynth.data.fgmarks import FGMarksConfig
    from solo_fgsynth.diagnose import diagnose, write_diagnosis

    kwargs = cfg.method_kwargs
    diagnosis = diagnose(
        backbone,
        FGMarksConfig.from_mapping(cfg.data.fgmarks),
        view,
        tracked=tracked,
        var_fraction=float(kwargs.get("var_fraction", 0.25)),
        cam_fraction=float(kwargs.get("cam_fraction", 0.25)),
        cam_ranking=str(kwargs.get("cam_ranking", "magnitude")),
    )
    write_diagnosis(diagnosis, cell_dir, title=cell_dir.name)
    return diagnosis.rows()


def _train(
    cfg: Any, spec: dict[str, Any], cell_dir: Path, view: EvalView, batch: int
) -> tuple[dict[str, Any], nn.Module]:
    """Pretrain through the launcher; write and return the training record, and the model."""
    from solo_fgsynth.launch import run_pretrain

    training = TrainingProbe()
    callbacks: list[Callback] = [training]
    curve_every = int(spec["eval"].get("curve_every", 0))
    curve = None
    if curve_every:
        curve = LearningCurve(curve_every, cfg.data.train_path, cfg.data.val_path, view, batch)
        callbacks.append(curve)
    checkpoint = run_pretrain(cfg, extra_callbacks=callbacks)
    if training.module is None or checkpoint is None:
        raise RuntimeError(f"cell {spec['cell']}: training ended without a model or checkpoint")
    record = {
        "checkpoint": str(checkpoint),
        "steps": len(training.losses),
        "step_time_s": training.step_time,
        "peak_memory_mb": peak_memory_mb(),
        "losses": training.losses,
        "base_losses": training.base_losses,
        "curve": [list(point) for point in curve.points] if curve else [],
    }
    atomic_write_json(cell_dir / TRAINING_RECORD, record)
    return record, training.module


def load_trained_method(checkpoint: Path) -> nn.Module:
    """The method of a finished cell, rebuilt from its ``args.json`` and checkpoint."""
    from omegaconf import OmegaConf

    from solo_fgsynth.launch.knn_eval import trained_model

    method_cfg = OmegaConf.create(json.loads((checkpoint.parent / "args.json").read_text()))
    return trained_model(method_cfg, checkpoint, "the cell's checkpoint")


def training_view(cfg: Any) -> Any:
    """One view of the cell's training augmentation (PIL image -> normalised tensor)."""
    from solo.data.pretrain_dataloader import build_transform_pipeline

    return build_transform_pipeline(cfg.data.dataset, cfg.augmentations[0])


INIT_METHOD = "init"
"""The cell that evaluates the preset's starting weights (``backbone.init``) with no SSL."""
NO_TRAINING = {
    "checkpoint": None,
    "steps": 0,
    "step_time_s": None,
    "peak_memory_mb": None,
    "losses": [],
    "base_losses": [],
    "curve": [],
}


def _starting_weights(cfg: Any) -> nn.Module:
    """The backbone of ``cfg`` holding its ``backbone.init`` weights: the init cell's model.

    Loaded as linear evaluation loads starting weights (one error for a missing init).
    """
    from solo_fgsynth.backbones.config import build_solo_backbone, init_evaluation_backbone

    backbone = build_solo_backbone(cfg)
    init_evaluation_backbone(cfg, backbone)
    return backbone


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Pretrain per ``spec`` through the launcher, evaluate the backbone, return the record."""
    from solo_fgsynth.data import default_cache_dir, prepare_data_cfg
    from solo_fgsynth.launch import load_config

    cell_dir = Path(spec["cell_dir"])
    choice = spec.get("checkpoint_choice", "last")
    selection = CHECKPOINT_CHOICES[choice]
    best = ["++best_checkpoint.enabled=True", f"++best_checkpoint.selection={selection}"]
    overrides = [
        *spec["overrides"],
        *(best if selection else []),
        f"++seed={spec['seed']}",
        f"++name={spec['cell']}-seed{spec['seed']}",
        f"++checkpoint.dir={cell_dir / CHECKPOINT_FOLDER}",
        "++wandb.enabled=False",
        "++auto_resume.enabled=False",
    ]
    cfg = load_config(spec["config_path"], spec["config_name"], overrides)
    prepare_data_cfg(cfg.data, default_cache_dir())
    view = EvalView.of(cfg.augmentations[0])
    batch = int(spec["eval"]["batch_size"])
    if spec["method"] == INIT_METHOD:
        backbone, synth, record = _starting_weights(cfg), None, dict(NO_TRAINING)
        selection = None  # nothing trained: the starting weights are the only checkpoint
    else:
        record = finished_training(cell_dir, int(cfg.max_epochs))
        if record is None:
            record, model = _train(cfg, spec, cell_dir, view, batch)
        else:  # training finished in an earlier attempt: evaluate its checkpoint, do not retrain
            model = load_trained_method(Path(record["checkpoint"]))
        backbone = model.backbone
        synth = getattr(model, "fgsynth", None)
    backbone = backbone.cpu().float().eval()
    checkpoint = record["checkpoint"]
    if selection is not None:
        init_backbone(backbone, str(Path(checkpoint).parent / BEST_NAME))
    train = extract(backbone, cfg.data.train_path, view, batch)
    val = extract(backbone, cfg.data.val_path, view, batch)
    num_classes = int(max(train[1].max(), val[1].max())) + 1
    probe = fit_linear_probe(*train, num_classes=num_classes)
    metrics = {
        "linear_top1": probe_top1(probe, *val),
        "knn_top1": knn_top1(*train, *val, k=int(spec["eval"]["knn_k"])),
        **retrieval_metrics(*val),
    }
    steps, curve = record["steps"], [list(point) for point in record["curve"]]
    evaluated_last = selection is None  # a best checkpoint is not the last step's backbone
    if curve and evaluated_last and curve[-1][0] != steps:
        curve.append([steps, metrics["linear_top1"]])
    tracked = None
    if synth is not None:
        tracked = {name: getattr(synth.statistics, name).cpu() for name in TRACKED_STATISTICS}
    diagnosis = _diagnose_cell(cfg, backbone, tracked, view, cell_dir)
    overlay = gradcam_overlays(backbone, probe, cfg.data.val_path, view, spec["eval"]["gradcam"])
    Image.fromarray(overlay).save(cell_dir / "gradcam.png")
    pairs = None
    if synth is not None and synth.statistics.ready:
        pairs = measure_cell_pairs(
            backbone,
            synth,
            datasets.ImageFolder(cfg.data.val_path, transform=view.transform()),
            datasets.ImageFolder(cfg.data.train_path, transform=view.transform()),
            training_view(cfg),
            cell_dir / "pairs.png",
            headroom_steps=int(spec["eval"].get("headroom_steps", HEADROOM_STEPS)),
        )
    return {
        "cell": spec["cell"],
        "method": spec["method"],
        "ablation": spec.get("ablation"),
        "seed": spec["seed"],
        "metrics": metrics,
        "step_time_s": record["step_time_s"],
        "peak_memory_mb": record["peak_memory_mb"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "steps": steps,
        "losses": record["losses"],
        "base_losses": record["base_losses"],
        "curve": curve,
        "diagnosis": diagnosis,
        "checkpoint": checkpoint,
        "recovered": record.get("recovered", False),
        "pairs": pairs,
        "fgsynth": None if checkpoint is None else trained_fgsynth(checkpoint),
        "checkpoint_choice": choice,
        "evaluated": checkpoint_label(choice),
    }


def main(argv: list[str]) -> int:
    """``python -m solo_fgsynth.benchmark.cell SPEC.json``: run one cell, write its result."""
    spec = json.loads(Path(argv[0]).read_text())
    result = run_cell(spec)
    result["wall_s"] = time.time() - spec.get("started_at", time.time())
    atomic_write_json(Path(spec["cell_dir"]) / RESULT_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The fgvr preset end to end on a generated miniature CUB-200-2011, and its dataset options.

Every method of the preset pretrains 2 steps from a weights file written here (standing in
for torchvision's ImageNet ResNet), keeps its best checkpoint by retrieval on held-out
training images, and is evaluated; the report puts the quoted published rows beside ours.
resnet18 at 32 px keeps it to seconds a cell and the checkpoints small (ResNet-50 ones are
~400 MB each); the cell folders are deleted at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from PIL import Image

from solo_fgsynth.benchmark.fgvr import for_dataset
from solo_fgsynth.benchmark.runner import run_benchmark
from solo_fgsynth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "scripts" / "benchmark" / "fgvr.yaml"
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 5, 4, 2


def _make_mini_cub(root: Path) -> Path:
    """CUB_200_2011's files for 5 species of 6 images (4 train, 2 test), 40 px each."""
    base = root / "CUB_200_2011"
    generator = torch.Generator().manual_seed(0)
    images, labels, splits = [], [], []
    image_id = 0
    for class_id in range(1, CLASSES + 1):
        folder = f"{class_id:03d}.Species_{class_id}"
        for index in range(TRAIN_PER_CLASS + TEST_PER_CLASS):
            image_id += 1
            relative = f"{folder}/bird_{image_id}.jpg"
            (base / "images" / folder).mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (40, 40, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(base / "images" / relative)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            splits.append(f"{image_id} {int(index < TRAIN_PER_CLASS)}")
    for name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", splits),
    ):
        (base / name).write_text("".join(f"{line}\n" for line in lines))
    return base


@pytest.mark.solo
def test_fgvr_preset_runs_every_method_from_a_local_init_and_quotes_the_published_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "data-cache"))
    cub = _make_mini_cub(tmp_path / "raw")
    weights = tmp_path / "resnet18-imagenet-standin.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # with its fc head
    preset = yaml.safe_load(PRESET.read_text())
    preset["overrides"] = [
        "backbone.name=resnet18",
        f"backbone.init={weights}",
        "augmentations=symmetric.yaml",  # one pipeline for all, so one crop override fits all
        "augmentations.0.crop_size=32",
        "optimizer.batch_size=4",
        "method_kwargs.proj_hidden_dim=64",
        "data.num_workers=0",
        "max_epochs=1",
        "accelerator=cpu",
        "devices=1",
        "strategy=auto",
        "precision=32",
        "sync_batchnorm=False",
        "++best_checkpoint.holdout_fraction=0.5",  # 2 of 4 per class: 10 images, 2 steps
        "+num_sanity_val_steps=0",
        "+limit_val_batches=1",
        "+enable_progress_bar=False",
    ]
    preset["eval"] = {"batch_size": 16, "knn_k": 3, "gradcam": 2}
    preset_path = tmp_path / "fgvr-mini.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    out = tmp_path / "results"
    try:
        results = run_benchmark(preset_path, out, None, [], False, None, "best", "cub200", str(cub))
        methods = [
            "byol",
            "fgsynth_byol",
            "simclr",
            "fgsynth_simclr",
            "mocov2plus",
            "fgsynth_mocov2plus",
            "lcr",
        ]
        assert [run["cell"] for run in results["runs"]] == methods
        for run in results["runs"]:
            assert run["steps"] == 2 and run["checkpoint_choice"] == "best"
            run_dir = Path(run["checkpoint"]).parent
            args = json.loads((run_dir / "args.json").read_text())
            assert args["backbone"]["init"] == str(weights)
            assert args["augmentations"][0]["rrc"]["crop_min_scale"] == 0.2  # LCR's scale
            assert json.loads((run_dir / "best.json").read_text())["selection"] == "train_holdout"
            assert all(0.0 <= value <= 100.0 for value in run["metrics"].values())
        table = (out / "results.md").read_text()
        assert table.startswith(
            "Evaluated: best checkpoint by retrieval mAP, selected on held-out part of the "
            "training split."
        )
        assert "| method (quoted, not reproduced) | starting weights | source |" in table
        assert (
            "| CLUE | torchvision IMAGENET1K_V2 | CLUE (README) | 69.62 | 46.83 | 73.21 |" in table
        )
        assert "| MoCo v2 | torchvision IMAGENET1K_V1 | LCR (GANPerf/LCR issues) | 68.30 |" in table
    finally:
        shutil.rmtree(out / "cells", ignore_errors=True)


def test_fgvr_preset_needs_a_known_dataset_and_its_root() -> None:
    preset = yaml.safe_load(PRESET.read_text())
    with pytest.raises(UserError, match=r"--dataset='inat' is not supported: allowed are cub200"):
        for_dataset(preset, "inat", "/data")
    with pytest.raises(UserError, match="--data-root is required"):
        for_dataset(preset, "cars", None)
    cars = for_dataset(preset, "cars", "/data/cars")
    assert cars["config_path"] == "scripts/pretrain/cars" and cars["quoted"] == []
    assert cars["overrides"][-1] == "data.root=/data/cars"
    quick = yaml.safe_load((PRESET.parent / "quick.yaml").read_text())
    with pytest.raises(UserError, match=r"apply to presets with a \{dataset\} config path"):
        for_dataset(quick, "cub200", "/data")

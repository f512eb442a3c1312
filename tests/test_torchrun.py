"""Scale-out with torchrun: two CPU processes (gloo) pretrain fgsynth and stay in lockstep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import solo_fgsynth

TESTS = Path(__file__).resolve().parent
SCRIPTS = TESTS.parent / "scripts"
PACKAGE_ROOT = Path(solo_fgsynth.__file__).resolve().parents[1]
# per-process BatchNorm: CPU DDP has no SyncBatchNorm, so these buffers may differ by rank
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(5):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.solo
def test_torchrun_two_cpu_ranks_end_with_identical_fgsynth_statistics_and_parameters(
    tmp_path: Path,
) -> None:
    train = _image_folder(tmp_path / "train")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(TESTS / "torchrun_pretrain.py"),
        str(tmp_path),
        str(SCRIPTS / "pretrain" / "custom"),
        "fgsynth_byol",
        f"data.train_path={train}",
        "data.val_path=null",
        "data.num_workers=0",
        "backbone.name=resnet18",
        "augmentations.0.crop_size=32",
        "augmentations.1.crop_size=32",
        "optimizer.batch_size=4",
        "method_kwargs.synth_start_epoch=0",
        "method_kwargs.synth_fraction=0.5",
        "accelerator=cpu",
        "devices=2",
        "strategy=ddp",
        "precision=32",
        "max_epochs=1",
        "+limit_train_batches=2",
        "+num_sanity_val_steps=0",
        "+enable_progress_bar=False",
        "+enable_model_summary=False",
        f"checkpoint.dir={tmp_path / 'trained'}",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    statistics = [key for key in rank0 if key.startswith("fgsynth.statistics.")]
    assert int(rank0["fgsynth.statistics.variance_updates"]) == 2  # two steps were taken
    compared = [key for key in rank0 if not key.endswith(BATCHNORM_BUFFERS)]
    assert set(statistics) <= set(compared) and len(compared) > len(statistics)
    different = [key for key in compared if not torch.equal(rank0[key], rank1[key])]
    assert different == []
    # the ranks saw different images: their per-process BatchNorm statistics tell them apart
    assert any(
        not torch.equal(rank0[key], rank1[key]) for key in rank0 if key.endswith("running_mean")
    )

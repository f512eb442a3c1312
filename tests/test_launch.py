"""The launcher: stock solo-learn methods pretrain, resume, and evaluate (linear, kNN) on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

import solo_fgsynth
from solo_fgsynth import launch
from solo_fgsynth.checkpoints import CheckpointError
from solo_fgsynth.cli import main as solo_fgsynth_main
from solo_fgsynth.launch import LaunchError, load_config, run_knn, run_linear, run_pretrain

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PACKAGE_ROOT = Path(solo_fgsynth.__file__).resolve().parents[1]

# resnet18 on 32 px crops, batch 8, two training steps per epoch: seconds per run on a CPU
TINY = [
    "backbone.name=resnet18",
    "optimizer.batch_size=8",
    "data.num_workers=0",
    "accelerator=cpu",
    "devices=1",
    "strategy=auto",
    "precision=32",
    "+limit_train_batches=2",
    "+limit_val_batches=1",
    "+num_sanity_val_steps=0",
    "+log_every_n_steps=1",
    "+enable_progress_bar=False",
    "+enable_model_summary=False",
]


def _write_image_folder(root: Path, classes: int, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A labelled ``custom`` image_folder dataset: 5 classes, 4 train and 2 val images each."""
    root = tmp_path_factory.mktemp("images")
    return {
        "train": _write_image_folder(root / "train", 5, 4, seed=1),
        "val": _write_image_folder(root / "val", 5, 2, seed=2),
    }


def _pretrain_cfg(method: str, data: dict[str, Path], ckpt_dir: Path, *extra: str):
    return load_config(
        SCRIPTS / "pretrain" / "custom",
        method,
        [
            *TINY,
            f"data.train_path={data['train']}",
            f"data.val_path={data['val']}",
            "augmentations.0.crop_size=32",
            *([] if method.endswith("simclr") else ["augmentations.1.crop_size=32"]),
            "max_epochs=1",
            f"checkpoint.dir={ckpt_dir}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def byol_checkpoint(
    image_folder: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A stock BYOL checkpoint from one tiny CPU epoch."""
    cfg = _pretrain_cfg("byol", image_folder, tmp_path_factory.mktemp("trained"))
    path = run_pretrain(cfg)
    assert path is not None
    return path


def _step_values(metrics_csv: Path, column: str) -> list[float]:
    with metrics_csv.open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


@pytest.mark.solo
def test_byol_pretrains_on_cpu_and_writes_checkpoint_args_and_step_losses(
    byol_checkpoint: Path,
) -> None:
    run_dir = byol_checkpoint.parent
    assert byol_checkpoint.suffix == ".ckpt" and byol_checkpoint.is_file()
    assert run_dir.parent.name == "byol"
    args = json.loads((run_dir / "args.json").read_text())
    assert args["method"] == "byol"
    assert args["devices"] == 1 and args["accelerator"] == "cpu"
    checkpoint = torch.load(byol_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert any(key.startswith("backbone.") for key in checkpoint["state_dict"])
    losses = _step_values(run_dir / "metrics.csv", "train_neg_cos_sim_step")
    assert len(losses) == 2 and all(np.isfinite(losses))


@pytest.mark.solo
def test_simclr_pretrains_through_the_cli(
    image_folder: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--config-path",
        str(SCRIPTS / "pretrain" / "custom"),
        "--config-name",
        "simclr",
        *TINY,
        f"data.train_path={image_folder['train']}",
        f"data.val_path={image_folder['val']}",
        "augmentations.0.crop_size=32",
        "max_epochs=1",
        f"checkpoint.dir={tmp_path}",
    ]
    assert launch.pretrain(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    checkpoint = Path(printed.removeprefix("last checkpoint: "))
    assert checkpoint.is_file() and checkpoint.parent.parent == tmp_path / "simclr"
    assert json.loads((checkpoint.parent / "args.json").read_text())["method"] == "simclr"
    assert len(_step_values(checkpoint.parent / "metrics.csv", "train_nce_loss_step")) == 2


class _StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.should_stop = True


@pytest.mark.solo
@pytest.mark.parametrize("how", ["auto_resume", "resume_from_checkpoint"])
def test_interrupted_pretraining_resumes_where_it_stopped(
    how: str, image_folder: dict[str, Path], tmp_path: Path, batch_counter: Callback
) -> None:
    cfg = _pretrain_cfg("byol", image_folder, tmp_path, "max_epochs=2")
    first = run_pretrain(cfg, extra_callbacks=[_StopAfterFirstEpoch()])
    assert first is not None and first.name.endswith("ep=0.ckpt")

    if how == "resume_from_checkpoint":
        cfg = _pretrain_cfg(
            "byol",
            image_folder,
            tmp_path,
            "max_epochs=2",
            "auto_resume.enabled=False",
            f"+resume_from_checkpoint={first}",
        )
    second = run_pretrain(cfg, extra_callbacks=[batch_counter])
    assert second is not None and second.name.endswith("ep=1.ckpt")
    assert batch_counter.batches == 2  # only the second epoch was trained
    assert torch.load(second, map_location="cpu", weights_only=True)["global_step"] == 4


@pytest.mark.solo
def test_rerunning_a_finished_pretrain_trains_nothing_says_so_and_leaves_no_folder(
    image_folder: dict[str, Path],
    byol_checkpoint: Path,
    batch_counter: Callback,
    capsys: pytest.CaptureFixture[str],
) -> None:
    method_dir = byol_checkpoint.parents[1]
    before = sorted(method_dir.iterdir())
    cfg = _pretrain_cfg("byol", image_folder, byol_checkpoint.parents[2])
    assert run_pretrain(cfg, extra_callbacks=[batch_counter]) == byol_checkpoint
    assert batch_counter.batches == 0
    assert sorted(method_dir.iterdir()) == before
    assert (
        f"already finished at step 2 ({byol_checkpoint}); nothing to train; pass "
        "auto_resume.enabled=false to start over"
    ) in capsys.readouterr().out


@pytest.mark.solo
def test_auto_resume_ignores_runs_with_other_settings(
    image_folder: dict[str, Path], tmp_path: Path, batch_counter: Callback
) -> None:
    run_pretrain(
        _pretrain_cfg("byol", image_folder, tmp_path, "max_epochs=2"), [_StopAfterFirstEpoch()]
    )
    cfg = _pretrain_cfg("byol", image_folder, tmp_path, "max_epochs=2", "optimizer.lr=0.5")
    run_pretrain(cfg, extra_callbacks=[batch_counter])
    assert batch_counter.batches == 4


def _linear_cfg(data: dict[str, Path], checkpoint: Path, ckpt_dir: Path, *extra: str):
    return load_config(
        SCRIPTS / "linear" / "custom",
        "linear",
        [
            *TINY,
            f"data.train_path={data['train']}",
            f"data.val_path={data['val']}",
            "data.augmentations.crop_size=32",
            "max_epochs=1",
            f"pretrained_feature_extractor={checkpoint}",
            f"checkpoint.dir={ckpt_dir}",
            *extra,
        ],
    )


@pytest.mark.solo
def test_linear_evaluation_of_a_checkpoint_returns_top1(
    image_folder: dict[str, Path], byol_checkpoint: Path, tmp_path: Path
) -> None:
    metrics = run_linear(_linear_cfg(image_folder, byol_checkpoint, tmp_path))
    assert set(metrics) >= {"val_acc1", "val_acc5", "val_loss"}
    assert 0.0 <= metrics["val_acc1"] <= metrics["val_acc5"] <= 100.0
    assert list((tmp_path / "linear").glob("*/args.json"))


@pytest.mark.solo
def test_linear_refuses_a_checkpoint_of_another_backbone(
    image_folder: dict[str, Path], byol_checkpoint: Path, tmp_path: Path
) -> None:
    cfg = _linear_cfg(image_folder, byol_checkpoint, tmp_path, "backbone.name=resnet50")
    with pytest.raises(CheckpointError, match="does not fit backbone 'resnet50'"):
        run_linear(cfg)


def _knn_cfg(train: Path, val: Path, *extra: str):
    return load_config(
        SCRIPTS / "knn" / "custom",
        "knn",
        [
            f"data.train_path={train}",
            f"data.val_path={val}",
            "batch_size=8",
            "num_workers=0",
            "accelerator=cpu",
            *extra,
        ],
    )


@pytest.mark.solo
def test_knn_reports_every_setting_and_finds_each_training_image_itself(
    image_folder: dict[str, Path], byol_checkpoint: Path
) -> None:
    cfg = _knn_cfg(
        image_folder["train"],
        image_folder["train"],
        f"pretrained_checkpoint_dir={byol_checkpoint.parent}",
        "k=[1,3]",
        "temperature=[0.1]",
    )
    results = run_knn(cfg)
    expected = {
        f"{feature}/k={k}/{distance}"
        for feature in ("backbone", "projector")
        for k in (1, 3)
        for distance in ("euclidean", "cosine/T=0.1")
    }
    assert set(results) == expected
    assert results["backbone/k=1/euclidean"]["acc1"] == pytest.approx(100.0)
    assert results["projector/k=1/euclidean"]["acc1"] == pytest.approx(100.0)
    assert all(0.0 <= r["acc1"] <= r["acc5"] <= 100.0 for r in results.values())


@pytest.mark.solo
def test_knn_cli_on_a_checkpoint_file(
    image_folder: dict[str, Path], byol_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "-cn",
        str(SCRIPTS / "knn" / "custom" / "knn.yaml"),
        f"data.train_path={image_folder['train']}",
        f"data.val_path={image_folder['val']}",
        f"pretrained_feature_extractor={byol_checkpoint}",
        "k=[2]",
        "distance_function=[cosine]",
        "temperature=[0.07]",
        "feature_type=[backbone]",
        "batch_size=8",
        "num_workers=0",
        "accelerator=cpu",
    ]
    assert launch.knn(argv) == 0
    assert "backbone/k=2/cosine/T=0.07: {'acc1':" in capsys.readouterr().out


@pytest.mark.solo
def test_knn_rejects_bad_grid_values(image_folder: dict[str, Path], byol_checkpoint: Path) -> None:
    base = (
        image_folder["train"],
        image_folder["val"],
        f"pretrained_checkpoint_dir={byol_checkpoint.parent}",
    )
    with pytest.raises(LaunchError, match=r"distance_function='manhattan'.*euclidean, cosine"):
        run_knn(_knn_cfg(*base, "distance_function=[manhattan]"))
    with pytest.raises(LaunchError, match="k=0"):
        run_knn(_knn_cfg(*base, "k=[0]"))
    with pytest.raises(LaunchError, match="exactly one of"):
        run_knn(_knn_cfg(*base, f"pretrained_feature_extractor={byol_checkpoint}"))


@pytest.mark.solo
def test_unknown_method_lists_the_registered_ones(
    image_folder: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _pretrain_cfg("byol", image_folder, tmp_path, "method=byool")
    with pytest.raises(
        LaunchError, match=r"unknown method 'byool'; registered methods: .*byol.*simclr"
    ):
        run_pretrain(cfg)
    argv = ["-cp", str(SCRIPTS / "pretrain" / "custom"), "-cn", "byol", "method=byool"]
    assert solo_fgsynth_main(["pretrain", *argv]) == 2
    assert "unknown method 'byool'" in capsys.readouterr().err


@pytest.mark.solo
def test_unset_required_values_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(SCRIPTS / "pretrain" / "cub200", "byol")
    with pytest.raises(LaunchError, match=r"config values not set: data\.root"):
        run_pretrain(cfg)
    argv = ["linear", "-cp", str(SCRIPTS / "linear" / "custom"), "-cn", "linear"]
    assert solo_fgsynth_main(argv) == 2
    assert "pretrained_feature_extractor" in capsys.readouterr().err


@pytest.mark.solo
def test_missing_config_name_lists_the_available_configs() -> None:
    with pytest.raises(LaunchError, match="available: byol, fgsynth_byol, fgsynth_simclr, simclr"):
        load_config(SCRIPTS / "pretrain" / "custom", "bylo")


@pytest.mark.solo
def test_help_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        launch.pretrain(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "usage: solo-fgsynth pretrain" in usage and "--config-path" in usage


@pytest.mark.parametrize(
    ("value", "accelerator", "ids"),
    [
        (1, "cpu", [0]),
        (2, "cpu", [0, 1]),
        ([0], "gpu", [0]),
        ("0,1", "gpu", [0, 1]),
        ("3", "cpu", [0, 1, 2]),
        ("auto", "cpu", [0]),
    ],
)
def test_devices_become_the_id_list_solo_learn_counts(
    value: object, accelerator: str, ids: list[int]
) -> None:
    assert launch._device_ids(value, accelerator) == ids


@pytest.mark.parametrize("value", [0, -2, "x", [], True, [0, "a"]])
def test_bad_devices_are_named(value: object) -> None:
    with pytest.raises(LaunchError, match=r"devices=.* is not valid"):
        launch._device_ids(value, "cpu")


def test_cli_without_solo_learn_prints_the_install_message() -> None:
    code = (
        "import sys; sys.modules['solo'] = None; from solo_fgsynth.cli import main; "
        "raise SystemExit(main(['pretrain', '--config-name', 'x']))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode != 0
    assert "solo-learn is not installed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.solo
def test_two_process_cpu_ddp(image_folder: dict[str, Path], tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith(("devices=", "strategy="))]
    command = [
        sys.executable,
        "-m",
        "solo_fgsynth.cli",
        "pretrain",
        "-cp",
        str(SCRIPTS / "pretrain" / "custom"),
        "-cn",
        "byol",
        *overrides,
        "devices=2",
        "strategy=ddp",
        "optimizer.batch_size=4",
        f"data.train_path={image_folder['train']}",
        "data.val_path=null",
        "augmentations.0.crop_size=32",
        "augmentations.1.crop_size=32",
        "max_epochs=1",
        f"checkpoint.dir={tmp_path}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = (tmp_path / "byol").glob("*/*.ckpt")
    args = json.loads((checkpoint.parent / "args.json").read_text())
    assert args["devices"] == 2 and args["strategy"] == "ddp"
    # two ranks, each two batches of 4: two optimizer steps on 16 images
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 2


@pytest.mark.solo
@pytest.mark.parametrize("base", ["byol", "simclr"])
def test_fgsynth_config_pretrains_then_evaluates_with_linear_and_knn(
    base: str, image_folder: dict[str, Path], tmp_path: Path
) -> None:
    cfg = _pretrain_cfg(
        f"fgsynth_{base}",
        image_folder,
        tmp_path / "trained",
        "method_kwargs.synth_start_epoch=0",
        "method_kwargs.synth_fraction=0.5",
    )
    checkpoint = run_pretrain(cfg)
    assert checkpoint is not None and checkpoint.parent.parent.name == "fgsynth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert int(state["fgsynth.statistics.variance_updates"]) == 2
    losses = _step_values(checkpoint.parent / "metrics.csv", "train_synth_pair_loss_step")
    assert losses and all(np.isfinite(losses))

    linear = run_linear(_linear_cfg(image_folder, checkpoint, tmp_path))
    assert 0.0 <= linear["val_acc1"] <= 100.0
    knn = run_knn(
        _knn_cfg(
            image_folder["train"],
            image_folder["train"],
            f"pretrained_checkpoint_dir={checkpoint.parent}",
            "k=[1]",
            "temperature=[0.1]",
        )
    )
    assert knn["backbone/k=1/euclidean"]["acc1"] == pytest.approx(100.0)

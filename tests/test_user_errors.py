"""Every error a user can cause ends the command with one line naming it, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image

import solo_fgsynth
from solo_fgsynth.cli import main
from solo_fgsynth.data import check_custom_images, layouts, prepare_layout
from solo_fgsynth.data.checked_folder import checked_image_folder
from solo_fgsynth.errors import UserError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PACKAGE_ROOT = Path(solo_fgsynth.__file__).resolve().parents[1]


def _image_folder(root: Path, classes: int = 5, per_class: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Five classes of one tiny image each for train and val, and a private data cache."""
    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "cache"))
    return {"train": _image_folder(tmp_path / "train"), "val": _image_folder(tmp_path / "val")}


def _last_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1], err


def _custom(config: str, data: dict[str, Path], *extra: str) -> list[str]:
    """A shipped (GPU) custom config on this CPU, so each test meets the error it is about."""
    return [
        "-cp",
        str(SCRIPTS / "pretrain" / "custom"),
        "-cn",
        config,
        f"data.train_path={data['train']}",
        f"data.val_path={data['val']}",
        "accelerator=cpu",
        "devices=1",
        "precision=32",
        *extra,
    ]


@pytest.mark.solo
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["method_kwargs.var_fraction=1.5"],
            "solo-fgsynth pretrain: error: method_kwargs.var_fraction=1.5 is out "
            "of range: allowed is a number in [0, 1]",
        ),
        (
            ["+method_kwargs.var_fractoin=0.3"],
            "solo-fgsynth pretrain: error: method_kwargs.var_fractoin is not a "
            "knob of fgsynth with base 'byol' (did you mean 'var_fraction'?); allowed are ",
        ),
        (
            ["method=byool"],
            "solo-fgsynth pretrain: error: unknown method 'byool'; registered methods: ",
        ),
        (
            ["backbone.name=vit_tiny"],
            "solo-fgsynth pretrain: error: backbone 'vit_tiny' is a vision transformer (token "
            "maps, not a B x C x h x w feature map): fgsynth does not support it yet",
        ),
        (
            ["no_such_key=1"],
            "solo-fgsynth pretrain: error: Could not override 'no_such_key'.",
        ),
    ],
)
def test_bad_knobs_methods_and_backbones_are_one_line_and_exit_2(
    extra: list[str],
    expected: str,
    data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["pretrain", *_custom("fgsynth_byol", data, f"checkpoint.dir={tmp_path}", *extra)]
    code, line, _ = _last_line(argv, capsys)
    assert code == 2
    assert line.startswith(expected), line


@pytest.mark.solo
@pytest.mark.parametrize(
    ("dataset", "layout_file", "expected"),
    [
        ("cub200", None, "dataset root {root} does not exist or is not a directory"),
        ("cub200", "images.txt", "CUB-200-2011 layout is incomplete: missing {root}/image_class_"),
        ("cars", None, "dataset root {root} does not exist or is not a directory"),
        ("cars", "", "Stanford Cars layout is incomplete: missing {root}/devkit/cars_meta.mat"),
        ("aircraft", "", "FGVC-Aircraft layout is incomplete: missing {root}/data/variants.txt"),
    ],
)
def test_missing_root_or_incomplete_layout_names_the_missing_path(
    dataset: str,
    layout_file: str | None,
    expected: str,
    data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "raw"
    if layout_file is not None:
        root.mkdir()
        if layout_file:
            (root / layout_file).write_text("1 001.Bird/a.jpg\n")
    argv = ["pretrain", "-cp", str(SCRIPTS / "pretrain" / dataset), "-cn", "byol"]
    on_cpu = ["accelerator=cpu", "devices=1", "precision=32"]  # the shipped configs are GPU ones
    code, line, _ = _last_line([*argv, *on_cpu, f"data.root={root}"], capsys)
    assert code == 2
    assert line.startswith(f"solo-fgsynth pretrain: error: {expected.format(root=root)}"), line


@pytest.mark.solo
def test_unreadable_image_stops_before_training_naming_the_file(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = data["train"] / "class2" / "broken.png"
    bad.write_bytes(b"not a png")
    argv = ["pretrain", *_custom("byol", data, f"checkpoint.dir={tmp_path / 'runs'}")]
    code, line, err = _last_line(argv, capsys)
    assert code == 2
    assert line.startswith(f"solo-fgsynth pretrain: error: 1 unreadable image(s): {bad} (")
    assert line.endswith(
        "fix or remove them, or skip them with a warning: ++data.skip_unreadable=true"
    )
    assert f"  {bad}: UnidentifiedImageError" in err  # the full list, above the error line
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_skip_unreadable_points_the_dataset_at_the_readable_images_with_a_warning(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = data["train"] / "class2" / "broken.png"
    bad.write_bytes(b"not a png")
    node = {"dataset": "custom", "format": "image_folder", "skip_unreadable": True}
    cfg = OmegaConf.create({**node, "train_path": str(data["train"]), "val_path": str(data["val"])})
    with pytest.warns(UserWarning, match=rf"leaving out 1 unreadable image\(s\): {bad}"):
        check_custom_images(cfg, tmp_path / "cache", progress=False)
    train = Path(cfg.train_path)
    assert train != data["train"] and cfg.val_path == str(data["val"])
    dataset = torchvision.datasets.ImageFolder(str(train))
    assert len(dataset) == 5 and dataset.classes == [f"class{c}" for c in range(5)]

    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checked listing is not decoded again")

    monkeypatch.setattr("solo_fgsynth.data.checked_folder.verify_images", must_not_decode)
    with pytest.warns(UserWarning, match="leaving out 1 unreadable"):
        again = checked_image_folder(data["train"], True, tmp_path / "cache", True, False)
    assert again == train


def test_skip_unreadable_leaves_bad_images_out_of_an_fgvr_layout_tree(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "raw" / "train", classes=2, per_class=2).parent
    _image_folder(root / "val", classes=2, per_class=1)
    bad = root / "train" / "class1" / "1.png"
    bad.write_bytes(b"broken")
    with pytest.raises(layouts.UnreadableImagesError, match="1 unreadable"):
        prepare_layout("imagefolder", root, tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="leaving out 1 unreadable"):
        train, _ = prepare_layout("imagefolder", root, tmp_path / "c", False, skip_unreadable=True)
    assert sorted(p.name for p in train.rglob("*.png")) == ["0.png", "0.png", "1.png"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert prepare_layout("imagefolder", root, tmp_path / "c", False, True)[0] == train
    assert any("leaving out 1 unreadable" in str(w.message) for w in caught)


@pytest.mark.solo
def test_unknown_preset_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, line, _ = _last_line(["benchmark", "--preset", "quik"], capsys)
    assert code == 2
    assert line.startswith("solo-fgsynth benchmark: error: benchmark preset 'quik' not found")
    assert "available presets: cpu, fgvr, full, quick, tuning" in line


def test_unknown_zoo_name_suggests_the_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, line, _ = _last_line(["zoo", "info", "byol-resnet18small-fgmark"], capsys)
    assert code == 2
    assert line == (
        "solo-fgsynth zoo info: error: unknown model 'byol-resnet18small-fgmark'; "
        "did you mean 'byol-resnet18small-fgmarks', 'fgsynth-byol-resnet18small-fgmarks', "
        "'generic-init-resnet18small-fgmarks'?"
    )


def _backbone_checkpoint(path: Path) -> Path:
    backbone = torchvision.models.resnet18()
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items() if "fc." not in k}
    torch.save({"state_dict": state}, path)
    return path


@pytest.mark.solo
@pytest.mark.parametrize("problem", ["missing", "corrupt", "mismatched"])
def test_linear_refuses_a_missing_corrupt_or_mismatched_checkpoint(
    problem: str, data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if problem == "missing":
        ckpt = tmp_path / "no-such-run.ckpt"
        expected = f"pretrained_feature_extractor='{ckpt}' does not exist (from {Path.cwd()})"
    elif problem == "corrupt":
        ckpt = tmp_path / "run.ckpt"
        ckpt.write_bytes(b"\x00" * 64)
        expected = f"pretrained_feature_extractor='{ckpt}' is not a readable checkpoint ("
    else:
        ckpt = _backbone_checkpoint(tmp_path / "run.ckpt")
        expected = f"{ckpt} does not fit backbone 'resnet50': "
    argv = [
        "linear",
        "-cp",
        str(SCRIPTS / "linear" / "custom"),
        "-cn",
        "linear",
        f"data.train_path={data['train']}",
        f"data.val_path={data['val']}",
        "backbone.name=resnet50",
        "accelerator=cpu",
        "devices=1",
        "precision=32",
        f"checkpoint.dir={tmp_path / 'runs'}",
        f"pretrained_feature_extractor={ckpt}",
    ]
    code, line, _ = _last_line(argv, capsys)
    assert code == 2
    assert line.startswith(f"solo-fgsynth linear: error: {expected}"), line


@pytest.mark.solo
def test_knn_refuses_a_corrupt_checkpoint(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text('{"method": "byol"}')
    (run / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    argv = [
        "knn",
        "-cn",
        str(SCRIPTS / "knn" / "custom" / "knn.yaml"),
        f"data.train_path={data['train']}",
        f"data.val_path={data['val']}",
        f"pretrained_checkpoint_dir={run}",
        "accelerator=cpu",
    ]
    code, line, _ = _last_line(argv, capsys)
    assert code == 2
    assert line.startswith(
        "solo-fgsynth knn: error: the newest checkpoint of pretrained_checkpoint_dir="
        f"'{run / 'last.ckpt'}' is not a readable checkpoint ("
    ), line


@pytest.mark.solo
@pytest.mark.parametrize(
    ("stage", "config", "extra", "expected"),
    [
        (
            "pretrain",
            "fgsynth_byol",
            ["accelerator=cpu", "devices=1", "precision=32", "method_kwargs.var_fraction=1.5"],
            "solo-fgsynth pretrain: error: method_kwargs.var_fraction=1.5 is out "
            "of range: allowed is a number in [0, 1]",
        ),
        (
            "linear",
            "linear",
            [
                "accelerator=cpu",
                "devices=1",
                "precision=32",
                "pretrained_feature_extractor={tmp}/run.ckpt",
            ],
            "solo-fgsynth linear: error: pretrained_feature_extractor='{tmp}/run.ckpt' is not a "
            "readable checkpoint (",
        ),
    ],
)
def test_an_error_found_after_seeding_is_the_only_line_on_stderr(
    stage: str, config: str, extra: list[str], expected: str, tmp_path: Path
) -> None:
    # solo-learn's own cifar10 needs no data preparation, so nothing else writes to stderr.
    (tmp_path / "run.ckpt").write_bytes(b"\x00" * 64)
    argv = [
        stage,
        "-cp",
        str(SCRIPTS / stage / "custom"),
        "-cn",
        config,
        "data.dataset=cifar10",
        f"data.train_path={tmp_path / 'none'}",
        f"data.val_path={tmp_path / 'none'}",
        f"checkpoint.dir={tmp_path / 'runs'}",
        *(override.format(tmp=tmp_path) for override in extra),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
        "SOLO_FGSYNTH_DATA_DIR": str(tmp_path / "cache"),
    }
    command = [sys.executable, "-m", "solo_fgsynth.cli", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(tmp=tmp_path)), lines[0]


def test_debug_prints_the_traceback_before_the_same_line() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "solo_fgsynth.cli", "zoo", "info", "nope"]
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    debug = subprocess.run(
        [*command, "--debug"], capture_output=True, text=True, env=env, timeout=300
    )
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert plain.stderr.splitlines()[-1] == debug.stderr.splitlines()[-1]
    assert plain.stderr.splitlines()[-1].startswith("solo-fgsynth zoo info: error: unknown model")


@pytest.mark.solo
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_a_gpu_config_on_a_cpu_machine_is_one_line_naming_the_cpu_overrides_before_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "pretrain",
        "-cp",
        str(SCRIPTS / "pretrain" / "custom"),
        "-cn",
        "fgsynth_byol",
        f"data.train_path={tmp_path / 'no-such-folder'}",  # data would fail later: not reached
        f"data.val_path={tmp_path / 'no-such-folder'}",
    ]
    code, line, err = _last_line(argv, capsys)
    assert code == 2
    assert line == (
        "solo-fgsynth pretrain: error: accelerator='gpu' but this machine has no CUDA device; "
        "to run on the CPU add accelerator=cpu devices=1 precision=32"
    )
    assert err.strip() == line


@pytest.mark.solo
@pytest.mark.parametrize(
    ("config", "knob"),
    [
        ("fgsynth_byol", "strength"),
        ("lcr", "kl_weight"),
        ("directpred", "rho"),
        ("ssole", "lambda_low"),
    ],
)
def test_a_bad_plugin_method_knob_is_reported_before_any_data_is_generated(
    config: str,
    knob: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "data"))
    argv = [
        "pretrain",
        "-cp",
        str(SCRIPTS / "pretrain" / "fgmarks"),
        "-cn",
        config,
        "accelerator=cpu",
        f"++method_kwargs.{knob}=-1",
        f"checkpoint.dir={tmp_path / 'runs'}",
    ]
    code, line, err = _last_line(argv, capsys)
    assert code == 2
    assert line.startswith(f"solo-fgsynth pretrain: error: method_kwargs.{knob}=-1 is out of")
    assert err.strip() == line  # no progress bar of data generation before it
    assert not (tmp_path / "data").exists()


@pytest.mark.solo
def test_a_bug_in_a_method_constructor_stays_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from solo.methods.byol import BYOL

    from solo_fgsynth.launch import load_config, run_pretrain

    def broken(self: BYOL, cfg: object) -> None:
        raise ValueError("an internal bug, not a config value")

    monkeypatch.setattr(BYOL, "__init__", broken)
    cfg = load_config(
        SCRIPTS / "pretrain" / "custom",
        "byol",
        [
            "data.dataset=cifar10",
            f"data.train_path={tmp_path / 'none'}",
            f"data.val_path={tmp_path / 'none'}",
            f"checkpoint.dir={tmp_path / 'runs'}",
            "accelerator=cpu",
            "devices=1",
            "precision=32",
        ],
    )
    with pytest.raises(ValueError, match="an internal bug") as error:
        run_pretrain(cfg)
    assert not isinstance(error.value, UserError)


@pytest.mark.solo
def test_a_missing_checkpoint_is_named_before_its_recipe_is_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "nope.ckpt"
    argv = ["linear", "-cp", str(SCRIPTS / "linear" / "fgmarks"), "-cn", "linear"]
    code, line, _ = _last_line([*argv, f"pretrained_feature_extractor={ckpt}"], capsys)
    assert code == 2
    assert line == (
        f"solo-fgsynth linear: error: pretrained_feature_extractor='{ckpt}' does not exist "
        f"(from {Path.cwd()})"
    )

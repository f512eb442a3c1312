"""Evaluation follows its checkpoint: linear and knn take the backbone and data of args.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from solo_fgsynth.cli import main
from solo_fgsynth.errors import LaunchError
from solo_fgsynth.launch.config import load_config
from solo_fgsynth.launch.recipe import follow_recipe, recipe_values

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# what solo-learn writes for a pretraining run on a plugin dataset (trimmed)
FGMARKS_RECIPE = {
    "method": "byol",
    "backbone": {"name": "resnet18_small", "kwargs": {"width": 16}, "init": None},
    "data": {
        "dataset": "custom",
        "source_dataset": "fgmarks",
        "train_path": "/cache/fgmarks/abc/train",
        "fgmarks": {"num_classes": 6, "image_size": 32, "train_per_class": 4, "seed": 3},
    },
    "augmentations": [{"crop_size": 32}, {"crop_size": 32}],
}


def _recipe(tmp_path: Path, recipe: dict = FGMARKS_RECIPE) -> Path:
    path = tmp_path / "args.json"
    path.write_text(json.dumps(recipe))
    return path


def test_recipe_values_name_the_plugin_dataset_and_its_knobs_not_the_cache_paths() -> None:
    assert recipe_values(FGMARKS_RECIPE) == {
        "backbone.name": "resnet18_small",
        "backbone.kwargs": {"width": 16},
        "data.dataset": "fgmarks",
        "data.augmentations.crop_size": 32,
        "data.fgmarks.num_classes": 6,
        "data.fgmarks.image_size": 32,
        "data.fgmarks.train_per_class": 4,
        "data.fgmarks.seed": 3,
    }


def test_the_shipped_fgmarks_eval_configs_take_everything_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    for stage, name in (("linear", "linear"), ("knn", "knn")):
        cfg = load_config(SCRIPTS / stage / "fgmarks", name)
        followed = follow_recipe(cfg, _recipe(tmp_path))
        assert followed.overridden == {}
        assert cfg.data.fgmarks.num_classes == 6 and cfg.data.fgmarks.seed == 3
        assert cfg.data.fgmarks.nuisance is None  # neither sets it: the generator's default
        assert cfg.backbone.name == "resnet18_small" and cfg.backbone.kwargs.width == 16
        assert cfg.data.augmentations.crop_size == 32


def test_a_set_value_wins_and_is_reported_with_the_checkpoints(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    cfg = OmegaConf.create({"data": {"dataset": "fgmarks", "fgmarks": {"nuisance": 0.5}}})
    followed = follow_recipe(cfg, recipe)
    assert cfg.data.fgmarks.nuisance == 0.5  # the recipe does not set it: nothing to compare
    assert followed.overridden == {}
    cfg = OmegaConf.create({"data": {"dataset": "fgmarks", "fgmarks": {"seed": 7}}})
    followed = follow_recipe(cfg, recipe)
    assert cfg.data.fgmarks.seed == 7
    assert followed.overridden == {"data.fgmarks.seed": (7, 3)}
    assert "overridden by the evaluation config: data.fgmarks.seed=7 (checkpoint: 3)" in (
        followed.summary()
    )


@pytest.mark.parametrize(
    ("key", "value", "theirs"),
    [
        ("data.fgmarks.num_classes", 24, 6),
        ("data.fgmarks.image_size", 64, 32),
        ("data.augmentations.crop_size", 224, 32),
        ("data.dataset", "cub200", "fgmarks"),
    ],
)
def test_other_data_is_refused_unless_allowed(
    tmp_path: Path, key: str, value: object, theirs: object
) -> None:
    recipe = _recipe(tmp_path)
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(LaunchError) as error:
        follow_recipe(cfg, recipe)
    assert str(error.value) == (
        f"{key}={value!r} but the checkpoint was trained with {theirs!r} ({recipe}): the "
        "numbers would be about other data; drop the setting to follow the checkpoint, or add "
        "++eval.allow_other_data=true"
    )
    OmegaConf.update(cfg, "eval.allow_other_data", True, force_add=True)
    assert follow_recipe(cfg, recipe).overridden[key] == (value, theirs)


def test_an_unreadable_allow_flag_is_refused(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"eval": {"allow_other_data": "yes"}})
    with pytest.raises(
        LaunchError,
        match=r"^eval\.allow_other_data='yes' is not supported: allowed is true or false",
    ):
        follow_recipe(cfg, _recipe(tmp_path))


TINY_PRETRAIN = [
    "backbone.name=resnet18_small",
    "++backbone.kwargs.width=8",
    "++data.fgmarks.num_classes=5",
    "++data.fgmarks.image_size=32",
    "++data.fgmarks.train_per_class=4",
    "++data.fgmarks.val_per_class=2",
    "++data.fgmarks.seed=5",
    "optimizer.batch_size=8",
    "data.num_workers=0",
    "max_epochs=1",
    "accelerator=cpu",
    "devices=1",
    "precision=32",
    "method_kwargs.proj_hidden_dim=32",
    "method_kwargs.pred_hidden_dim=32",
    "+enable_progress_bar=False",
]


@pytest.fixture(scope="module")
def fgmarks_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny byol run on 5-class 32-px fgmarks with a width-8 backbone: not the eval defaults."""
    from solo_fgsynth.launch import run_pretrain

    ckpt_dir = tmp_path_factory.mktemp("trained")
    cfg = load_config(
        SCRIPTS / "pretrain" / "fgmarks", "byol", [*TINY_PRETRAIN, f"checkpoint.dir={ckpt_dir}"]
    )
    checkpoint = run_pretrain(cfg)
    assert checkpoint is not None
    return checkpoint


def _readme_knn(run: Path, *extra: str) -> list[str]:
    """The README's knn line on ``run``'s directory (on the CPU), with ``extra`` overrides."""
    return [
        "knn",
        "-cp",
        "scripts/knn/fgmarks",
        "-cn",
        "knn",
        f"pretrained_checkpoint_dir={run.parent}",
        "accelerator=cpu",
        *extra,
    ]


@pytest.mark.solo
def test_knn_from_the_readme_evaluates_the_checkpoints_data_and_writes_json(
    fgmarks_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _readme_knn(fgmarks_run, "k=[1]", "temperature=[0.1]", "num_workers=0")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"following {fgmarks_run.parent / 'args.json'}: took " in out
    assert "data.fgmarks.num_classes=5" in out and "backbone.kwargs={'width': 8}" in out
    written = json.loads((fgmarks_run.with_name(f"knn-{fgmarks_run.stem}.json")).read_text())
    assert written["checkpoint"] == str(fgmarks_run)
    assert set(written["results"]) == {
        f"{feature}/k=1/{distance}"
        for feature in ("backbone", "projector")
        for distance in ("euclidean", "cosine/T=0.1")
    }


@pytest.mark.solo
def test_knn_refuses_a_label_set_other_than_the_checkpoints(
    fgmarks_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _readme_knn(fgmarks_run, "data.fgmarks.num_classes=24")
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "solo-fgsynth knn: error: data.fgmarks.num_classes=24 but the checkpoint was trained with 5"
    )


@pytest.mark.solo
def test_linear_from_the_readme_builds_the_checkpoints_backbone_on_its_data(
    fgmarks_run: Path, tmp_path: Path
) -> None:
    from solo_fgsynth.launch import run_linear

    cfg = load_config(
        "scripts/linear/fgmarks",
        "linear",
        [
            f"pretrained_feature_extractor={fgmarks_run}",
            f"checkpoint.dir={tmp_path}",
            "max_epochs=1",
            "optimizer.batch_size=8",
            "data.num_workers=0",
            "accelerator=cpu",
            "+enable_progress_bar=False",
        ],
    )
    metrics = run_linear(cfg)
    assert 0.0 <= metrics["val_acc1"] <= 100.0
    args = json.loads(next((tmp_path / "linear").glob("*/args.json")).read_text())
    assert (args["backbone"]["name"], args["backbone"]["kwargs"]) == (
        "resnet18_small",
        {"width": 8},
    )
    assert args["data"]["fgmarks"]["num_classes"] == 5 and args["data"]["num_classes"] == 5


@pytest.mark.solo
def test_linear_without_args_json_or_backbone_name_says_what_to_set(tmp_path: Path) -> None:
    from solo_fgsynth.launch import run_linear

    bare = tmp_path / "weights.ckpt"
    bare.write_bytes(b"")
    cfg = load_config("scripts/linear/fgmarks", "linear", [f"pretrained_feature_extractor={bare}"])
    with pytest.raises(LaunchError, match=r"^backbone\.name is not set and .* has no args\.json"):
        run_linear(cfg)


@pytest.mark.parametrize("folder", ["fgmarks", "custom"])
def test_a_run_is_named_after_the_dataset_the_user_chose_not_custom(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_image_folder
) -> None:
    from solo_fgsynth.launch.config import _prepare_data

    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "cache"))
    if folder == "fgmarks":
        overrides = [
            "++data.fgmarks.num_classes=2",
            "++data.fgmarks.image_size=32",
            "++data.fgmarks.train_per_class=2",
            "++data.fgmarks.val_per_class=2",
        ]
    else:
        images = make_image_folder(2)
        overrides = [f"data.train_path={images}", f"data.val_path={images}"]
    cfg = load_config(SCRIPTS / "pretrain" / folder, "byol", overrides)
    _prepare_data(cfg)
    assert cfg.data.dataset == "custom"
    assert cfg.name == f"byol-{folder}"

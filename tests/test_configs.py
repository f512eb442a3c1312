"""Every shipped yaml config composes, parses with solo-learn, and keeps budgets equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from solo_fgsynth import launch
from solo_fgsynth.launch import load_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
DATASETS = ("fgmarks", "cub200", "cars", "aircraft", "custom")
METHOD_CONFIGS = ("byol", "simclr", "fgsynth_byol", "fgsynth_simclr")
FGVR = ("cub200", "cars", "aircraft")
MOCO_CONFIGS = ("mocov2plus", "fgsynth_mocov2plus")
PEERS = ("lcr", "directpred", "ssole")  # the registered peer methods, all three on fgmarks
PRETRAIN = sorted(SCRIPTS.glob("pretrain/*/*.yaml"))
LINEAR = sorted(SCRIPTS.glob("linear/*/*.yaml"))
KNN = sorted(SCRIPTS.glob("knn/*/*.yaml"))


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _load(path: Path, *overrides: str) -> DictConfig:
    return load_config(path.parent, path.stem, list(overrides))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-class image folder standing in for every dataset (data preparation is tested apart)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in range(5):
        (root / f"c{c}").mkdir()
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{c}" / "0.png")
    return root


def _on_folder(cfg: DictConfig, folder: Path) -> DictConfig:
    """``cfg`` reading ``folder`` as solo-learn's custom dataset, on whatever device is here."""
    cfg.data.dataset = "custom"
    cfg.data.train_path = str(folder)
    cfg.data.val_path = str(folder)
    for key in ("root", "fgmarks"):
        cfg.data.pop(key, None)
    cfg.accelerator = "auto"
    cfg.devices = 1
    if not torch.cuda.is_available():
        cfg.precision = 32  # 16-bit precision needs a GPU
    launch._resolve_devices(cfg)
    return cfg


def _agrees_with_pretraining(cfg: DictConfig, pretrain: DictConfig) -> None:
    """An evaluation config reads the pretraining's dataset; each fgmarks knob it sets is the
    pretraining's (null: taken from the checkpoint's args.json)."""
    assert cfg.data.dataset == pretrain.data.dataset
    for knob, value in (cfg.data.get("fgmarks") or {}).items():
        assert value is None or value == pretrain.data.fgmarks[knob], knob


def test_every_dataset_ships_every_config() -> None:
    for dataset in DATASETS:
        for method in METHOD_CONFIGS:
            assert (SCRIPTS / "pretrain" / dataset / f"{method}.yaml").is_file()
        assert (SCRIPTS / "linear" / dataset / "linear.yaml").is_file()
        assert (SCRIPTS / "knn" / dataset / "knn.yaml").is_file()
    expected = {SCRIPTS / "pretrain" / d / f"{m}.yaml" for d in DATASETS for m in METHOD_CONFIGS}
    expected.add(SCRIPTS / "pretrain" / "fgmarks" / "supcon.yaml")  # the benchmark's reference
    expected.add(SCRIPTS / "pretrain" / "fgmarks" / "generic_init.yaml")  # the benchmark's init
    expected |= {  # LCR's base method, stock and with fgsynth
        SCRIPTS / "pretrain" / d / f"{m}.yaml" for d in FGVR for m in MOCO_CONFIGS
    }
    expected |= {SCRIPTS / "pretrain" / "fgmarks" / f"{m}.yaml" for m in PEERS}
    expected |= {SCRIPTS / "pretrain" / d / "lcr.yaml" for d in FGVR}  # on LCR's own recipe
    assert set(PRETRAIN) == expected


@pytest.mark.solo
@pytest.mark.parametrize("path", PRETRAIN, ids=_name)
def test_pretrain_config_parses_and_builds_its_method(path: Path, image_folder: Path) -> None:
    from solo.args.pretrain import parse_cfg
    from solo.methods import METHODS

    cfg = _on_folder(_load(path), image_folder)
    assert cfg.method in METHODS, f"{_name(path)}: method {cfg.method!r} is not registered"
    cfg = parse_cfg(cfg)
    assert cfg.data.num_large_crops == 2 and cfg.data.num_classes == 5
    model = METHODS[cfg.method](cfg)
    assert model.num_classes == 5


@pytest.mark.parametrize(
    ("dataset", "base"),
    [(d, b) for d in DATASETS for b in ("byol", "simclr")] + [(d, "mocov2plus") for d in FGVR],
)
def test_fgsynth_config_differs_from_its_stock_twin_only_in_method_keys(
    dataset: str, base: str
) -> None:
    directory = SCRIPTS / "pretrain" / dataset
    stock = OmegaConf.to_container(_load(directory / f"{base}.yaml"))
    fgsynth = OmegaConf.to_container(_load(directory / f"fgsynth_{base}.yaml"))
    assert fgsynth.pop("method") == "fgsynth" and stock.pop("method") == base
    assert fgsynth.pop("name") == f"fgsynth_{base}-${{data.dataset}}"
    assert stock.pop("name") == f"{base}-${{data.dataset}}"
    fg_kwargs, stock_kwargs = fgsynth.pop("method_kwargs"), stock.pop("method_kwargs")
    assert fg_kwargs["base"] == base
    assert {key: fg_kwargs[key] for key in stock_kwargs} == stock_kwargs
    assert fgsynth == stock


@pytest.mark.parametrize("dataset", DATASETS)
def test_all_methods_of_a_dataset_share_the_budget(dataset: str) -> None:
    def budget(method: str) -> tuple:
        cfg = _load(SCRIPTS / "pretrain" / dataset / f"{method}.yaml")
        crops = sorted(
            size for view in cfg.augmentations for size in [view.crop_size] * view.num_crops
        )
        return (
            cfg.backbone.name,
            cfg.backbone.get("init"),
            cfg.max_epochs,
            cfg.optimizer.batch_size,
            cfg.scheduler.name,
            cfg.scheduler.warmup_epochs,
            tuple(crops),
            frozenset(view.rrc.crop_min_scale for view in cfg.augmentations),
        )

    methods = list(METHOD_CONFIGS)
    peers = PEERS if dataset == "fgmarks" else ()  # the FGVR lcr follows LCR's schedule
    for extra in ("supcon", *MOCO_CONFIGS, *peers):
        if (SCRIPTS / "pretrain" / dataset / f"{extra}.yaml").is_file():
            methods.append(extra)
    budgets = {method: budget(method) for method in methods}
    assert len(set(budgets.values())) == 1, budgets
    optimizers = {
        _load(SCRIPTS / "pretrain" / dataset / f"{m}.yaml").optimizer.name for m in METHOD_CONFIGS
    }
    assert len(optimizers) == 1  # mocov2plus (and fgsynth on it) keeps solo-learn's SGD


@pytest.mark.solo
@pytest.mark.parametrize("path", LINEAR, ids=_name)
def test_linear_config_parses_at_its_pretraining_crop(path: Path, image_folder: Path) -> None:
    from solo.args.linear import parse_cfg

    cfg = _load(path, "pretrained_feature_extractor=model.ckpt")
    pretrain = _load(SCRIPTS / "pretrain" / path.parent.name / "byol.yaml")
    _agrees_with_pretraining(cfg, pretrain)
    # null follows the checkpoint's args.json (launch/recipe.py); here, the pretraining config's
    if cfg.backbone.name is None:
        cfg.backbone.name = pretrain.backbone.name
    if cfg.data.augmentations.crop_size is None:
        cfg.data.augmentations.crop_size = pretrain.augmentations[0].crop_size
    assert cfg.backbone.name == pretrain.backbone.name
    cfg = parse_cfg(_on_folder(cfg, image_folder))
    assert cfg.data.augmentations.crop_size == pretrain.augmentations[0].crop_size
    assert cfg.data.num_classes == 5


@pytest.mark.parametrize("path", KNN, ids=_name)
def test_knn_config_has_a_valid_grid_on_the_pretraining_data(path: Path) -> None:
    cfg = _load(path)
    pretrain = _load(SCRIPTS / "pretrain" / path.parent.name / "byol.yaml")
    _agrees_with_pretraining(cfg, pretrain)
    ks, temperatures, distances, features = launch._knn_grid(cfg)
    assert ks and temperatures and set(distances) == {"euclidean", "cosine"}
    assert set(features) == {"backbone", "projector"}


@pytest.mark.parametrize("dataset", FGVR)
def test_real_fgvr_configs_follow_the_lcr_protocol(dataset: str) -> None:
    for method in (*METHOD_CONFIGS, *MOCO_CONFIGS, "lcr"):
        cfg = _load(SCRIPTS / "pretrain" / dataset / f"{method}.yaml")
        assert OmegaConf.is_missing(cfg.data, "root")
        assert cfg.backbone.name == "resnet50" and cfg.max_epochs == 100
        assert cfg.backbone.init == "torchvision:ResNet50_Weights.IMAGENET1K_V1"
        assert cfg.optimizer.batch_size == 128 and cfg.precision == "16-mixed"
        assert all(view.crop_size == 224 for view in cfg.augmentations)
        assert all(
            (view.rrc.crop_min_scale, view.rrc.crop_max_scale) == (0.2, 1.0)
            for view in cfg.augmentations
        )
        assert cfg.best_checkpoint.selection == "train_holdout"
        scratch = _load(SCRIPTS / "pretrain" / dataset / f"{method}.yaml", "backbone.init=null")
        assert scratch.backbone.init is None
    linear = _load(SCRIPTS / "linear" / dataset / "linear.yaml")
    assert (linear.max_epochs, linear.optimizer.name, linear.optimizer.lr) == (100, "sgd", 30.0)
    assert linear.optimizer.batch_size == 256 and list(linear.scheduler.lr_decay_steps) == [60, 80]
    assert linear.backbone.init is None


@pytest.mark.parametrize("dataset", FGVR)
def test_fgvr_lcr_config_is_lcrs_moco_v2_recipe(dataset: str) -> None:
    """GANPerf/LCR's main_moco.py: lr 0.03 at batch 128 (solo-learn scales by batch / 256),
    SGD momentum 0.9, cosine without warm-up, K 65536, m 0.999, T 0.2, --nu 0.01, MoCo v2's
    jitter; the rest is the folder's mocov2plus."""
    cfg = _load(SCRIPTS / "pretrain" / dataset / "lcr.yaml")
    moco = _load(SCRIPTS / "pretrain" / dataset / "mocov2plus.yaml")
    assert cfg.method == "lcr" and cfg.optimizer.name == "sgd"
    assert cfg.optimizer.lr * cfg.optimizer.batch_size / 256 == pytest.approx(0.03)
    assert cfg.optimizer.kwargs.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert (cfg.scheduler.name, cfg.scheduler.warmup_epochs) == ("warmup_cosine", 0)
    kwargs = cfg.method_kwargs
    assert (kwargs.queue_size, kwargs.temperature, kwargs.kl_weight) == (65536, 0.2, 0.01)
    assert (kwargs.proj_hidden_dim, kwargs.proj_output_dim) == (2048, 256)
    assert (cfg.momentum.base_tau, cfg.momentum.final_tau) == (0.999, 0.999)
    for view in cfg.augmentations:
        jitter = view.color_jitter
        assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
            0.4,
            0.4,
            0.4,
            0.1,
        )
    for key in ("max_epochs", "data", "backbone", "best_checkpoint", "precision", "strategy"):
        assert cfg[key] == moco[key], key

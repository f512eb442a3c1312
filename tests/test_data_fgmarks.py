"""fgmarks: determinism, balance, validation, label-free nuisances, caching, config rewriting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy.ndimage import map_coordinates
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torchvision.datasets import ImageFolder

from solo_fgsynth.data import DATASET_NAMES, fgmarks, prepare_data_cfg
from solo_fgsynth.data._cache import COMPLETE_MARKER
from solo_fgsynth.data.fgmarks import (
    MAX_CLASSES,
    FGMarksConfig,
    class_names,
    detail_table,
    generate,
    materialize,
    sample_scenes,
)
from solo_fgsynth.data.fgmarks_render import BACKGROUND_PATTERNS, hsv_to_rgb, render

TINY = FGMarksConfig(num_classes=6, image_size=32, train_per_class=4, val_per_class=2, seed=3)


def _png_count(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.png"))


def test_generate_shapes_dtypes_and_exact_class_counts() -> None:
    for split, per_class in (("train", 4), ("val", 2)):
        images, labels = generate(TINY, split)
        assert images.shape == (6 * per_class, 32, 32, 3)
        assert images.dtype == np.uint8
        assert labels.dtype == np.int64
        assert np.bincount(labels, minlength=6).tolist() == [per_class] * 6


def test_same_seed_gives_identical_bytes_and_other_seed_differs() -> None:
    images, labels = generate(TINY, "train")
    again_images, again_labels = generate(FGMarksConfig(**TINY.as_dict()), "train")
    assert images.tobytes() == again_images.tobytes()
    assert np.array_equal(labels, again_labels)
    other_images, _ = generate(FGMarksConfig(**{**TINY.as_dict(), "seed": 4}), "train")
    assert images.tobytes() != other_images.tobytes()


def test_train_and_val_come_from_disjoint_streams() -> None:
    train = sample_scenes(TINY, "train")
    val = sample_scenes(TINY, "val")
    for name in ("object_rotation", "object_length", "pattern_phase"):
        assert not np.isin(val.nuisance[name], train.nuisance[name]).any(), name
    assert train.noise_seed != val.noise_seed
    train_images, _ = generate(TINY, "train")
    val_images, _ = generate(TINY, "val")
    assert not {image.tobytes() for image in val_images} & {
        image.tobytes() for image in train_images
    }


def test_nuisance_draws_do_not_depend_on_the_class_count() -> None:
    few = sample_scenes(FGMarksConfig(num_classes=4, train_per_class=6, seed=1), "train")
    many = sample_scenes(FGMarksConfig(num_classes=6, train_per_class=4, seed=1), "train")
    for name in few.nuisance:
        assert np.array_equal(few.nuisance[name], many.nuisance[name]), name
    assert not np.array_equal(few.labels, many.labels)


def test_zero_nuisance_renders_each_class_as_one_identical_image() -> None:
    config = FGMarksConfig(num_classes=6, image_size=32, nuisance=0, train_per_class=3, seed=5)
    images, labels = generate(config, "train")
    prototypes = {}
    for image, label in zip(images, labels, strict=True):
        prototypes.setdefault(int(label), image)
        assert np.array_equal(image, prototypes[int(label)])
    assert len({prototype.tobytes() for prototype in prototypes.values()}) == 6
    corner = images[:, :3, :3].reshape(-1, 3)
    assert np.all(corner == 128)


def test_detail_table_is_a_balanced_injective_class_definition() -> None:
    table = detail_table(MAX_CLASSES)
    assert MAX_CLASSES == 54
    assert len({tuple(row) for row in table}) == MAX_CLASSES
    default = detail_table(24)
    assert np.array_equal(default, table[:24])
    assert np.bincount(default[:, 0]).tolist() == [4] * 6
    assert np.bincount(default[:, 1]).tolist() == [8] * 3
    assert np.bincount(default[:, 2]).tolist() == [8] * 3
    names = class_names(24)
    assert names == sorted(names)
    assert names[0] == "00_disc-dark-rear"
    assert len(set(names)) == 24


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (
            {"num_classes": 55},
            r"data\.fgmarks\.num_classes=55 is out of range: allowed is an integer in \[2, 54\]",
        ),
        (
            {"num_classes": 1},
            r"data\.fgmarks\.num_classes=1 is out of range: allowed is an integer in \[2, 54\]",
        ),
        (
            {"num_classes": True},
            r"data\.fgmarks\.num_classes=True is out of range: allowed is an integer in \[2, 54\]",
        ),
        (
            {"image_size": 31},
            r"data\.fgmarks\.image_size=31 is out of range: allowed is an integer in \[32, 96\]",
        ),
        (
            {"image_size": 64.0},
            r"data\.fgmarks\.image_size=64.0 is out of range: allowed is an integer in \[32, 96\]",
        ),
        (
            {"image_size": 97},
            r"data\.fgmarks\.image_size=97 is out of range: allowed is an integer in \[32, 96\]",
        ),
        (
            {"detail_size": 0.05},
            r"data\.fgmarks\.detail_size=0.05 is out of range: allowed is a number in \[0.1, 0.3\]",
        ),
        (
            {"detail_size": "big"},
            r"data\.fgmarks\.detail_size='big' is out of range: allowed is a number in "
            r"\[0.1, 0.3\]",
        ),
        (
            {"nuisance": 1.5},
            r"data\.fgmarks\.nuisance=1.5 is out of range: allowed is a number in \[0, 1\]",
        ),
        (
            {"nuisance": -0.1},
            r"data\.fgmarks\.nuisance=-0.1 is out of range: allowed is a number in \[0, 1\]",
        ),
        (
            {"train_per_class": 0},
            r"data\.fgmarks\.train_per_class=0 is out of range: allowed is an integer >= 1",
        ),
        (
            {"val_per_class": 0},
            r"data\.fgmarks\.val_per_class=0 is out of range: allowed is an integer >= 1",
        ),
        ({"seed": -1}, r"data\.fgmarks\.seed=-1 is out of range: allowed is an integer >= 0"),
    ],
)
def test_config_validation_names_the_bad_value(knobs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FGMarksConfig(**knobs)


def test_from_mapping_rejects_unknown_knobs_and_bad_splits() -> None:
    assert FGMarksConfig.from_mapping({"num_classes": 8}).num_classes == 8
    assert FGMarksConfig.from_mapping(None) == FGMarksConfig()
    with pytest.raises(
        ValueError,
        match=r"data\.fgmarks\.classes is not a knob of fgmarks \(did you mean 'num_classes'\?\)",
    ):
        FGMarksConfig.from_mapping({"classes": 8})
    with pytest.raises(
        ValueError,
        match=r"split='test' is not supported: allowed are train, val",
    ):
        generate(TINY, "test")


def test_cache_key_is_stable_and_tracks_every_knob() -> None:
    assert FGMarksConfig(nuisance=1).cache_key() == FGMarksConfig(nuisance=1.0).cache_key()
    keys = {FGMarksConfig().cache_key()}
    for knob, value in [("num_classes", 12), ("image_size", 48), ("detail_size", 0.25),
                        ("nuisance", 0.5), ("train_per_class", 7), ("val_per_class", 7),
                        ("seed", 9)]:  # fmt: skip
        keys.add(FGMarksConfig(**{knob: value}).cache_key())
    assert len(keys) == 8


def _nuisance_features(scenes: fgmarks.SceneBatch) -> np.ndarray:
    columns = []
    for name, values in scenes.nuisance.items():
        if name == "background_pattern":
            columns.append(np.eye(len(BACKGROUND_PATTERNS))[values])
        else:
            columns.append(values.reshape(len(values), -1))
    return np.concatenate(columns, axis=1)


def _global_image_features(images: np.ndarray) -> np.ndarray:
    pixels = images.astype(np.float32) / 255.0
    count, size = len(pixels), pixels.shape[1]
    coarse = pixels.reshape(count, 4, size // 4, 4, size // 4, 3).mean(axis=(2, 4))
    return np.concatenate([pixels.mean(axis=(1, 2)), coarse.reshape(count, -1)], axis=1)


def _body_aligned_crop(images: np.ndarray, scenes: fgmarks.SceneBatch) -> np.ndarray:
    """Pixels sampled along the object's axis (undoing position, scale and rotation), minus the
    object's own colour: the region where the mark lives, free of the global nuisances."""
    half_length = scenes.nuisance["object_length"][:, None, None] / 2
    rotation = scenes.nuisance["object_rotation"][:, None, None]
    centre = scenes.nuisance["object_centre"]
    along = np.linspace(-0.7, 0.7, 15)[None, :, None] * half_length
    across = np.linspace(-0.1, 0.1, 3)[None, None, :] * half_length
    x = centre[:, 0, None, None] + along * np.cos(rotation) - across * np.sin(rotation) - 0.5
    y = centre[:, 1, None, None] + along * np.sin(rotation) + across * np.cos(rotation) - 0.5
    pixels = images.astype(np.float32) / 255.0
    crops = np.stack(
        [
            np.stack([map_coordinates(image[..., c], [y[i], x[i]], order=1) for c in range(3)], -1)
            for i, image in enumerate(pixels)
        ]
    )
    object_rgb = hsv_to_rgb(scenes.nuisance["object_hsv"])
    return (crops - object_rgb[:, None, None, :]).reshape(len(images), -1)


def _held_out_accuracy(
    train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray
) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))
    with threadpool_limits(limits=1):
        classifier.fit(train, train_labels)
        return float(classifier.score(val, val_labels))


def test_only_the_detail_carries_the_label() -> None:
    config = FGMarksConfig(num_classes=12, image_size=32, train_per_class=60, val_per_class=40)
    chance = 1.0 / config.num_classes
    splits = {}
    for split in ("train", "val"):
        scenes = sample_scenes(config, split)
        images = render(scenes, config)
        splits[split] = (
            scenes.labels,
            _nuisance_features(scenes),
            _global_image_features(images),
            _body_aligned_crop(images, scenes),
        )
    (train_y, *train_features), (val_y, *val_features) = splits["train"], splits["val"]
    accuracies = [
        _held_out_accuracy(train_x, train_y, val_x, val_y)
        for train_x, val_x in zip(train_features, val_features, strict=True)
    ]
    nuisance_accuracy, global_accuracy, detail_accuracy = accuracies
    assert abs(nuisance_accuracy - chance) < 0.05, accuracies
    assert abs(global_accuracy - chance) < 0.05, accuracies
    assert detail_accuracy > 0.5, accuracies


def test_materialize_writes_image_folder_counts_and_exact_pixels(tmp_path: Path) -> None:
    train_dir, val_dir = materialize(TINY, tmp_path, progress=False)
    assert train_dir == tmp_path / TINY.cache_key() / "train"
    assert val_dir == tmp_path / TINY.cache_key() / "val"
    names = class_names(TINY.num_classes)
    for split_dir, per_class in ((train_dir, 4), (val_dir, 2)):
        assert sorted(entry.name for entry in split_dir.iterdir()) == names
        assert [_png_count(split_dir / name) for name in names] == [per_class] * 6
    images, labels = generate(TINY, "val")
    first_of_class = images[np.flatnonzero(labels == 2)[0]]
    written = np.asarray(Image.open(val_dir / names[2] / "00000.png"))
    assert np.array_equal(written, first_of_class)
    manifest = json.loads((train_dir.parent / COMPLETE_MARKER).read_text())
    assert manifest["config"] == TINY.as_dict()
    assert manifest["counts"] == {"train": 24, "val": 12}
    dataset = ImageFolder(str(train_dir))
    assert dataset.classes == names
    assert sorted(dataset.targets) == sorted(generate(TINY, "train")[1].tolist())


def test_materialize_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = materialize(TINY, tmp_path, progress=False)
    marker = tmp_path / TINY.cache_key() / COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete cache was rebuilt")

    monkeypatch.setattr(fgmarks, "_write_split", must_not_run)
    assert materialize(TINY, tmp_path, progress=False) == first
    assert marker.stat().st_mtime_ns == stamp


def test_interrupted_materialize_leaves_nothing_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_split = fgmarks._write_split

    def crash_on_val(config: FGMarksConfig, split: str, split_dir: Path, progress: bool) -> None:
        write_split(config, split, split_dir, progress)
        if split == "val":
            raise KeyboardInterrupt

    monkeypatch.setattr(fgmarks, "_write_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        materialize(TINY, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_run_are_rebuilt(tmp_path: Path) -> None:
    key = TINY.cache_key()
    stale_partial = tmp_path / f".{key}.partial-killed" / "train" / "00_disc-dark-rear"
    stale_partial.mkdir(parents=True)
    unmarked = tmp_path / key / "train" / "00_disc-dark-rear"
    unmarked.mkdir(parents=True)
    (unmarked / "00000.png").write_bytes(b"half a png")
    train_dir, val_dir = materialize(TINY, tmp_path, progress=False)
    assert (train_dir.parent / COMPLETE_MARKER).is_file()
    assert sum(_png_count(folder) for folder in train_dir.iterdir()) == 24
    assert sum(_png_count(folder) for folder in val_dir.iterdir()) == 12
    assert Image.open(train_dir / "00_disc-dark-rear" / "00000.png").size == (32, 32)


def test_prepare_data_cfg_rewrites_fgmarks_into_a_custom_image_folder(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {"data": {"dataset": "fgmarks", "fgmarks": {**TINY.as_dict()}, "num_workers": 2}}
    )
    OmegaConf.set_struct(cfg, True)
    prepare_data_cfg(cfg.data, tmp_path)
    expected_root = tmp_path / "fgmarks" / TINY.cache_key()
    assert cfg.data.dataset == "custom"
    assert cfg.data.source_dataset == "fgmarks"
    assert cfg.data.format == "image_folder"
    assert cfg.data.no_labels is False
    assert cfg.data.train_path == str(expected_root / "train")
    assert cfg.data.val_path == str(expected_root / "val")
    assert cfg.data.num_workers == 2
    assert len(ImageFolder(cfg.data.val_path)) == 12


def test_prepare_data_cfg_leaves_other_datasets_alone(tmp_path: Path) -> None:
    assert "fgmarks" in DATASET_NAMES
    for name in ("cifar10", "imagenet", "custom"):
        node = OmegaConf.create({"dataset": name, "train_path": "/data/train"})
        prepare_data_cfg(node, tmp_path)
        assert OmegaConf.to_container(node) == {"dataset": name, "train_path": "/data/train"}
    assert list(tmp_path.iterdir()) == []


def test_prepare_data_cfg_reports_bad_fgmarks_knobs(tmp_path: Path) -> None:
    node = OmegaConf.create({"dataset": "fgmarks", "fgmarks": {"image_size": 16}})
    with pytest.raises(
        ValueError,
        match=r"data\.fgmarks\.image_size=16 is out of range: allowed is an integer in \[32, 96\]",
    ):
        prepare_data_cfg(node, tmp_path)
    assert node.dataset == "fgmarks"


@pytest.mark.solo
def test_solo_learn_loads_the_rewritten_node(tmp_path: Path) -> None:
    from solo.data.classification_dataloader import prepare_datasets as prepare_eval_datasets
    from solo.data.pretrain_dataloader import prepare_datasets as prepare_pretrain_dataset

    data = OmegaConf.create({"dataset": "fgmarks", "fgmarks": TINY.as_dict()})
    prepare_data_cfg(data, tmp_path, progress=False)
    pretrain = prepare_pretrain_dataset(
        data.dataset,
        transform=lambda image: np.asarray(image),
        train_data_path=data.train_path,
        data_format=data.format,
        no_labels=data.no_labels,
    )
    index, image, label = pretrain[0]
    assert index == 0 and image.shape == (32, 32, 3) and 0 <= label < 6
    train, val = prepare_eval_datasets(
        data.dataset,
        T_train=None,
        T_val=None,
        train_data_path=data.train_path,
        val_data_path=data.val_path,
        data_format=data.format,
    )
    assert (len(train), len(val)) == (24, 12)
    assert train.classes == class_names(6)

"""fgmarks: a seeded, download-free fine-grained dataset whose classes differ only by a small mark.

Every image shows one object (an elliptic body with a head, so its heading is visible) on a
textured background. The class is the combination of a small mark's shape, colour and position
along the body. Everything else (background pattern and colours, object hue, size, aspect,
rotation and position, illumination gradient, pixel noise) is drawn independently of the label,
so it carries no label information yet dominates the image: the kind of coarse signal that
plain SSL latches onto. Marks and object are symmetric across the body axis, so a horizontal
flip maps an image to another valid image of the same class.

This module holds the knobs, the scene sampling and the cached image folder; the drawing of a
scene to pixels is in :mod:`solo_fgsynth.data.fgmarks_render`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from solo_fgsynth.data._cache import cached_directory, stable_key
from solo_fgsynth.data.fgmarks_render import (
    BACKGROUND_PATTERNS,
    MARK_COLOURS,
    MARK_POSITIONS,
    MARK_SHAPES,
    SceneBatch,
    hsv_to_rgb,
    render,
)
from solo_fgsynth.errors import ConfigValueError
from solo_fgsynth.validation import check_choice, check_int, check_known_keys, check_number

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
MAX_CLASSES = len(MARK_SHAPES) * len(MARK_COLOURS) * len(MARK_POSITIONS)
_INTEGER_KNOBS: dict[str, tuple[int, int | None]] = {
    "num_classes": (2, MAX_CLASSES),
    "first_class": (0, MAX_CLASSES - 2),
    "image_size": (32, 96),
    "train_per_class": (1, None),
    "val_per_class": (1, None),
    "seed": (0, None),
}
_REAL_KNOBS: dict[str, tuple[float, float]] = {"detail_size": (0.1, 0.3), "nuisance": (0.0, 1.0)}


@dataclass(frozen=True)
class FGMarksConfig:
    """Difficulty knobs of fgmarks; validated on construction.

    ``detail_size`` is the mark's diameter as a fraction of the object's length; ``nuisance``
    scales every nuisance range from 0 (canonical object on plain grey) to 1 (full variation).
    ``first_class`` skips that many classes of the fixed class table: ``first_class=12,
    num_classes=42`` are classes 12-53, none of them a class of the default first 12 (the
    benchmark's generic init is trained on such a disjoint label set).
    """

    num_classes: int = 24
    first_class: int = 0
    image_size: int = 64
    detail_size: float = 0.2
    nuisance: float = 1.0
    train_per_class: int = 200
    val_per_class: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in _INTEGER_KNOBS.items():
            object.__setattr__(
                self, name, check_int(f"data.fgmarks.{name}", getattr(self, name), low, high)
            )
        for name, (low, high) in _REAL_KNOBS.items():
            object.__setattr__(
                self, name, check_number(f"data.fgmarks.{name}", getattr(self, name), low, high)
            )
        if self.first_class + self.num_classes > MAX_CLASSES:
            raise ConfigValueError(
                f"data.fgmarks.first_class={self.first_class} with num_classes="
                f"{self.num_classes} runs past the {MAX_CLASSES} classes fgmarks has: allowed is "
                f"first_class + num_classes <= {MAX_CLASSES}"
            )

    @classmethod
    def from_mapping(cls, knobs: Mapping[str, Any] | None) -> FGMarksConfig:
        """Config from a mapping of knob names (e.g. a yaml node); unknown keys are errors, and a
        knob set to None (yaml ``null``) takes its default."""
        knobs = {name: value for name, value in dict(knobs or {}).items() if value is not None}
        allowed = [field.name for field in dataclasses.fields(cls)]
        check_known_keys(knobs, allowed, "fgmarks", prefix="data.fgmarks.")
        return cls(**knobs)

    def per_class(self, split: str) -> int:
        """Number of images per class in ``split`` ('train' or 'val')."""
        _check_split(split)
        return self.train_per_class if split == "train" else self.val_per_class

    def cache_key(self) -> str:
        """Stable hash of the config and generator version: the cache folder name.

        ``first_class`` enters only when set, so the folders of earlier settings keep their name.
        """
        knobs = self.as_dict()
        if not knobs["first_class"]:
            del knobs["first_class"]
        return stable_key({"generator": "fgmarks", "version": GENERATOR_VERSION, **knobs})

    def as_dict(self) -> dict[str, int | float]:
        """The knobs as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


def _check_split(split: str) -> None:
    check_choice("split", split, SPLITS)


def detail_table(num_classes: int, first_class: int = 0) -> np.ndarray:
    """Class index -> (shape, colour, position) indices, shape ``num_classes x 3``.

    Classes are taken in a fixed order that keeps the three factors nearly balanced for any
    ``num_classes``; the table does not depend on the seed, so a class means the same everywhere.
    Label 0 is class ``first_class`` of that order.
    """
    check_int("data.fgmarks.num_classes", num_classes, 2, MAX_CLASSES)
    check_int("data.fgmarks.first_class", first_class, 0, MAX_CLASSES - num_classes)
    index = np.arange(MAX_CLASSES)
    shape = index % len(MARK_SHAPES)
    colour = (index + index // len(MARK_SHAPES)) % len(MARK_COLOURS)
    position = (index + index // (len(MARK_SHAPES) * len(MARK_COLOURS))) % len(MARK_POSITIONS)
    return np.stack([shape, colour, position], axis=1)[first_class : first_class + num_classes]


def class_names(num_classes: int, first_class: int = 0) -> list[str]:
    """Readable class names such as ``'03_triangle-dark-front'``; sorted order = label order."""
    names = []
    for label, (shape, colour, position) in enumerate(detail_table(num_classes, first_class)):
        detail = f"{MARK_SHAPES[shape]}-{MARK_COLOURS[colour]}-{MARK_POSITIONS[position]}"
        names.append(f"{label:02d}_{detail}")
    return names


def _split_streams(
    config: FGMarksConfig, split: str
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (label, nuisance) random streams of one split; splits never share a seed."""
    split_seed = np.random.SeedSequence([config.seed, SPLITS.index(split), GENERATOR_VERSION])
    label_seed, nuisance_seed = split_seed.spawn(2)
    return np.random.default_rng(label_seed), np.random.default_rng(nuisance_seed)


def sample_scenes(config: FGMarksConfig, split: str) -> SceneBatch:
    """Draw the labels (exactly ``per_class`` each, shuffled) and every image's parameters.

    Train and val use disjoint seed streams derived from ``config.seed``; the nuisances come
    from a stream of their own, so they are independent of the labels.
    """
    _check_split(split)
    label_rng, rng = _split_streams(config, split)
    count = config.num_classes * config.per_class(split)
    labels = label_rng.permutation(
        np.repeat(np.arange(config.num_classes), config.per_class(split))
    )
    details = detail_table(config.num_classes, config.first_class)[labels]
    strength = config.nuisance
    size = config.image_size

    def spread(centre: float, half_width: float) -> np.ndarray:
        draw = rng.uniform(-half_width, half_width, count)
        return (centre + strength * draw).astype(np.float32)

    background_hsv = np.stack(
        [
            rng.uniform(0.0, 1.0, (count, 2)),
            rng.uniform(0.15, 0.9, (count, 2)),
            rng.uniform(0.2, 0.95, (count, 2)),
        ],
        axis=-1,
    ).astype(np.float32)
    background_rgb = 0.5 + strength * (hsv_to_rgb(background_hsv) - 0.5)
    object_length = size * spread(0.52, 0.12)
    object_aspect = spread(0.5, 0.08)
    half_length = object_length / 2
    reach = np.maximum(half_length, 0.95 * half_length + 0.7 * object_aspect * half_length)
    margin = np.maximum(size / 2 - reach - 1.0, 0.0)
    offset_radius = strength * margin * np.sqrt(rng.uniform(0.0, 1.0, count))
    offset_angle = rng.uniform(0.0, 2 * np.pi, count)
    object_centre = size / 2 + offset_radius[:, None] * np.stack(
        [np.cos(offset_angle), np.sin(offset_angle)], axis=1
    )
    object_hsv = np.stack([spread(0.6, 0.5) % 1.0, spread(0.65, 0.25), spread(0.62, 0.12)], axis=1)
    nuisance = {
        "background_pattern": rng.integers(0, len(BACKGROUND_PATTERNS), count),
        "background_rgb": background_rgb.astype(np.float32),
        "pattern_frequency": rng.uniform(2.0, 8.0, count).astype(np.float32),
        "pattern_angle": rng.uniform(0.0, np.pi, count).astype(np.float32),
        "pattern_phase": rng.uniform(0.0, 2 * np.pi, (count, 2)).astype(np.float32),
        "pattern_centre": (size * rng.uniform(0.0, 1.0, (count, 2))).astype(np.float32),
        "illumination_gain": spread(0.0, 0.3),
        "illumination_angle": rng.uniform(0.0, 2 * np.pi, count).astype(np.float32),
        "object_length": object_length,
        "object_aspect": object_aspect,
        "object_rotation": spread(0.0, np.pi),
        "object_centre": object_centre.astype(np.float32),
        "object_hsv": object_hsv.astype(np.float32),
    }
    return SceneBatch(
        labels=labels.astype(np.int64),
        mark_shape=details[:, 0],
        mark_colour=details[:, 1],
        mark_position=details[:, 2],
        nuisance=nuisance,
        noise_seed=int(rng.integers(0, 2**63 - 1)),
    )


def generate(config: FGMarksConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N x H x W x 3) and labels (int64, N) of one split, determined by config."""
    scenes = sample_scenes(config, split)
    return render(scenes, config), scenes.labels


def _write_split(config: FGMarksConfig, split: str, split_dir: Path, progress: bool) -> None:
    images, labels = generate(config, split)
    names = class_names(config.num_classes, config.first_class)
    for name in names:
        (split_dir / name).mkdir(parents=True)
    written_per_class = np.zeros(config.num_classes, dtype=np.int64)
    for image, label in tqdm(
        zip(images, labels, strict=True),
        total=len(labels),
        desc=f"fgmarks {split}",
        unit="img",
        disable=not progress,
    ):
        index = written_per_class[label]
        written_per_class[label] += 1
        Image.fromarray(image).save(split_dir / names[label] / f"{index:05d}.png", compress_level=1)


def materialize(config: FGMarksConfig, root: Path, progress: bool = True) -> tuple[Path, Path]:
    """Write both splits as ``root/<key>/{train,val}/<class>/<i>.png``; return (train_dir, val_dir).

    The folder is built under a temporary name and renamed into place with a completion marker,
    so a finished folder is reused and an interrupted one is rebuilt, never trusted.
    """

    def build(staging: Path) -> None:
        for split in SPLITS:
            _write_split(config, split, staging / split, progress)

    manifest = {
        "dataset": "fgmarks",
        "generator_version": GENERATOR_VERSION,
        "config": config.as_dict(),
        "classes": class_names(config.num_classes, config.first_class),
        "counts": {split: config.num_classes * config.per_class(split) for split in SPLITS},
    }
    target = cached_directory(Path(root), config.cache_key(), build, manifest)
    return target / "train", target / "val"

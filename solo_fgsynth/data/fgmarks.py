"""fgmarks: a seeded, download-free fine-grained dataset whose classes differ only by a small mark.

Every image shows one object (an elliptic body with a head, so its heading is visible) on a
textured background. The class is the combination of a small mark's shape, colour and position
along the body. Everything else (background pattern and colours, object hue, size, aspect,
rotation and position, illumination gradient, pixel noise) is drawn independently of the label,
so it carries no label information yet dominates the image: the kind of coarse signal that
plain SSL latches onto. Marks and object are symmetric across the body axis, so a horizontal
flip maps an image to another valid image of the same class.
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

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
MARK_SHAPES = ("disc", "ring", "square", "triangle", "plus", "bar")
MARK_COLOURS = ("dark", "light", "contrast")
MARK_POSITIONS = ("rear", "middle", "front")
MAX_CLASSES = len(MARK_SHAPES) * len(MARK_COLOURS) * len(MARK_POSITIONS)
BACKGROUND_PATTERNS = ("stripes", "checker", "blobs", "rings")

_POSITION_OFFSETS = np.array([-0.5, 0.0, 0.5], dtype=np.float32)  # mark centre / half-length
_RENDER_CHUNK = 32  # images rendered at once; fixed so that pixel noise is reproducible
_INTEGER_KNOBS: dict[str, tuple[int, int | None]] = {
    "num_classes": (2, MAX_CLASSES),
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
    """

    num_classes: int = 24
    image_size: int = 64
    detail_size: float = 0.2
    nuisance: float = 1.0
    train_per_class: int = 200
    val_per_class: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in _INTEGER_KNOBS.items():
            _check_int(name, getattr(self, name), low, high)
            object.__setattr__(self, name, int(getattr(self, name)))
        for name, (low, high) in _REAL_KNOBS.items():
            _check_float(name, getattr(self, name), low, high)
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_mapping(cls, knobs: Mapping[str, Any] | None) -> FGMarksConfig:
        """Config from a mapping of knob names (e.g. a yaml node); unknown keys are errors."""
        knobs = dict(knobs or {})
        allowed = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(knobs) - set(allowed))
        if unknown:
            raise ValueError(f"unknown fgmarks option(s) {unknown}; allowed: {allowed}")
        return cls(**knobs)

    def per_class(self, split: str) -> int:
        """Number of images per class in ``split`` ('train' or 'val')."""
        _check_split(split)
        return self.train_per_class if split == "train" else self.val_per_class

    def cache_key(self) -> str:
        """Stable hash of the config and generator version: the cache folder name."""
        return stable_key({"generator": "fgmarks", "version": GENERATOR_VERSION, **self.as_dict()})

    def as_dict(self) -> dict[str, int | float]:
        """The knobs as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SceneBatch:
    """Per-image parameters of one split: the label, its detail factors and the nuisances.

    ``nuisance`` maps a parameter name to an array whose first axis is the image index; all of
    them are drawn independently of ``labels``.
    """

    labels: np.ndarray
    mark_shape: np.ndarray
    mark_colour: np.ndarray
    mark_position: np.ndarray
    nuisance: dict[str, np.ndarray]
    noise_seed: int

    def __len__(self) -> int:
        return len(self.labels)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ValueError(f"FGMarksConfig.{name} must be {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"FGMarksConfig.{name} must be {allowed}, got {value!r}")


def _check_float(name: str, value: object, low: float, high: float) -> None:
    is_number = isinstance(value, int | float | np.integer | np.floating)
    if isinstance(value, bool) or not is_number or not low <= float(value) <= high:
        raise ValueError(f"FGMarksConfig.{name} must be a number in [{low}, {high}], got {value!r}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def detail_table(num_classes: int) -> np.ndarray:
    """Class index -> (shape, colour, position) indices, shape ``num_classes x 3``.

    Classes are taken in a fixed order that keeps the three factors nearly balanced for any
    ``num_classes``; the table does not depend on the seed, so a class means the same everywhere.
    """
    _check_int("num_classes", num_classes, 2, MAX_CLASSES)
    index = np.arange(MAX_CLASSES)
    shape = index % len(MARK_SHAPES)
    colour = (index + index // len(MARK_SHAPES)) % len(MARK_COLOURS)
    position = (index + index // (len(MARK_SHAPES) * len(MARK_COLOURS))) % len(MARK_POSITIONS)
    return np.stack([shape, colour, position], axis=1)[:num_classes]


def class_names(num_classes: int) -> list[str]:
    """Readable class names such as ``'03_triangle-dark-front'``; sorted order = label order."""
    names = []
    for label, (shape, colour, position) in enumerate(detail_table(num_classes)):
        detail = f"{MARK_SHAPES[shape]}-{MARK_COLOURS[colour]}-{MARK_POSITIONS[position]}"
        names.append(f"{label:02d}_{detail}")
    return names


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (..., 3) with components in [0, 1]."""
    hue, saturation, value = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    sector = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + hue * 6.0) % 6.0
    ramp = np.clip(np.minimum(sector, 4.0 - sector), 0.0, 1.0)
    return (value - value * saturation * ramp).astype(np.float32)


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
    details = detail_table(config.num_classes)[labels]
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
    background_rgb = 0.5 + strength * (_hsv_to_rgb(background_hsv) - 0.5)
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


def _norm(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Euclidean norm of two broadcastable arrays (faster than ``np.hypot`` for float32)."""
    return np.sqrt(first * first + second * second)


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance in pixels (inside < 0)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _pattern(
    kind: str, x: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray], size: int
) -> np.ndarray:
    """Background pattern values in [-1, 1] for images that all use pattern ``kind``."""

    def per_image(name: str, column: int | None = None) -> np.ndarray:
        values = params[name] if column is None else params[name][:, column]
        return values[:, None, None]

    wavenumber = 2 * np.pi * per_image("pattern_frequency") / size
    angle = per_image("pattern_angle")
    phase_a, phase_b = per_image("pattern_phase", 0), per_image("pattern_phase", 1)
    along = x * np.cos(angle) + y * np.sin(angle)
    if kind == "stripes":
        return np.sin(wavenumber * along + phase_a)
    if kind == "checker":
        across = -x * np.sin(angle) + y * np.cos(angle)
        waves = np.sin(wavenumber * along + phase_a) * np.sin(wavenumber * across + phase_b)
        return np.tanh(3.0 * waves)
    if kind == "blobs":
        oblique = x * np.cos(angle + np.pi / 3) + y * np.sin(angle + np.pi / 3)
        return np.cos(wavenumber * along + phase_a) * np.cos(wavenumber * oblique + phase_b)
    radius = _norm(x - per_image("pattern_centre", 0), y - per_image("pattern_centre", 1))
    return np.sin(wavenumber * radius + phase_a)


def _background(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    size = x.shape[-1]
    count = len(params["background_pattern"])
    mix = np.empty((count, size, size), dtype=np.float32)
    for index, kind in enumerate(BACKGROUND_PATTERNS):
        members = np.flatnonzero(params["background_pattern"] == index)
        if members.size:
            subset = {name: values[members] for name, values in params.items()}
            mix[members] = _pattern(kind, x, y, subset, size)
    mix = (0.5 + 0.5 * mix)[..., None]
    colour_a = params["background_rgb"][:, None, None, 0, :]
    colour_b = params["background_rgb"][:, None, None, 1, :]
    return colour_a + (colour_b - colour_a) * mix


def _mark_shape_distance(
    kind: str, along: np.ndarray, across: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Signed distance (pixels) to a mark of shape ``kind`` centred at the frame's origin."""
    abs_along, abs_across = np.abs(along), np.abs(across)
    if kind == "disc":
        return _norm(along, across) - radius
    if kind == "ring":
        return np.abs(_norm(along, across) - 0.68 * radius) - 0.32 * radius
    if kind == "square":
        return np.maximum(abs_along, abs_across) - 0.8 * radius
    if kind == "triangle":
        slanted = (0.85 * (along - radius) + 1.6 * abs_across) / 1.812
        return np.maximum(-along - 0.6 * radius, slanted)
    if kind == "plus":
        return np.minimum(
            np.maximum(abs_along - radius, abs_across - 0.3 * radius),
            np.maximum(abs_along - 0.3 * radius, abs_across - radius),
        )
    return np.maximum(abs_along - 0.32 * radius, abs_across - radius)


def _mark_distance(
    shape: np.ndarray, along: np.ndarray, across: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Signed distance (pixels) to each image's mark, in the mark's own frame."""
    distance = np.empty(along.shape, dtype=np.float32)
    for index, kind in enumerate(MARK_SHAPES):
        members = np.flatnonzero(shape == index)
        if members.size:
            distance[members] = _mark_shape_distance(
                kind, along[members], across[members], radius[members]
            )
    return distance


def _mark_rgb(colour: np.ndarray, object_hsv: np.ndarray) -> np.ndarray:
    contrast_hsv = np.stack(
        [(object_hsv[:, 0] + 0.5) % 1.0, np.full(len(colour), 0.9), np.full(len(colour), 0.95)],
        axis=1,
    ).astype(np.float32)
    palette = np.stack(
        [
            np.full((len(colour), 3), 0.08, dtype=np.float32),
            np.full((len(colour), 3), 0.96, dtype=np.float32),
            _hsv_to_rgb(contrast_hsv),
        ],
        axis=1,
    )
    return palette[np.arange(len(colour)), colour]


def _render_chunk(
    scenes: SceneBatch, chunk: slice, config: FGMarksConfig, noise_rng: np.random.Generator
) -> np.ndarray:
    params = {name: values[chunk] for name, values in scenes.nuisance.items()}
    size = config.image_size
    coords = np.arange(size, dtype=np.float32) + 0.5
    x, y = coords[None, None, :], coords[None, :, None]
    image = _background(params, x, y)

    def per_image(values: np.ndarray) -> np.ndarray:
        return values[:, None, None]

    half_length = per_image(params["object_length"] / 2)
    half_width = half_length * per_image(params["object_aspect"])
    rotation = per_image(params["object_rotation"])
    dx = x - per_image(params["object_centre"][:, 0])
    dy = y - per_image(params["object_centre"][:, 1])
    along = dx * np.cos(rotation) + dy * np.sin(rotation)
    across = -dx * np.sin(rotation) + dy * np.cos(rotation)
    body = (_norm(along / half_length, across / half_width) - 1.0) * half_width
    head = _norm(along - 0.95 * half_length, across) - 0.7 * half_width
    object_alpha = _coverage(np.minimum(body, head))[..., None]
    object_rgb = _hsv_to_rgb(params["object_hsv"])[:, None, None, :]
    image += (object_rgb - image) * object_alpha

    mark_centre = per_image(_POSITION_OFFSETS[scenes.mark_position[chunk]]) * half_length
    mark_radius = config.detail_size * half_length
    mark_distance = _mark_distance(
        scenes.mark_shape[chunk], along - mark_centre, across, mark_radius
    )
    mark_alpha = (_coverage(mark_distance)[..., None]) * object_alpha
    mark_rgb = _mark_rgb(scenes.mark_colour[chunk], params["object_hsv"])[:, None, None, :]
    image += (mark_rgb - image) * mark_alpha

    light_angle = per_image(params["illumination_angle"])
    light_axis = ((x - size / 2) * np.cos(light_angle) + (y - size / 2) * np.sin(light_angle)) / (
        size / 2
    )
    image *= (255.0 + 255.0 * per_image(params["illumination_gain"]) * light_axis)[..., None]
    noise = noise_rng.standard_normal((*image.shape[:3], 1), dtype=np.float32)
    image += (255.0 * 0.03 * config.nuisance) * noise + 0.5
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def render(scenes: SceneBatch, config: FGMarksConfig) -> np.ndarray:
    """Render sampled scenes to uint8 images of shape N x H x W x 3 (vectorised, in chunks)."""
    size = config.image_size
    images = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for chunk_index, start in enumerate(range(0, len(scenes), _RENDER_CHUNK)):
        chunk = slice(start, min(start + _RENDER_CHUNK, len(scenes)))
        noise_rng = np.random.default_rng([scenes.noise_seed, chunk_index])
        images[chunk] = _render_chunk(scenes, chunk, config, noise_rng)
    return images


def generate(config: FGMarksConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N x H x W x 3) and labels (int64, N) of one split, determined by config."""
    scenes = sample_scenes(config, split)
    return render(scenes, config), scenes.labels


def _write_split(config: FGMarksConfig, split: str, split_dir: Path, progress: bool) -> None:
    images, labels = generate(config, split)
    names = class_names(config.num_classes)
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
        "classes": class_names(config.num_classes),
        "counts": {split: config.num_classes * config.per_class(split) for split in SPLITS},
    }
    target = cached_directory(Path(root), config.cache_key(), build, manifest)
    return target / "train", target / "val"

"""Drawing fgmarks scenes to pixels: background pattern, object, mark, lighting and noise.

Plain vectorised numpy over chunks of images. The chunk size is fixed, so the pixel noise of an
image depends only on the scene batch's noise seed and the image's index, never on the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

MARK_SHAPES = ("disc", "ring", "square", "triangle", "plus", "bar")
MARK_COLOURS = ("dark", "light", "contrast")
MARK_POSITIONS = ("rear", "middle", "front")
BACKGROUND_PATTERNS = ("stripes", "checker", "blobs", "rings")

_POSITION_OFFSETS = np.array([-0.5, 0.0, 0.5], dtype=np.float32)  # mark centre / half-length
_RENDER_CHUNK = 32  # images rendered at once; fixed so that pixel noise is reproducible


class RenderSettings(Protocol):
    """The knobs drawing needs (an :class:`~solo_fgsynth.data.fgmarks.FGMarksConfig` has them)."""

    image_size: int
    detail_size: float
    nuisance: float


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


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (..., 3) with components in [0, 1]."""
    hue, saturation, value = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    sector = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + hue * 6.0) % 6.0
    ramp = np.clip(np.minimum(sector, 4.0 - sector), 0.0, 1.0)
    return (value - value * saturation * ramp).astype(np.float32)


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
            hsv_to_rgb(contrast_hsv),
        ],
        axis=1,
    )
    return palette[np.arange(len(colour)), colour]


def _render_chunk(
    scenes: SceneBatch, chunk: slice, config: RenderSettings, noise_rng: np.random.Generator
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
    object_rgb = hsv_to_rgb(params["object_hsv"])[:, None, None, :]
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


def render(scenes: SceneBatch, config: RenderSettings) -> np.ndarray:
    """Render sampled scenes to uint8 images of shape N x H x W x 3 (vectorised, in chunks)."""
    size = config.image_size
    images = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for chunk_index, start in enumerate(range(0, len(scenes), _RENDER_CHUNK)):
        chunk = slice(start, min(start + _RENDER_CHUNK, len(scenes)))
        noise_rng = np.random.default_rng([scenes.noise_seed, chunk_index])
        images[chunk] = _render_chunk(scenes, chunk, config, noise_rng)
    return images

"""What each feature dimension tells about fgmarks' label and about each nuisance.

fgmarks knows every image's factors, so each pooled-feature dimension can be scored against
each of them with one statistic: the adjusted R^2 of an ordinary least-squares fit of the
dimension on the factor's design (one-hot for a categorical factor, so this is the adjusted
eta^2 of a one-way ANOVA; sin/cos for an angle; the raw columns otherwise). Adjusting for the
number of regressors keeps a 12-class label and a 1-column nuisance on one scale.
"""

from __future__ import annotations

import numpy as np

from solo_fgsynth.data.fgmarks import SceneBatch

# nuisance name -> how its parameters enter the design: "category", "angle:<period>" or "real"
NUISANCES: dict[str, str] = {
    "background_pattern": "category",
    "background_rgb": "real",
    "pattern_frequency": "real",
    "pattern_angle": f"angle:{np.pi}",
    "illumination_gain": "real",
    "illumination_angle": f"angle:{2 * np.pi}",
    "object_length": "real",
    "object_aspect": "real",
    "object_rotation": f"angle:{2 * np.pi}",
    "object_centre": "real",
    "object_hue": f"angle:{1.0}",
    "object_saturation": "real",
    "object_value": "real",
}


def one_hot(codes: np.ndarray) -> np.ndarray:
    """Indicator columns of an integer code, the first level dropped (it is the intercept's)."""
    levels = np.unique(codes)
    return (codes[:, None] == levels[None, 1:]).astype(np.float64)


def _nuisance_values(scenes: SceneBatch, name: str) -> np.ndarray:
    if name.startswith("object_") and name.removeprefix("object_") in (
        "hue",
        "saturation",
        "value",
    ):
        column = ("hue", "saturation", "value").index(name.removeprefix("object_"))
        return scenes.nuisance["object_hsv"][:, column]
    return scenes.nuisance[name]


def design(values: np.ndarray, kind: str) -> np.ndarray:
    """Regressor columns (N x k) of one factor's values, as its ``kind`` says."""
    values = np.asarray(values)
    if kind == "category":
        return one_hot(values.astype(np.int64))
    columns = values.reshape(len(values), -1).astype(np.float64)
    if kind.startswith("angle:"):
        phase = 2 * np.pi * columns / float(kind.removeprefix("angle:"))
        return np.concatenate([np.sin(phase), np.cos(phase)], axis=1)
    if kind != "real":
        raise ValueError(f"unknown factor kind {kind!r}: allowed are category, angle:P, real")
    return columns


def adjusted_r2(features: np.ndarray, regressors: np.ndarray) -> np.ndarray:
    """Adjusted R^2 of each feature column regressed (OLS with intercept) on ``regressors``.

    A constant feature column explains nothing and scores 0.
    """
    features = np.asarray(features, dtype=np.float64)
    count, k = regressors.shape
    if count <= k + 1:
        raise ValueError(f"{count} samples cannot fit {k} regressors: need more than {k + 1}")
    centred = features - features.mean(axis=0)
    design_matrix = np.concatenate([np.ones((count, 1)), regressors], axis=1)
    coefficients, *_ = np.linalg.lstsq(design_matrix, features, rcond=None)
    residual = ((features - design_matrix @ coefficients) ** 2).sum(axis=0)
    total = (centred**2).sum(axis=0)
    constant = total <= 1e-12 * max(float(total.max()), 1e-30)
    r2 = 1.0 - residual / np.where(constant, 1.0, total)
    adjusted = 1.0 - (1.0 - r2) * (count - 1) / (count - k - 1)
    return np.where(constant, 0.0, adjusted)


def factor_scores(features: np.ndarray, scenes: SceneBatch) -> dict[str, np.ndarray]:
    """Per-dimension adjusted R^2 against the label and against every nuisance in NUISANCES."""
    if len(features) != len(scenes):
        raise ValueError(f"{len(features)} feature rows for {len(scenes)} scenes")
    scores = {"label": adjusted_r2(features, design(scenes.labels, "category"))}
    for name, kind in NUISANCES.items():
        scores[name] = adjusted_r2(features, design(_nuisance_values(scenes, name), kind))
    return scores


def dominant_factors(scores: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dimension: the best nuisance score, its nuisance's index in NUISANCES, and whether
    the dimension is nuisance-dominated (its best nuisance score exceeds its label score)."""
    nuisance = np.stack([scores[name] for name in NUISANCES])
    best = nuisance.max(axis=0)
    return best, nuisance.argmax(axis=0), best > scores["label"]

"""The factor diagnostic of a backbone on fgmarks: are the selected dimensions the nuisance ones?

Scores every pooled-feature dimension against the label and each nuisance on the validation
split (rendered in memory from the run's own fgmarks settings), then, for the dimensions each
selection criterion picks, the share that is nuisance-dominated against the share among all
dimensions (what a random selection of any size picks on average).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from solo_fgsynth.data.fgmarks import FGMarksConfig, SceneBatch, sample_scenes
from solo_fgsynth.data.fgmarks_render import render
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.diagnose.factors import NUISANCES, dominant_factors, factor_scores
from solo_fgsynth.synth.config import CAM_RANKINGS
from solo_fgsynth.synth.selection import lowest_fraction_mask, ranking_scores

NULL_SEED = 0
ALL_ROW = "all dims (= random)"
NULL_ROW = "pure-noise dims (null)"


def null_scores(scenes: SceneBatch, num_dims: int, seed: int = NULL_SEED) -> dict[str, np.ndarray]:
    """Factor scores of ``num_dims`` dims of i.i.d. Gaussian noise over the same scenes.

    The null of every share: the best of 13 nuisance scores beats one label score for most
    pure-noise dims, so a share of nuisance-dominated dims means something only above this.
    """
    noise = np.random.default_rng(seed).standard_normal((len(scenes), num_dims))
    return factor_scores(noise, scenes)


@dataclass
class Diagnosis:
    """Per-dimension factor scores and each criterion's selection (boolean masks over dims).

    ``null`` holds the scores of as many pure-noise dims over the same images (their row,
    ``pure-noise dims (null)``, is what the shares are read against).
    """

    scores: dict[str, np.ndarray]
    selections: dict[str, np.ndarray] = field(default_factory=dict)
    null: dict[str, np.ndarray] | None = None

    @property
    def nuisance_dominated(self) -> np.ndarray:
        """Dimensions whose best nuisance score exceeds their label score."""
        return dominant_factors(self.scores)[2]

    def rows(self) -> list[dict[str, float | int | str]]:
        """One row per criterion, plus ``all dims`` (the expectation of a random selection)
        and, when measured, the pure-noise null."""
        everything = np.ones_like(self.nuisance_dominated)
        rows = [
            _row(name, mask, self.scores)
            for name, mask in {ALL_ROW: everything, **self.selections}.items()
        ]
        if self.null is not None:
            rows.append(_row(NULL_ROW, np.ones_like(self.null["label"], dtype=bool), self.null))
        return rows

    def to_dict(self) -> dict:
        """JSON-ready: the table rows, per-factor means and the per-dimension scores."""
        best, which, dominated = dominant_factors(self.scores)
        names = list(NUISANCES)
        return {
            "rows": self.rows(),
            "dominant_nuisance_counts": {
                names[i]: int(((which == i) & dominated).sum()) for i in range(len(names))
            },
            "dims": {
                "label": self.scores["label"].round(5).tolist(),
                "best_nuisance": best.round(5).tolist(),
                "best_nuisance_name": [names[i] for i in which],
                "selections": {k: np.flatnonzero(v).tolist() for k, v in self.selections.items()},
            },
        }


def _row(
    name: str, mask: np.ndarray, scores: dict[str, np.ndarray]
) -> dict[str, float | int | str]:
    """One table row: how many dims ``mask`` picks, their nuisance-dominated share, mean scores."""
    best_nuisance, _, dominated = dominant_factors(scores)
    picked = int(mask.sum())
    return {
        "criterion": name,
        "dims": picked,
        "nuisance_dominated_share": float(dominated[mask].mean()) if picked else 0.0,
        "mean_label_score": float(scores["label"][mask].mean()) if picked else 0.0,
        "mean_nuisance_score": float(best_nuisance[mask].mean()) if picked else 0.0,
    }


@torch.no_grad()
def validation_features(
    backbone: nn.Module, fgmarks: FGMarksConfig, view: EvalView, batch_size: int = 256
) -> tuple[np.ndarray, SceneBatch]:
    """Eval-mode pooled features of fgmarks' validation split, and its scenes (the factors)."""
    scenes = sample_scenes(fgmarks, "val")
    images = render(scenes, fgmarks)
    transform = view.transform()
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    features = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(
            [transform(Image.fromarray(im)) for im in images[start : start + batch_size]]
        )
        features.append(backbone(batch.to(device)).float().cpu())
    backbone.train(was_training)
    return torch.cat(features).numpy(), scenes


def lowest(scores: Tensor | np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask (numpy) of the ``round(fraction * C)`` lowest scores, as the method picks."""
    return lowest_fraction_mask(torch.as_tensor(np.asarray(scores)), fraction).numpy()


def criterion_selections(
    variance: Tensor,
    importance: Tensor | None,
    var_fraction: float,
    cam_fraction: float,
    cam_ranking: str = "magnitude",
    importance_magnitude: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The dims each criterion picks: variance, Grad-CAM under every ranking, and their union.

    ``importance`` is the tracked signed mean ``E[alpha_k z_k]``, ``importance_magnitude`` the
    tracked ``E[|alpha_k z_k|]``; a checkpoint of before the magnitude was tracked has no
    ``magnitude`` ranking, so its rows are left out.
    """
    selections = {"variance": lowest(variance, var_fraction)}
    if importance is not None:
        signed = torch.as_tensor(importance)
        for ranking in CAM_RANKINGS:
            if ranking == "magnitude" and importance_magnitude is None:
                continue
            magnitude = signed if importance_magnitude is None else importance_magnitude
            scores = ranking_scores(signed, torch.as_tensor(magnitude), ranking)
            selections[f"gradcam ({ranking})"] = lowest(scores, cam_fraction)
        if f"gradcam ({cam_ranking})" in selections:
            selections[f"both (union, {cam_ranking})"] = (
                selections["variance"] | selections[f"gradcam ({cam_ranking})"]
            )
    return selections


def diagnose(
    backbone: nn.Module,
    fgmarks: FGMarksConfig,
    view: EvalView,
    tracked: Mapping[str, Tensor] | None = None,
    var_fraction: float = 0.25,
    cam_fraction: float = 0.25,
    cam_ranking: str = "magnitude",
) -> Diagnosis:
    """Score ``backbone``'s dims on fgmarks' val split and evaluate the criteria's selections.

    ``tracked`` holds an fgsynth run's EMA ``variance``, ``importance`` and (since it is
    tracked) ``importance_magnitude``; without it (a stock run) the variance criterion uses the
    validation features' own variance, and there is no Grad-CAM criterion.
    """
    features, scenes = validation_features(backbone, fgmarks, view)
    diagnosis = Diagnosis(
        scores=factor_scores(features, scenes), null=null_scores(scenes, features.shape[1])
    )
    if tracked is not None:
        selections = criterion_selections(
            tracked["variance"],
            tracked["importance"],
            var_fraction,
            cam_fraction,
            cam_ranking,
            tracked.get("importance_magnitude"),
        )
    else:
        val_variance = torch.as_tensor(features).var(dim=0)
        selections = {
            "variance (val features)": lowest(val_variance, var_fraction),
        }
    diagnosis.selections = selections
    return diagnosis


def markdown(diagnosis: Diagnosis) -> str:
    """The selection table as markdown."""
    lines = [
        "| criterion | dims | nuisance-dominated share | mean label R² | mean best-nuisance R² |",
        "|---|---|---|---|---|",
    ]
    for row in diagnosis.rows():
        lines.append(
            f"| {row['criterion']} | {row['dims']} | {100 * row['nuisance_dominated_share']:.1f} % "
            f"| {row['mean_label_score']:.3f} | {row['mean_nuisance_score']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(diagnosis: Diagnosis, path: Path, title: str = "") -> None:
    """Label score against best nuisance score per dimension, each criterion's picks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = diagnosis.scores["label"]
    nuisance = dominant_factors(diagnosis.scores)[0]
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.scatter(label, nuisance, s=10, c="lightgrey", label="all dims")
    markers = ["o", "s", "^", "v", "D", "x"]
    for (name, mask), marker in zip(diagnosis.selections.items(), markers, strict=False):
        axis.scatter(
            label[mask], nuisance[mask], s=28, marker=marker, facecolors="none", label=name
        )
    top = max(float(label.max()), float(nuisance.max()), 0.05)
    axis.plot([0, top], [0, top], "k--", linewidth=0.8)
    axis.set_xlabel("label score (adjusted R², one-hot label)")
    axis.set_ylabel("best nuisance score (adjusted R²)")
    axis.set_title(title or "above the dashed line: nuisance-dominated")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

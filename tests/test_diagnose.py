"""The factor diagnostic: its statistic against independent computations, and the whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from solo_fgsynth.data.fgmarks import FGMarksConfig, sample_scenes
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.diagnose import write_diagnosis
from solo_fgsynth.diagnose.analysis import Diagnosis, criterion_selections, diagnose, lowest
from solo_fgsynth.diagnose.factors import (
    NUISANCES,
    adjusted_r2,
    design,
    dominant_factors,
    factor_scores,
)


def test_adjusted_r2_of_a_one_hot_factor_is_the_adjusted_anova_eta_squared() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 4, 200)
    feature = rng.normal(size=200) + np.array([0.0, 1.0, -1.0, 2.0])[groups]
    grand = feature.mean()
    between = sum(
        (groups == g).sum() * (feature[groups == g].mean() - grand) ** 2 for g in range(4)
    )
    eta2 = between / ((feature - grand) ** 2).sum()
    expected = 1 - (1 - eta2) * (200 - 1) / (200 - 3 - 1)
    got = adjusted_r2(feature[:, None], design(groups, "category"))
    assert got[0] == pytest.approx(expected, rel=1e-10)


def test_exact_linear_and_angular_relations_score_one_and_constants_score_zero() -> None:
    rng = np.random.default_rng(1)
    value = rng.uniform(0, 1, 50)
    angle = rng.uniform(0, 2 * np.pi, 50)
    features = np.stack([3 * value - 1, np.full(50, 7.0)], axis=1)
    scores = adjusted_r2(features, design(value, "real"))
    assert scores[0] == pytest.approx(1.0) and scores[1] == 0.0
    circular = adjusted_r2(np.cos(angle)[:, None], design(angle, f"angle:{2 * np.pi}"))
    assert circular[0] == pytest.approx(1.0)


def test_too_few_samples_for_the_regressors_is_an_error_naming_both() -> None:
    with pytest.raises(ValueError, match="3 samples cannot fit 2 regressors"):
        adjusted_r2(np.zeros((3, 1)), np.zeros((3, 2)))


def test_dims_copying_the_label_or_a_nuisance_are_classified_as_such() -> None:
    config = FGMarksConfig(num_classes=6, image_size=32, train_per_class=1, val_per_class=20)
    scenes = sample_scenes(config, "val")
    rng = np.random.default_rng(2)
    features = np.stack(
        [
            np.eye(6)[scenes.labels] @ rng.normal(size=6),
            scenes.nuisance["object_length"],
        ],
        axis=1,
    )
    scores = factor_scores(features, scenes)
    best, which, dominated = dominant_factors(scores)
    assert scores["label"][0] == pytest.approx(1.0)
    assert not dominated[0] and dominated[1]
    assert list(NUISANCES)[which[1]] == "object_length" and best[1] == pytest.approx(1.0)


def test_rows_compare_each_selection_with_the_share_among_all_dims() -> None:
    scores = {"label": np.array([0.9, 0.1, 0.1, 0.9])}
    scores.update({name: np.zeros(4) for name in NUISANCES})
    scores["object_length"] = np.array([0.0, 0.5, 0.5, 0.0])
    diagnosis = Diagnosis(scores, {"variance": np.array([False, True, True, False])})
    rows = {row["criterion"]: row for row in diagnosis.rows()}
    assert rows["all dims (= random)"]["nuisance_dominated_share"] == 0.5
    assert rows["variance"]["nuisance_dominated_share"] == 1.0
    assert rows["variance"]["dims"] == 2
    assert rows["variance"]["mean_label_score"] == pytest.approx(0.1)


def test_gradcam_rankings_pick_the_lowest_signed_magnitude_and_positive_scores() -> None:
    importance = torch.tensor([-3.0, -0.1, 0.0, 0.2, 5.0, 1.0, -2.0, 0.05])
    magnitude = torch.tensor([3.0, 0.5, 4.0, 0.2, 5.0, 1.0, 2.0, 0.3])
    selections = criterion_selections(
        torch.arange(8.0), importance, 0.25, 0.25, importance_magnitude=magnitude
    )
    assert np.flatnonzero(selections["variance"]).tolist() == [0, 1]
    assert np.flatnonzero(selections["gradcam (signed)"]).tolist() == [0, 6]
    assert np.flatnonzero(selections["gradcam (magnitude)"]).tolist() == [3, 7]
    positive = np.flatnonzero(selections["gradcam (positive)"]).tolist()
    assert len(positive) == 2 and set(positive) <= {0, 1, 2, 6}  # all tie at 0
    assert np.flatnonzero(selections["both (union, magnitude)"]).tolist() == [0, 1, 3, 7]
    assert lowest(torch.arange(8.0), 0.0).sum() == 0


def test_without_a_tracked_magnitude_the_magnitude_rows_are_left_out() -> None:
    importance = torch.tensor([-3.0, -0.1, 0.0, 0.2, 5.0, 1.0, -2.0, 0.05])
    selections = criterion_selections(torch.arange(8.0), importance, 0.25, 0.25, "signed")
    assert set(selections) == {
        "variance",
        "gradcam (signed)",
        "gradcam (positive)",
        "both (union, signed)",
    }


def test_diagnose_runs_on_a_backbone_and_writes_table_json_and_figure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    config = FGMarksConfig(num_classes=4, image_size=32, train_per_class=1, val_per_class=6)
    tracked = {
        "variance": torch.arange(8.0),
        "importance": torch.linspace(-1, 1, 8),
        "importance_magnitude": torch.linspace(1, 2, 8),
    }
    diagnosis = diagnose(backbone, config, EvalView(32), tracked=tracked)
    assert set(diagnosis.selections) == {
        "variance",
        "gradcam (signed)",
        "gradcam (magnitude)",
        "gradcam (positive)",
        "both (union, magnitude)",
    }
    assert all(scores.shape == (8,) for scores in diagnosis.scores.values())
    write_diagnosis(diagnosis, tmp_path)
    saved = json.loads((tmp_path / "diagnosis.json").read_text())
    assert saved["rows"][0]["criterion"] == "all dims (= random)" and saved["rows"][0]["dims"] == 8
    assert "| variance | 2 |" in (tmp_path / "diagnosis.md").read_text()
    assert (tmp_path / "diagnosis.png").stat().st_size > 0
    stock = diagnose(backbone, config, EvalView(32))
    assert list(stock.selections) == ["variance (val features)"]


@pytest.mark.solo
def test_diagnose_cli_reads_a_checkpoint_and_its_tracked_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from solo_fgsynth.backbones import BACKBONES
    from solo_fgsynth.cli import main

    backbone = BACKBONES["resnet10_small"](width=4)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["fgsynth.statistics.variance"] = torch.arange(32.0)
    state["fgsynth.statistics.importance"] = torch.linspace(-1, 1, 32)
    ckpt = tmp_path / "run" / "fgsynth-ep=0.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": state}, ckpt)
    fgmarks = {"num_classes": 4, "image_size": 32, "train_per_class": 1, "val_per_class": 6}
    recipe = {
        "method": "fgsynth",
        "backbone": {"name": "resnet10_small", "kwargs": {"width": 4}},
        "method_kwargs": {"var_fraction": 0.25, "cam_fraction": 0.25, "cam_ranking": "signed"},
        "data": {"dataset": "custom", "source_dataset": "fgmarks", "fgmarks": fgmarks},
        "augmentations": [{"crop_size": 32}],
    }
    (ckpt.parent / "args.json").write_text(json.dumps(recipe))
    assert main(["diagnose", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "diagnosis.json").read_text())
    assert saved["dims"]["selections"]["variance"] == list(range(8))
    assert saved["dims"]["selections"]["gradcam (signed)"] == list(range(8))
    assert "both (union, signed)" in capsys.readouterr().out

    recipe["data"] = {"dataset": "cub200"}
    (ckpt.parent / "args.json").write_text(json.dumps(recipe))
    assert main(["diagnose", str(ckpt)]) == 2
    assert "needs fgmarks" in capsys.readouterr().err

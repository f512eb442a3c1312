"""The benchmark's generic init in the zoo: packaged, sha256-verified, and its recorded metrics
reproduced on the benchmark data it was measured on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from solo_fgsynth import zoo
from solo_fgsynth.benchmark.cell import extract
from solo_fgsynth.data.fgmarks import FGMarksConfig, materialize
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.metrics import (
    fit_linear_probe,
    knn_top1,
    probe_top1,
    retrieval_metrics,
)
from solo_fgsynth.zoo import get_entry

NAME = "generic-init-resnet18small-fgmarks"
REPO = Path(__file__).resolve().parents[1]


def _quick_fgmarks() -> FGMarksConfig:
    """The fgmarks knobs the quick preset's overrides set (the data the init is measured on)."""
    preset = yaml.safe_load((REPO / "scripts" / "benchmark" / "quick.yaml").read_text())
    knobs = {}
    for override in preset["overrides"]:
        key, _, value = override.removeprefix("++").partition("=")
        if key.startswith("data.fgmarks."):
            knobs[key.removeprefix("data.fgmarks.")] = yaml.safe_load(value)
    return FGMarksConfig.from_mapping(knobs)


def test_the_quick_preset_starts_every_cell_from_the_generic_init() -> None:
    preset = yaml.safe_load((REPO / "scripts" / "benchmark" / "quick.yaml").read_text())
    assert f"++backbone.init=zoo:{NAME}" in preset["overrides"]
    assert "init" in preset["methods"]


def test_the_generic_init_is_packaged_small_and_from_other_classes_and_data() -> None:
    entry = get_entry(NAME)
    assert entry.size_bytes <= 5 * 2**20
    assert entry.backbone.arch == "resnet18_small" and entry.crop_size == 32
    fgmarks = entry.recipe["data"]["fgmarks"]
    benchmark = _quick_fgmarks()
    trained_on = set(range(fgmarks["first_class"], fgmarks["first_class"] + fgmarks["num_classes"]))
    benchmark_classes = set(range(benchmark.first_class, benchmark.num_classes))
    assert not trained_on & benchmark_classes
    assert fgmarks["seed"] not in (benchmark.seed, 1)  # neither the reported nor the tuning data


def test_the_generic_init_loads_verified_offline_and_reproduces_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOLO_FGSYNTH_CACHE", str(tmp_path / "cache"))
    backbone = zoo.load(NAME)  # checks the sha256 of the packaged file
    recorded = get_entry(NAME).metrics
    train_dir, val_dir = materialize(_quick_fgmarks(), tmp_path / "data", progress=False)
    train = extract(backbone, str(train_dir), EvalView(32), 256)
    val = extract(backbone, str(val_dir), EvalView(32), 256)
    probe = fit_linear_probe(*train, num_classes=12)
    measured = {
        "linear_top1": probe_top1(probe, *val),
        "knn_top1": knn_top1(*train, *val, k=20),
        **retrieval_metrics(*val),
    }
    # retrieval and kNN are exact functions of the features; the probe's optimum is unique
    # (weight decay), reached from another random start: within a few validation images
    for name in ("knn_top1", "retrieval_top1", "retrieval_top5", "retrieval_map"):
        assert measured[name] == pytest.approx(recorded[name], abs=1e-6), name
    assert measured["linear_top1"] == pytest.approx(recorded["linear_top1"], abs=0.5)

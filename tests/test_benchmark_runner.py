"""The benchmark end to end at toy size (needs solo-learn), and its planning and reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from solo_fgsynth.benchmark.report import (
    diagnostic_summary,
    diagnostic_table,
    markdown_table,
    overheads,
    paired_gaps,
    paired_table,
    summarize,
)
from solo_fgsynth.benchmark.runner import load_preset, main, plan_cells
from solo_fgsynth.errors import UserError

REPO = Path(__file__).resolve().parents[1]

TOY_PRESET = {
    "config_path": str(REPO / "scripts" / "pretrain" / "fgmarks"),
    "methods": ["byol", "fgsynth_byol"],
    "seeds": [0],
    "overrides": [
        "max_epochs=1",
        "optimizer.batch_size=8",
        "data.num_workers=0",
        "++data.fgmarks.num_classes=4",
        "++data.fgmarks.image_size=32",
        "++data.fgmarks.train_per_class=4",
        "++data.fgmarks.val_per_class=2",
        "accelerator=cpu",
        "devices=1",
        "method_kwargs.proj_hidden_dim=32",
        "method_kwargs.pred_hidden_dim=32",
        "++method_kwargs.synth_start_epoch=0",
    ],
    "ablation_methods": ["fgsynth_byol"],
    "ablations": {"random": ["method_kwargs.criterion=random"]},
    "overhead_pairs": {"fgsynth_byol": "byol"},
    "eval": {"batch_size": 16, "knn_k": 3, "gradcam": 2, "headroom_steps": 20},
}


def _record(cell: str, seed: int, top1: float, step: float) -> dict:
    metrics = dict.fromkeys(
        ("linear_top1", "knn_top1", "retrieval_top1", "retrieval_top5", "retrieval_map"), top1
    )
    return {
        "cell": cell,
        "seed": seed,
        "metrics": metrics,
        "step_time_s": step,
        "peak_memory_mb": 100.0,
    }


def test_plan_gives_every_cell_the_same_overrides_and_adds_ablations() -> None:
    cells = plan_cells(TOY_PRESET, seeds=[0, 1], ablations=["random"])
    assert [(c["cell"], c["seed"]) for c in cells] == [
        ("byol", 0),
        ("byol", 1),
        ("fgsynth_byol", 0),
        ("fgsynth_byol", 1),
        ("fgsynth_byol-random", 0),
        ("fgsynth_byol-random", 1),
    ]
    shared = TOY_PRESET["overrides"]
    assert all(c["overrides"][: len(shared)] == shared for c in cells)
    assert cells[-1]["overrides"][-1] == "method_kwargs.criterion=random"
    assert cells[-1]["config_name"] == "fgsynth_byol"


def test_optional_methods_run_only_when_named() -> None:
    preset = dict(TOY_PRESET, optional_methods=["lcr"])
    assert "lcr" not in [c["cell"] for c in plan_cells(preset, seeds=[0], ablations=[])]
    cells = plan_cells(preset, seeds=[0, 1], ablations=[], methods=["byol", "lcr"])
    assert [(c["cell"], c["config_name"], c["seed"]) for c in cells] == [
        ("byol", "byol", 0),
        ("byol", "byol", 1),
        ("lcr", "lcr", 0),
        ("lcr", "lcr", 1),
    ]
    assert cells[2]["overrides"] == cells[0]["overrides"]  # the same budget as the others


def test_the_quick_preset_offers_the_peers_against_byol() -> None:
    preset = load_preset(REPO / "scripts" / "benchmark" / "quick.yaml")
    assert preset["optional_methods"] == ["lcr", "directpred", "ssole"]
    assert all(preset["overhead_pairs"][peer] == "byol" for peer in preset["optional_methods"])
    cells = plan_cells(preset, seeds=[0], ablations=[], methods=["lcr", "directpred", "ssole"])
    assert [c["config_name"] for c in cells] == ["lcr", "directpred", "ssole"]


def test_methods_can_name_single_ablation_cells_without_their_fgsynth_cell() -> None:
    cells = plan_cells(TOY_PRESET, seeds=[0, 1], ablations=[], methods=["fgsynth_byol-random"])
    assert [(c["cell"], c["method"], c["ablation"], c["seed"]) for c in cells] == [
        ("fgsynth_byol-random", "fgsynth_byol", "random", 0),
        ("fgsynth_byol-random", "fgsynth_byol", "random", 1),
    ]
    assert cells[0]["overrides"][-1] == "method_kwargs.criterion=random"
    both = plan_cells(
        TOY_PRESET, seeds=[0], ablations=["random"], methods=["fgsynth_byol", "fgsynth_byol-random"]
    )
    assert [c["cell"] for c in both] == ["fgsynth_byol", "fgsynth_byol-random"]  # not twice
    with pytest.raises(UserError, match=r"or an ablation cell such as fgsynth_byol-"):
        plan_cells(TOY_PRESET, seeds=[0], ablations=[], methods=["fgsynth_byol-bogus"])


def test_methods_narrow_the_plan_and_unknown_ones_are_rejected() -> None:
    cells = plan_cells(TOY_PRESET, seeds=[0], ablations=[], methods=["fgsynth_byol"])
    assert [c["cell"] for c in cells] == ["fgsynth_byol"]
    with pytest.raises(UserError, match=r"method\(s\) moco not in the preset"):
        plan_cells(TOY_PRESET, seeds=[0], ablations=[], methods=["moco"])


def test_ablations_run_only_on_the_chosen_bases_and_need_one() -> None:
    preset = {**TOY_PRESET, "methods": ["byol", "fgsynth_byol", "fgsynth_simclr"]}
    preset["ablation_methods"] = ["fgsynth_byol", "fgsynth_simclr"]
    cells = plan_cells(preset, seeds=[0], ablations=["random"], methods=["byol", "fgsynth_byol"])
    assert [c["cell"] for c in cells] == ["byol", "fgsynth_byol", "fgsynth_byol-random"]
    everything = plan_cells(preset, seeds=[0], ablations=["random"])
    assert [c["cell"] for c in everything][-2:] == ["fgsynth_byol-random", "fgsynth_simclr-random"]
    with pytest.raises(
        UserError,
        match=r"^--ablations random needs one of fgsynth_byol, fgsynth_simclr in --methods "
        r"\(kept: byol\)$",
    ):
        plan_cells(preset, seeds=[0], ablations=["random"], methods=["byol"])


def test_an_ablation_of_one_bases_knob_runs_only_on_the_bases_it_names() -> None:
    preset = {**TOY_PRESET, "methods": ["fgsynth_byol", "fgsynth_simclr"]}
    preset["ablation_methods"] = ["fgsynth_byol", "fgsynth_simclr"]
    preset["ablations"] = {**TOY_PRESET["ablations"], "negatives": ["x=1"]}
    preset["ablation_only"] = {"negatives": ["fgsynth_simclr"]}
    cells = plan_cells(preset, seeds=[0], ablations=["random", "negatives"])
    assert [c["cell"] for c in cells] == [
        "fgsynth_byol",
        "fgsynth_simclr",
        "fgsynth_byol-random",
        "fgsynth_simclr-random",
        "fgsynth_simclr-negatives",
    ]
    single = plan_cells(preset, seeds=[0], ablations=[], methods=["fgsynth_simclr-negatives"])
    assert [c["cell"] for c in single] == ["fgsynth_simclr-negatives"]
    with pytest.raises(UserError, match=r"method\(s\) fgsynth_byol-negatives not in the preset"):
        plan_cells(preset, seeds=[0], ablations=[], methods=["fgsynth_byol-negatives"])
    with pytest.raises(
        UserError, match=r"^--ablations negatives applies only to fgsynth_simclr: none of them"
    ):
        plan_cells(preset, seeds=[0], ablations=["negatives"], methods=["fgsynth_byol"])
    for only, message in (
        ({"negativ": ["fgsynth_simclr"]}, r"ablation_only names 'negativ': not an ablation"),
        ({"negatives": ["simclr"]}, r"ablation_only\.negatives names simclr: allowed are"),
    ):
        with pytest.raises(UserError, match=message):
            plan_cells({**preset, "ablation_only": only}, seeds=[0], ablations=[])


def test_the_init_cell_reads_the_init_config_and_needs_one() -> None:
    preset = dict(TOY_PRESET, methods=["init", "byol"], init_config="byol")
    cells = plan_cells(preset, seeds=[0], ablations=[])
    assert [(c["cell"], c["method"], c["config_name"]) for c in cells] == [
        ("init", "init", "byol"),
        ("byol", "byol", "byol"),
    ]
    assert cells[0]["overrides"] == cells[1]["overrides"]
    with pytest.raises(UserError, match=r"lists method 'init' but sets no init_config"):
        plan_cells(dict(TOY_PRESET, methods=["init"]), seeds=[0], ablations=[])


def test_method_overrides_follow_the_shared_ones_for_that_method_only() -> None:
    preset = dict(TOY_PRESET, methods=["byol", "fgsynth_byol", "supcon"])
    preset["method_overrides"] = {"supcon": ["optimizer.lr=0.2"]}
    cells = plan_cells(preset, seeds=[0], ablations=["random"])
    by_cell = {c["cell"]: c["overrides"] for c in cells}
    assert by_cell["supcon"] == [*TOY_PRESET["overrides"], "optimizer.lr=0.2"]
    assert by_cell["byol"] == TOY_PRESET["overrides"]
    assert by_cell["fgsynth_byol"] == TOY_PRESET["overrides"]
    assert by_cell["fgsynth_byol-random"] == [
        *TOY_PRESET["overrides"],
        "method_kwargs.criterion=random",
    ]
    preset["method_overrides"] = {"moco": ["optimizer.lr=0.2"]}
    with pytest.raises(
        UserError,
        match=r"^method_overrides names moco: no such method config in .*fgmarks$",
    ):
        plan_cells(preset, seeds=[0], ablations=[])


def test_unknown_ablation_is_rejected_with_the_allowed_names() -> None:
    with pytest.raises(UserError, match=r"unknown ablation.*entropy.*allowed are random"):
        plan_cells(TOY_PRESET, seeds=[0], ablations=["entropy"])


def test_summary_is_mean_and_std_over_seeds_and_ratios_divide_means() -> None:
    records = [
        _record("byol", 0, 40.0, 0.10),
        _record("byol", 1, 50.0, 0.10),
        _record("fgsynth_byol", 0, 60.0, 0.12),
        _record("fgsynth_byol", 1, 60.0, 0.14),
    ]
    summary = summarize(records)
    assert summary["byol"]["linear_top1"]["mean"] == 45.0
    assert summary["byol"]["linear_top1"]["std"] == pytest.approx(7.0710678)
    assert summary["fgsynth_byol"]["linear_top1"]["std"] == 0.0
    ratios = overheads(summary, {"fgsynth_byol": "byol"})
    assert ratios["fgsynth_byol/byol"]["step_time_s"] == pytest.approx(1.3)
    table = markdown_table(summary, ratios)
    assert "| byol | 45.00 ± 7.07 |" in table
    assert "| fgsynth_byol/byol | 1.30 | 1.00 |" in table


def test_paired_gaps_match_a_hand_computation_and_skip_unpaired_seeds() -> None:
    records = [
        _record("byol", 0, 40.0, 0.1),
        _record("byol", 1, 50.0, 0.1),
        _record("byol", 2, 45.0, 0.1),
        _record("byol", 3, 10.0, 0.1),  # no fgsynth cell at seed 3: left out
        _record("fgsynth_byol", 0, 42.0, 0.1),
        _record("fgsynth_byol", 1, 54.0, 0.1),
        _record("fgsynth_byol", 2, 54.0, 0.1),
    ]
    paired = paired_gaps(records, {"fgsynth_byol": "byol"})
    gap = paired["fgsynth_byol"]["linear_top1"]
    # gaps 2, 4, 9: mean 5, sd sqrt(13), t(0.975, df=2) = 4.302653
    assert gap["per_seed"] == {0: 2.0, 1: 4.0, 2: 9.0}
    assert gap["mean"] == pytest.approx(5.0) and gap["n"] == 3
    assert gap["ci95"] == pytest.approx(4.302653 * 13**0.5 / 3**0.5, rel=1e-6)
    assert paired["fgsynth_byol"]["base"] == "byol"
    assert paired["fgsynth_byol"]["seeds"] == [0, 1, 2]
    assert set(paired["fgsynth_byol"]) == {"base", "seeds", "linear_top1", "retrieval_map"}
    assert "| fgsynth_byol − byol | +5.00 ± 8.96 | +5.00 ± 8.96 | 0, 1, 2 |" in paired_table(paired)
    single = paired_gaps(records[:1] + records[4:5], {"fgsynth_byol": "byol"})
    assert single["fgsynth_byol"]["linear_top1"]["ci95"] is None
    assert paired_gaps(records[:3], {"fgsynth_byol": "byol"}) == {}


def _diagnosed(cell: str, seed: int, share: float, label: float, null: float | None) -> dict:
    rows = [
        {
            "criterion": "all dims (= random)",
            "nuisance_dominated_share": share,
            "mean_label_score": label,
        },
        {"criterion": "variance", "nuisance_dominated_share": 1.0, "mean_label_score": 0.0},
    ]
    if null is not None:
        rows.append(
            {
                "criterion": "pure-noise dims (null)",
                "nuisance_dominated_share": null,
                "mean_label_score": 0.0,
            }
        )
    return dict(_record(cell, seed, 40.0, 0.1), diagnosis=rows)


def test_the_diagnostic_summary_averages_every_dims_row_and_its_null_over_seeds() -> None:
    records = [
        _diagnosed("byol", 0, 0.25, 0.5, 0.75),
        _diagnosed("byol", 1, 0.75, 0.7, 0.85),
        _diagnosed("fgsynth_simclr", 0, 0.5, 0.4, None),  # a diagnosis without its null
        dict(_record("init", 0, 40.0, 0.1), diagnosis=None),  # no diagnosis: left out
    ]
    summary = diagnostic_summary(records)
    assert set(summary) == {"byol", "fgsynth_simclr"}
    byol = summary["byol"]
    assert byol["nuisance_dominated_share"]["mean"] == pytest.approx(0.5)
    assert byol["nuisance_dominated_share"]["std"] == pytest.approx(0.5 / 2**0.5)
    assert byol["mean_label_score"]["mean"] == pytest.approx(0.6)
    assert byol["null_nuisance_dominated_share"]["mean"] == pytest.approx(0.8)
    assert summary["fgsynth_simclr"]["null_nuisance_dominated_share"]["n"] == 0
    table = diagnostic_table(summary)
    assert "| byol | 0.500 ± 0.354 | 0.600 ± 0.141 | 0.800 ± 0.071 | 2 |" in table
    assert "| fgsynth_simclr | 0.500 (n=1) | 0.400 (n=1) | n/a | 1 |" in table
    assert diagnostic_table({}) == ""


def test_a_single_seed_prints_n_equals_1_not_a_zero_spread() -> None:
    summary = summarize([_record("byol", 0, 40.0, 0.10)])
    table = markdown_table(summary, {})
    assert "| byol | 40.00 (n=1) |" in table
    assert "± 0.00" not in table


@pytest.mark.solo
def test_benchmark_runs_end_to_end_and_skips_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from solo_fgsynth.backbones.config import build_solo_backbone

    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "data"))
    torch.manual_seed(0)
    init_weights = tmp_path / "init.pth"
    backbone_cfg = OmegaConf.create({"backbone": {"name": "resnet18"}, "data": {"dataset": "x"}})
    torch.save(build_solo_backbone(backbone_cfg).state_dict(), init_weights)
    toy = dict(
        TOY_PRESET,
        methods=["init", *TOY_PRESET["methods"]],
        init_config="byol",
        overrides=[*TOY_PRESET["overrides"], f"++backbone.init={init_weights}"],
    )
    preset = tmp_path / "toy.yaml"
    OmegaConf.save(OmegaConf.create(toy), preset)
    out = tmp_path / "results"
    assert main(["--preset", str(preset), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"init", "byol", "fgsynth_byol"}
    runs = {run["cell"]: run for run in results["runs"]}
    for run in runs.values():
        assert set(run["metrics"]) == {
            "linear_top1",
            "knn_top1",
            "retrieval_top1",
            "retrieval_top5",
            "retrieval_map",
        }
        assert all(0.0 <= value <= 100.0 for value in run["metrics"].values())
        assert run["wall_s"] > 0
    for cell in ("byol", "fgsynth_byol"):
        run = runs[cell]
        assert run["steps"] == 2 and run["step_time_s"] > 0 and run["peak_memory_mb"] > 0
    init = runs["init"]
    assert init["steps"] == 0 and init["step_time_s"] is None and init["checkpoint"] is None
    assert results["wall_s"] >= max(run["wall_s"] for run in runs.values())
    assert results["cells_wall_s"] == pytest.approx(sum(run["wall_s"] for run in runs.values()))
    import torch

    assert results["environment"]["torch"] == torch.__version__.split("+")[0]
    assert results["environment"]["solo-fgsynth"] is not None
    gap = results["paired"]["fgsynth_byol"]["linear_top1"]
    assert results["paired"]["fgsynth_byol"]["base"] == "byol" and gap["n"] == 1
    expected = (
        runs["fgsynth_byol"]["metrics"]["linear_top1"] - runs["byol"]["metrics"]["linear_top1"]
    )
    assert gap["mean"] == pytest.approx(expected) and gap["ci95"] is None
    assert "fgsynth_byol/byol" in results["overhead"]
    for name in ("results.md", "accuracy.png", "losses.png", "gradcam.png", "pairs.png"):
        assert (out / name).stat().st_size > 0, name
    assert "fgsynth_byol − byol" in (out / "results.md").read_text()
    assert set(results["diagnostic"]) == {"init", "byol", "fgsynth_byol"}
    from solo_fgsynth.synth import FGSYNTH_VERSION

    assert runs["fgsynth_byol"]["fgsynth"]["version"] == FGSYNTH_VERSION
    assert runs["fgsynth_byol"]["fgsynth"]["knobs"]["base"] == "byol"
    assert runs["byol"]["fgsynth"] is None and init["fgsynth"] is None
    assert "| factor diagnostic, all feature dims |" in (out / "results.md").read_text()
    assert runs["byol"]["pairs"] is None and init["pairs"] is None
    pairs = runs["fgsynth_byol"]["pairs"]
    for name in (
        "pair_feature_ratio",
        "pair_diff_ratio",
        "recon_r2",
        "recon_r2_8px",
        "recon_headroom",
        "pair_selectivity",
        "pair_selectivity_control",
        "reencode_correlation",
    ):
        assert isinstance(pairs[name], float), name
    assert pairs["pair_feature_ratio"] > 0 and pairs["recon_r2_8px"] <= 1.0
    assert set(pairs["eval_mode"]) >= {"recon_r2", "pair_selectivity"}
    # image | D(z) | D(z') | difference | the fresh decoder's D(z), 32 px tiles
    with Image.open(out / "cells" / "fgsynth_byol-seed0" / "pairs.png") as picture:
        assert picture.width == 5 * (32 + 2) + 2

    finished = out / "cells" / "byol-seed0" / "result.json"
    stamp = finished.stat().st_mtime_ns
    assert main(["--preset", str(preset), "--out", str(out)]) == 0
    assert finished.stat().st_mtime_ns == stamp  # reused, not re-run


def test_an_extending_preset_inherits_the_frozen_setting_and_appends_overrides(
    tmp_path: Path,
) -> None:
    (tmp_path / "base.yaml").write_text(
        "methods: [byol]\nseeds: [0]\noverrides: [a=1, b=2]\neval: {knn_k: 3}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base\nseeds: [0, 1, 2]\nextra_overrides: [c=3]\n"
    )
    preset = load_preset(tmp_path / "child.yaml")
    assert preset["seeds"] == [0, 1, 2] and preset["methods"] == ["byol"]
    assert preset["overrides"] == ["a=1", "b=2", "c=3"]
    (tmp_path / "loop.yaml").write_text("extends: loop\n")
    with pytest.raises(UserError, match="extends itself"):
        load_preset(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(UserError, match="extends 'nowhere'"):
        load_preset(tmp_path / "orphan.yaml")


@pytest.mark.parametrize("folder", ["", "v1"])
def test_the_shipped_cpu_and_tuning_presets_keep_the_frozen_quick_setting(folder: str) -> None:
    presets = REPO / "scripts" / "benchmark" / folder
    quick = load_preset(presets / "quick.yaml")
    cpu = load_preset(presets / "cpu.yaml")
    tuning = load_preset(presets / "tuning.yaml")
    assert cpu["overrides"] == quick["overrides"] and len(cpu["seeds"]) >= 3
    assert tuning["overrides"] == [*quick["overrides"], "++data.fgmarks.seed=1"]
    assert "++data.fgmarks.seed=1" not in quick["overrides"]


def test_the_runner_retrains_a_cell_whose_preset_changed_and_says_where_the_old_one_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from solo_fgsynth.benchmark import runner

    trained = []

    def cell_process(argv: list[str], **_: object) -> SimpleNamespace:
        """Stands in for the cell's process: records what it trained with, as a result."""
        spec = json.loads(Path(argv[-1]).read_text())
        trained.append(spec["overrides"])
        record = {
            **_record(spec["cell"], spec["seed"], 50.0, 0.1),
            "method": spec["method"],
            "overrides": spec["overrides"],
            "losses": [1.0],
            "base_losses": [],
            "curve": [],
        }
        (Path(spec["cell_dir"]) / "result.json").write_text(json.dumps(record))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(runner, "subprocess", SimpleNamespace(run=cell_process, STDOUT=-2))
    preset = {**TOY_PRESET, "methods": ["byol"], "overrides": ["max_epochs=1"]}
    preset_path, out = tmp_path / "toy.yaml", tmp_path / "out"
    for overrides in (["max_epochs=1"], ["max_epochs=1"], ["max_epochs=2"]):
        preset_path.write_text(OmegaConf.to_yaml({**preset, "overrides": overrides}))
        results = runner.run_benchmark(preset_path, out, None, [], False)
    assert trained == [["max_epochs=1"], ["max_epochs=2"]]  # the second run reused the cell
    assert results["runs"][0]["overrides"] == ["max_epochs=2"]
    kept = sorted(path.name for path in (out / "cells").iterdir())
    assert len(kept) == 2 and kept[0] == "byol-seed0" and kept[1].startswith("byol-seed0.replaced-")
    assert f"byol-seed0: retrained (its overrides changed); {out / 'cells' / kept[1]}" in (
        capsys.readouterr().err
    )


# the SGD rate each calibration round trained each method at (docs/benchmark.md, section 3)
CALIBRATION_RATES = {
    "a": dict.fromkeys(["init", "supcon", "byol", "simclr"], "0.01"),
    "b": dict.fromkeys(["supcon", "byol", "simclr"], "0.05"),
    "d": {"supcon": "0.2"},
    "e": dict.fromkeys(["supcon", "byol", "simclr"], "0.2"),
    "f": dict.fromkeys(["supcon", "byol", "simclr"], "0.1"),
    "g": dict.fromkeys(["supcon", "byol", "simclr"], "0.15"),
    "i": {"supcon": "0.3"},
    "i2": {"supcon": "0.4"},
    "j": {"supcon": "0.4"},
}


def test_every_shipped_calibration_round_is_checked_below() -> None:
    rounds = (REPO / "scripts" / "benchmark" / "calibration").glob("*.yaml")
    assert sorted(path.stem for path in rounds) == sorted(CALIBRATION_RATES)


@pytest.mark.parametrize("name", sorted(CALIBRATION_RATES))
def test_a_calibration_round_replans_its_methods_at_the_rates_it_ran_and_no_fgsynth(
    name: str,
) -> None:
    preset = load_preset(REPO / "scripts" / "benchmark" / "calibration" / f"{name}.yaml")
    cells = plan_cells(preset, list(preset["seeds"]), [])
    quick = load_preset(REPO / "scripts" / "benchmark" / "quick.yaml")
    rates = {}
    for cell in cells:
        assert cell["overrides"][: len(quick["overrides"])] == quick["overrides"]
        rates[cell["method"]] = next(
            item.split("=", 1)[1]
            for item in reversed(cell["overrides"])
            if item.lstrip("+").startswith("optimizer.lr=")
        )
    assert rates == CALIBRATION_RATES[name]


def test_a_recovered_cell_prints_its_unknown_cost_as_n_a_and_gets_no_ratio() -> None:
    recovered = {**_record("byol", 0, 40.0, 0.1), "step_time_s": None, "peak_memory_mb": None}
    summary = summarize([recovered, _record("fgsynth_byol", 0, 45.0, 0.12)])
    assert overheads(summary, {"fgsynth_byol": "byol"}) == {}
    table = markdown_table(summary, {})
    assert (
        "| byol | 40.00 (n=1) | 40.00 (n=1) | 40.00 (n=1) | 40.00 (n=1) | 40.00 (n=1) | n/a | n/a |"
        in table
    )


def test_learning_curves_get_a_colour_per_cell_and_a_line_style_per_seed() -> None:
    from solo_fgsynth.benchmark.report import curve_styles

    records = [{"cell": c, "seed": s} for c in ("byol", "fgsynth_byol") for s in (2, 0, 1)]
    styles = curve_styles(records)
    assert {styles[("byol", s)][0] for s in (0, 1, 2)} == {0}
    assert {styles[("fgsynth_byol", s)][0] for s in (0, 1, 2)} == {1}
    assert [styles[("byol", s)][1:] for s in (0, 1, 2)] == [("-", "o"), ("--", "s"), (":", "^")]
    assert all(styles[("fgsynth_byol", s)][1:] == styles[("byol", s)][1:] for s in (0, 1, 2))

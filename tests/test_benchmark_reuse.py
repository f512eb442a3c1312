"""Which earlier attempts of a benchmark cell are reused, rerun or set aside, and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from solo_fgsynth.benchmark import reuse
from solo_fgsynth.benchmark.reuse import (
    RESULT_FILE,
    SPEC_FILE,
    TRAINING_RECORD,
    cell_checkpoint,
    finished_training,
    outdated_result,
    prepare_cell,
    trained_fgsynth,
)
from solo_fgsynth.synth import FGSYNTH_VERSION


def test_a_finished_training_is_found_so_a_failed_evaluation_never_retrains(
    tmp_path: Path,
) -> None:
    assert finished_training(tmp_path, max_epochs=3) is None
    run = tmp_path / "checkpoints" / "byol" / "offline-ab12"
    run.mkdir(parents=True)
    torch.save({"global_step": 60, "state_dict": {}}, run / "byol-seed0-offline-ab12-ep=1.ckpt")
    assert finished_training(tmp_path, max_epochs=3) is None  # not the last epoch
    final = run / "byol-seed0-offline-ab12-ep=2.ckpt"
    torch.save({"global_step": 66, "state_dict": {}}, final)
    (tmp_path / "log.txt").write_text(
        "Epoch 0: 50%\rstep 22: val linear top-1 12.50\nstep 44: val linear top-1 20.00\nx\n"
    )
    recovered = finished_training(tmp_path, max_epochs=3)
    assert recovered is not None and recovered["recovered"] is True
    assert recovered["checkpoint"] == str(final) and recovered["steps"] == 66
    assert recovered["step_time_s"] is None and recovered["curve"] == [[22, 12.5], [44, 20.0]]
    record = {"checkpoint": str(final), "steps": 66, "step_time_s": 0.5, "curve": []}
    (tmp_path / TRAINING_RECORD).write_text(json.dumps(record))
    assert finished_training(tmp_path, max_epochs=3) == record


def test_a_training_by_another_fgsynth_version_is_not_reused(tmp_path: Path) -> None:
    run = tmp_path / "checkpoints" / "fgsynth" / "offline-ab12"
    run.mkdir(parents=True)
    final = run / "fgsynth_byol-seed0-offline-ab12-ep=2.ckpt"
    record = {"checkpoint": str(final), "steps": 66, "step_time_s": 0.5, "curve": []}
    (tmp_path / TRAINING_RECORD).write_text(json.dumps(record))
    result = {"checkpoint": str(final), "checkpoint_choice": "last"}
    knobs = {"base": "byol", "nu": 1.0}
    for version, reused in ((FGSYNTH_VERSION, True), (FGSYNTH_VERSION - 1, False)):
        saved = {"version": version, "knobs": knobs, "decoder_optimizer": {}}
        torch.save({"global_step": 66, "state_dict": {}, "fgsynth": saved}, final)
        assert (finished_training(tmp_path, max_epochs=3) == record) is reused, version
        assert outdated_result(result, tmp_path) is not reused, version
        assert trained_fgsynth(final) == {"version": version, "knobs": knobs}
    torch.save({"global_step": 66, "state_dict": {}}, final)  # a stock method's checkpoint
    assert finished_training(tmp_path, max_epochs=3) == record
    assert trained_fgsynth(final) is None and not outdated_result(result, tmp_path)
    assert not outdated_result({"checkpoint": None}, tmp_path)
    final.unlink()  # a result that recorded its version decides without reading the checkpoint
    for version, reused in ((FGSYNTH_VERSION, True), (FGSYNTH_VERSION - 1, False)):
        recorded = {**result, "fgsynth": {"version": version, "knobs": knobs}}
        assert outdated_result(recorded, tmp_path) is not reused, version
    assert not outdated_result({**result, "fgsynth": None}, tmp_path)


def test_a_moved_cell_folder_still_finds_its_training_by_the_recorded_path(
    tmp_path: Path,
) -> None:
    old = tmp_path / "checkpoints" / "old-results" / "cells" / "byol-seed0"
    recorded = old / "checkpoints" / "byol" / "offline-ab12" / "byol-seed0-ep=2.ckpt"
    moved = tmp_path / "byol-seed0.replaced-20261206-120000"
    final = moved / "checkpoints" / "byol" / "offline-ab12" / "byol-seed0-ep=2.ckpt"
    assert cell_checkpoint(moved, str(recorded)) == final  # the last "checkpoints" counts
    assert cell_checkpoint(moved, "/elsewhere/x.ckpt") == Path("/elsewhere/x.ckpt")
    final.parent.mkdir(parents=True)
    torch.save({"global_step": 66, "state_dict": {}}, final)
    (moved / TRAINING_RECORD).write_text(json.dumps({"checkpoint": str(recorded), "steps": 66}))
    assert finished_training(moved, max_epochs=3) == {"checkpoint": str(final), "steps": 66}


def _attempt(cell_dir: Path, result: bool = True, **spec_changes: object) -> dict[str, object]:
    """An earlier attempt of a stock cell (spec, training record, result if finished); its spec."""
    cell_dir.mkdir(parents=True)
    spec = {
        "cell": "byol",
        "seed": 0,
        "config_name": "byol",
        "config_path": "/one/snapshot/scripts/pretrain/fgmarks",
        "overrides": ["max_epochs=14", "optimizer.lr=0.01"],
        "eval": {"batch_size": 256, "knn_k": 20, "curve_every": 100},
        "cell_dir": str(cell_dir),
        "checkpoint_choice": "last",
        "started_at": 1.0,
        **spec_changes,
    }
    (cell_dir / SPEC_FILE).write_text(json.dumps(spec))
    (cell_dir / TRAINING_RECORD).write_text(json.dumps({"checkpoint": "x.ckpt"}))
    if result:
        (cell_dir / RESULT_FILE).write_text(json.dumps({"checkpoint_choice": "last"}))
    return spec


def _kept(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cells").glob("byol-seed0.replaced-*"))


def test_a_finished_cell_of_the_same_setting_from_another_snapshot_is_reused(
    tmp_path: Path,
) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir)
    today = {**spec, "config_path": "/another/snapshot", "started_at": 2.0}
    assert prepare_cell(cell_dir, today, force=False) == (False, None)
    assert (cell_dir / RESULT_FILE).is_file() and not _kept(tmp_path)


def test_a_cell_from_before_specs_named_a_checkpoint_choice_is_reused_as_last(
    tmp_path: Path,
) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir)
    written_then = {key: value for key, value in spec.items() if key != "checkpoint_choice"}
    (cell_dir / SPEC_FILE).write_text(json.dumps(written_then))
    assert prepare_cell(cell_dir, spec, force=False) == (False, None)
    assert prepare_cell(cell_dir, {**spec, "checkpoint_choice": "best"}, force=False)[0]
    assert len(_kept(tmp_path)) == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"overrides": ["max_epochs=14", "optimizer.lr=0.4"]}, "overrides"),
        ({"config_name": "simclr"}, "config_name"),
        ({"checkpoint_choice": "best"}, "checkpoint_choice"),
        ({"eval": {"batch_size": 256, "knn_k": 20, "curve_every": 50}}, "curve_every"),
    ],
)
def test_a_cell_trained_with_another_setting_is_set_aside_whole_and_retrained(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir)
    run, note = prepare_cell(cell_dir, {**spec, **change}, force=False)
    kept = _kept(tmp_path)
    assert run and not cell_dir.exists() and len(kept) == 1
    assert (
        note == f"byol-seed0: retrained (its {named} changed); {kept[0]} keeps the earlier attempt"
    )
    assert {path.name for path in kept[0].iterdir()} == {SPEC_FILE, TRAINING_RECORD, RESULT_FILE}


def test_a_cell_trained_by_another_fgsynth_version_is_set_aside_finished_or_not(
    tmp_path: Path,
) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    final = cell_dir / "checkpoints" / "fgsynth" / "offline-ab12" / "fgsynth_byol-ep=2.ckpt"
    for finished in (True, False):
        spec = _attempt(cell_dir, result=finished)
        final.parent.mkdir(parents=True)
        saved = {"version": FGSYNTH_VERSION - 1, "knobs": {}}
        torch.save({"global_step": 66, "state_dict": {}, "fgsynth": saved}, final)
        (cell_dir / TRAINING_RECORD).write_text(json.dumps({"checkpoint": str(final)}))
        if finished:  # a result names the version it read, so the checkpoint is not read
            result = {"checkpoint": str(final), "fgsynth": saved}
            (cell_dir / RESULT_FILE).write_text(json.dumps(result))
            final.unlink()
        run, note = prepare_cell(cell_dir, spec, force=False)
        assert run and note is not None and "(trained by another fgsynth version)" in note
        assert not cell_dir.exists()
    assert len(_kept(tmp_path)) == 2


def test_force_sets_every_earlier_attempt_aside_under_distinct_names_in_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reuse.time, "strftime", lambda *_: "20261206-120000")
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir)
    run, note = prepare_cell(cell_dir, spec, force=True)
    first = tmp_path / "cells" / "byol-seed0.replaced-20261206-120000"
    assert run and note == f"byol-seed0: retrained (--force); {first} keeps the earlier attempt"
    _attempt(cell_dir)
    assert prepare_cell(cell_dir, spec, force=True)[0]
    assert _kept(tmp_path) == [first, first.with_name(f"{first.name}-1")]


def test_a_cell_evaluated_with_other_settings_drops_its_result_but_keeps_its_training(
    tmp_path: Path,
) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir)
    other_eval = {**spec, "eval": {"batch_size": 256, "knn_k": 10, "curve_every": 100}}
    assert prepare_cell(cell_dir, other_eval, force=False) == (True, None)
    assert (cell_dir / TRAINING_RECORD).is_file() and not (cell_dir / RESULT_FILE).exists()
    assert not _kept(tmp_path)


def test_an_interrupted_cell_of_the_same_setting_runs_again_in_place(tmp_path: Path) -> None:
    cell_dir = tmp_path / "cells" / "byol-seed0"
    spec = _attempt(cell_dir, result=False)
    assert prepare_cell(cell_dir, spec, force=False) == (True, None)
    assert (cell_dir / TRAINING_RECORD).is_file() and not _kept(tmp_path)
    assert prepare_cell(tmp_path / "cells" / "never-ran", spec, force=True) == (True, None)

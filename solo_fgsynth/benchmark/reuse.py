"""What an earlier attempt of a benchmark cell may lend to this run, and what it may not.

A cell's numbers depend on its code's fgsynth version, its training setting (method config
name, overrides, checkpoint choice, learning-curve cadence, seed) and its evaluation settings.
A finished result is reused only when all of them are today's; a finished training (an attempt
that died in evaluation) only when its setting and version are; an attempt trained otherwise is
set aside whole, kept beside the cell, and the cell runs again.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from solo_fgsynth.checkpoints import read_checkpoint
from solo_fgsynth.synth.config import FGSYNTH_VERSION

TRAINING_RECORD = "training.json"
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"
CHECKPOINT_FOLDER = "checkpoints"  # a cell's checkpoint.dir, inside its folder
_CURVE_LINE = re.compile(r"step (\d+): val linear top-1 ([0-9.]+)")  # also after a progress bar


def trained_fgsynth(checkpoint: str | Path) -> dict[str, Any] | None:
    """The fgsynth version and effective knobs a checkpoint was trained with (None: not fgsynth)."""
    saved = read_checkpoint(checkpoint).get("fgsynth")
    if saved is None:
        return None
    return {"version": saved.get("version", 1), "knobs": saved.get("knobs", {})}


def outdated_fgsynth(checkpoint: str | Path) -> bool:
    """Whether a checkpoint was trained by another fgsynth version than this one's.

    Such a cell is retrained, never reported under today's name: the knobs meant something else.
    """
    return another_version(trained_fgsynth(checkpoint))


def another_version(trained: dict[str, Any] | None) -> bool:
    """Whether a ``trained_fgsynth`` record names another fgsynth version than this one's."""
    return trained is not None and trained["version"] != FGSYNTH_VERSION


def finished_training(cell_dir: Path, max_epochs: int) -> dict[str, Any] | None:
    """The record of a training that an earlier attempt of this cell finished, if any.

    A cell writes ``training.json`` as soon as training ends, so a failure in evaluation never
    costs the training. Without it, a checkpoint of the last epoch still counts: its curve is
    read from the cell's log, and its step time and memory are unknown (``recovered``). A
    training by another fgsynth version does not count.
    """
    path = cell_dir / TRAINING_RECORD
    if path.is_file():
        record = json.loads(path.read_text())
        checkpoint = cell_checkpoint(cell_dir, record["checkpoint"])
        record["checkpoint"] = str(checkpoint)
        return record if checkpoint.is_file() and not outdated_fgsynth(checkpoint) else None
    finals = sorted(cell_dir.glob(f"{CHECKPOINT_FOLDER}/*/*/*-ep={max_epochs - 1}.ckpt"))
    if not finals or outdated_fgsynth(finals[-1]):
        return None
    checkpoint = read_checkpoint(finals[-1])
    log = cell_dir / "log.txt"
    curve = _CURVE_LINE.findall(log.read_text(errors="replace")) if log.is_file() else []
    return {
        "checkpoint": str(finals[-1]),
        "steps": int(checkpoint["global_step"]),
        "step_time_s": None,
        "peak_memory_mb": None,
        "losses": [],
        "base_losses": [],
        "curve": [[int(step), float(top1)] for step, top1 in curve],
        "recovered": True,
    }


def outdated_result(result: dict[str, Any], cell_dir: Path) -> bool:
    """Whether a cell's record (its result, or its training record) names a training by
    another fgsynth version."""
    if "fgsynth" in result:  # the version the cell read from its checkpoint when it ran
        return another_version(result["fgsynth"])
    trained = result.get("checkpoint")
    if trained is None:
        return False
    checkpoint = cell_checkpoint(cell_dir, trained)
    return checkpoint.is_file() and outdated_fgsynth(checkpoint)


def cell_checkpoint(cell_dir: Path, recorded: str) -> Path:
    """A checkpoint a cell's record names, looked up in the cell's folder as it is now, so a
    folder set aside or moved keeps its records usable."""
    parts = Path(recorded).parts
    if CHECKPOINT_FOLDER not in parts:
        return Path(recorded)
    last = len(parts) - 1 - parts[::-1].index(CHECKPOINT_FOLDER)
    return cell_dir.joinpath(*parts[last:])


def training_setting(spec: dict[str, Any]) -> dict[str, Any]:
    """What a cell's training depends on besides its code and its folder's name (method,
    ablation, seed); a spec written before a key existed gets the value it meant.

    The snapshot's ``config_path`` is left out (one setting runs from many snapshots); edits
    to the method config file itself are not seen, only which config a cell names.
    """
    return {
        "config_name": spec.get("config_name"),
        "overrides": spec.get("overrides"),
        "checkpoint_choice": spec.get("checkpoint_choice", "last"),
        # the learning curve probes during training, from its random state
        "curve_every": int(spec.get("eval", {}).get("curve_every", 0)),
    }


def _evaluation_setting(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.get("eval", {}).items() if key != "curve_every"}


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_cell(cell_dir: Path, spec: dict[str, Any], force: bool) -> tuple[bool, str | None]:
    """Whether a cell runs (False: its finished result stands), and a line naming the earlier
    attempt set aside for it, if one was.

    An attempt trained otherwise (``training_setting``, another fgsynth version) or any attempt
    under ``force`` is moved aside whole, so nothing of its training is picked up. A finished
    cell evaluated with other ``eval`` settings loses its result (never reused if the new
    evaluation fails) and keeps its training; an interrupted one keeps what it finished.
    """
    earlier, result = _read(cell_dir / SPEC_FILE), _read(cell_dir / RESULT_FILE)
    training = _read(cell_dir / TRAINING_RECORD)
    setting = training_setting(spec)
    before = {} if earlier is None else training_setting(earlier)
    if earlier is None and result is not None:  # a result from before specs were kept
        before = {"checkpoint_choice": result.get("checkpoint_choice", "last")}
    changed = [key for key, value in before.items() if value != setting[key]]
    reasons = ["--force"] if force else []
    reasons += [f"its {', '.join(changed)} changed"] if changed else []
    trained = result if result is not None else training  # a result names its version
    outdated = trained is not None and outdated_result(trained, cell_dir)
    reasons += ["trained by another fgsynth version"] if outdated else []
    if reasons and cell_dir.exists():
        kept = set_aside(cell_dir)
        why = "; ".join(reasons)
        return True, f"{cell_dir.name}: retrained ({why}); {kept} keeps the earlier attempt"
    if result is None:
        return True, None
    if earlier is not None and _evaluation_setting(earlier) != _evaluation_setting(spec):
        (cell_dir / RESULT_FILE).unlink()
        return True, None
    return False, None


def set_aside(cell_dir: Path) -> Path:
    """Move an earlier attempt's folder out of the cell's way, kept beside it, and return where.

    The cell then starts clean (nothing of the old training can be picked up), and nothing of
    the earlier attempt is lost if the new one fails.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = cell_dir.with_name(f"{cell_dir.name}.replaced-{stamp}")
    suffix = 1
    while target.exists():
        target = cell_dir.with_name(f"{cell_dir.name}.replaced-{stamp}-{suffix}")
        suffix += 1
    cell_dir.rename(target)
    return target

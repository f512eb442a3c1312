"""What an earlier attempt of a benchmark cell may lend to this run, and what it may not.

A cell's numbers depend on its code's fgsynth version, its training setting (method config,
overrides, checkpoint choice, seed) and its evaluation settings. A finished result is reused
only when all of them are today's; a finished training (an attempt that died in evaluation)
only when its setting and version are; anything else is set aside and the cell runs again.
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
_CURVE_LINE = re.compile(r"step (\d+): val linear top-1 ([0-9.]+)")  # also after a progress bar
# what a cell trains with; its folder name carries the method, ablation and seed
TRAINING_KEYS = ("config_name", "overrides", "checkpoint_choice")


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
        checkpoint = Path(record["checkpoint"])
        return record if checkpoint.is_file() and not outdated_fgsynth(checkpoint) else None
    finals = sorted(cell_dir.glob(f"checkpoints/*/*/*-ep={max_epochs - 1}.ckpt"))
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


def stale_result(result: dict[str, Any], checkpoint: str) -> bool:
    """Whether a finished cell must run again: it evaluated another checkpoint choice, or its
    training is another fgsynth version's."""
    if result.get("checkpoint_choice", "last") != checkpoint:
        return True
    if "fgsynth" in result:  # the version the cell read from its checkpoint when it ran
        return another_version(result["fgsynth"])
    trained = result.get("checkpoint")
    return trained is not None and Path(trained).is_file() and outdated_fgsynth(trained)


def must_run(cell_dir: Path, spec: dict[str, Any], force: bool) -> tuple[bool, str | None]:
    """Whether a cell runs (False: its finished result stands), and a line saying what earlier
    attempt was set aside for it, if one was.

    An attempt trained with another setting (``TRAINING_KEYS``), or any attempt under
    ``force``, is set aside so nothing of its training is picked up; a finished result is rerun
    (its training reused) when it evaluated otherwise or is another fgsynth version's.
    """
    spec_path, result_path = cell_dir / SPEC_FILE, cell_dir / RESULT_FILE
    earlier = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    changed = [key for key in TRAINING_KEYS if earlier and earlier.get(key) != spec.get(key)]
    if cell_dir.exists() and (force or changed):
        why = "--force" if force else f"its {', '.join(changed)} changed"
        kept = set_aside(cell_dir)
        return True, f"{cell_dir.name}: retrained ({why}); {kept} keeps the earlier attempt"
    if not result_path.is_file():
        return True, None
    result = json.loads(result_path.read_text())
    evaluated_otherwise = earlier is not None and earlier.get("eval") != spec.get("eval")
    return evaluated_otherwise or stale_result(result, spec["checkpoint_choice"]), None


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

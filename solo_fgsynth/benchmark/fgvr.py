"""The fgvr preset's extras: one dataset of the preset, and the published rows quoted beside ours.

The quoted rows are other papers' numbers as their authors report them, with the weights they
started from; they are printed as quoted, never as reproduced here.
"""

from __future__ import annotations

from typing import Any

from solo_fgsynth.errors import UserError
from solo_fgsynth.validation import check_choice

QUOTED_METRICS = ("linear_top1", "retrieval_top1", "retrieval_top5", "retrieval_map")


def for_dataset(preset: dict[str, Any], dataset: str | None, data_root: str | None) -> dict:
    """``preset`` for one dataset: its config path filled in and ``data.root`` set.

    Presets whose ``config_path`` has no ``{dataset}`` take neither option. The quoted rows
    kept are the chosen dataset's.
    """
    path = str(preset["config_path"])
    if "{dataset}" not in path:
        if dataset is not None or data_root is not None:
            raise UserError(
                "--dataset and --data-root apply to presets with a {dataset} config path (fgvr)"
            )
        return preset
    allowed = list(preset.get("datasets", []))
    check_choice("--dataset", dataset, allowed, error=UserError)
    if not data_root:
        raise UserError(f"--data-root is required: the {dataset} dataset's root folder")
    return {
        **preset,
        "config_path": path.format(dataset=dataset),
        "overrides": [*preset.get("overrides", []), f"data.root={data_root}"],
        "dataset": dataset,
        "quoted": list((preset.get("quoted") or {}).get(dataset, [])),
    }


def quoted_table(rows: list[dict[str, Any]]) -> str:
    """Published rows as a markdown table headed as quoted, or nothing when there are none."""
    if not rows:
        return ""
    header = ["method (quoted, not reproduced)", "starting weights", "source", *QUOTED_METRICS]
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [str(row.get(metric, "–")) for metric in QUOTED_METRICS]
        lines.append(
            f"| {row['method']} | {row['init']} | {row['source']} | {' | '.join(values)} |"
        )
    return "\n".join(lines) + "\n"

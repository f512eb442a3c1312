"""Model cards: Markdown rendered from a manifest entry, so card and manifest never disagree."""

from __future__ import annotations

import json

from solo_fgsynth.zoo.manifest import KNOWN_METRICS, ZooEntry

METRIC_LABELS = {
    "linear_top1": "linear top-1 (%)",
    "linear_top5": "linear top-5 (%)",
    "knn_top1": "kNN top-1 (%)",
    "knn_top5": "kNN top-5 (%)",
    "retrieval_top1": "retrieval top-1 (%)",
    "retrieval_top5": "retrieval top-5 (%)",
    "retrieval_map": "retrieval mAP (%)",
}


def format_size(size_bytes: int) -> str:
    """A byte count for people: ``44.7 MB``."""
    if size_bytes < 1000:
        return f"{size_bytes} B"
    size = size_bytes / 1000
    for unit in ("kB", "MB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def method_label(entry: ZooEntry) -> str:
    """``fgsynth(byol)`` for a wrapping method, the bare method name otherwise."""
    return f"{entry.method}({entry.base_method})" if entry.base_method else entry.method


def render_card(entry: ZooEntry) -> str:
    """The Markdown model card of ``entry``: identity, metrics, files, usage, verbatim recipe."""
    backbone = entry.backbone
    stem = "standard stem"
    if backbone.cifar_stem:
        stem = "solo-learn small-crop stem (3x3 conv1, no max-pool)"
    lines = [
        f"# {entry.name}",
        "",
        "| | |",
        "|---|---|",
        f"| method | {method_label(entry)} |",
        f"| backbone | {backbone.library} `{backbone.arch}`, {stem} |",
        f"| dataset | {entry.dataset} |",
        f"| crop size | {entry.crop_size} px |",
        f"| normalisation | mean {_triple(entry.mean)}, std {_triple(entry.std)} |",
        f"| head keys | {', '.join(entry.head) or 'none (backbone only)'} |",
        f"| license | {entry.license} |",
        f"| date | {entry.date} |",
        "",
        "## Metrics",
        "",
    ]
    if entry.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [
            f"| {METRIC_LABELS[key]} | {entry.metrics[key]:.2f} |"
            for key in KNOWN_METRICS
            if key in entry.metrics
        ]
    else:
        lines.append("No evaluation results were recorded for these weights.")
    lines += [
        "",
        "## Weights",
        "",
        f"- file: backbone-only safetensors, {format_size(entry.size_bytes)} "
        f"({entry.size_bytes} bytes)",
        f"- sha256: `{entry.sha256}`",
        "- sources, tried in order:",
        *[f"  - {url}" for url in entry.urls],
        "",
        "## Usage",
        "",
        "```python",
        "from solo_fgsynth import zoo",
        "",
        f'backbone = zoo.load("{entry.name}")  # downloads, verifies sha256, loads',
        "```",
        "",
        f"or `solo-fgsynth zoo download {entry.name}` to fetch the file into the cache.",
    ]
    if entry.notes:
        lines += ["", "## Notes", "", entry.notes.strip()]
    lines += [
        "",
        "## Training recipe",
        "",
        "The solo-learn configuration that produced these weights (`args.json`, verbatim):",
        "",
        "```json",
        json.dumps(entry.recipe, indent=2, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def _triple(values: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{value:g}" for value in values) + ")"

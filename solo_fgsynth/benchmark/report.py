"""Aggregating cell results: results.json, a markdown table, plots and Grad-CAM panels."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

METRICS = ("linear_top1", "knn_top1", "retrieval_top1", "retrieval_top5", "retrieval_map")
PAIRED_METRICS = ("linear_top1", "retrieval_map")


def _mean_std(values: list[float | None]) -> dict[str, float | None]:
    """Mean, std and count over the known values (a recovered cell has no step time)."""
    known = [value for value in values if value is not None]
    if not known:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(known) if len(known) > 1 else 0.0
    return {"mean": statistics.fmean(known), "std": std, "n": len(known)}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every metric, step time and peak memory, per cell."""
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_cell[record["cell"]].append(record)
    summary = {}
    for cell, runs in by_cell.items():
        entry = {name: _mean_std([r["metrics"][name] for r in runs]) for name in METRICS}
        entry["step_time_s"] = _mean_std([r["step_time_s"] for r in runs])
        entry["peak_memory_mb"] = _mean_std([r["peak_memory_mb"] for r in runs])
        summary[cell] = entry
    return summary


def overheads(summary: dict[str, Any], pairs: dict[str, str]) -> dict[str, dict[str, float]]:
    """Step-time and peak-memory ratios of each fgsynth cell to its stock base."""
    ratios = {}
    for cell, stock in pairs.items():
        measured = all(
            summary.get(name, {}).get(key, {}).get("mean") is not None
            for name in (cell, stock)
            for key in ("step_time_s", "peak_memory_mb")
        )
        if measured:
            ratios[f"{cell}/{stock}"] = {
                key: summary[cell][key]["mean"] / summary[stock][key]["mean"]
                for key in ("step_time_s", "peak_memory_mb")
            }
    return ratios


def paired_gaps(records: list[dict[str, Any]], pairs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Cell minus its base, paired by training seed: mean, 95 % interval half-width, per seed.

    ``pairs`` maps a cell to its base (``fgsynth_byol: byol``). For each metric of
    ``PAIRED_METRICS`` over the seeds both cells ran: the per-seed differences, their mean,
    and the half-width of the two-sided 95 % Student-t interval of that mean
    (``t_{0.975, n-1} * sd / sqrt(n)``; None below two seeds).
    """
    from scipy.stats import t as student_t

    by_key = {(r["cell"], r["seed"]): r for r in records}
    paired = {}
    for cell, base in pairs.items():
        seeds = sorted(s for c, s in by_key if c == cell and (base, s) in by_key)
        if not seeds:
            continue
        entry: dict[str, Any] = {"base": base, "seeds": seeds}
        for metric in PAIRED_METRICS:
            gaps = [
                by_key[(cell, s)]["metrics"][metric] - by_key[(base, s)]["metrics"][metric]
                for s in seeds
            ]
            n = len(gaps)
            half_width = None
            if n > 1:
                half_width = float(student_t.ppf(0.975, n - 1)) * statistics.stdev(gaps) / n**0.5
            entry[metric] = {
                "mean": statistics.fmean(gaps),
                "ci95": half_width,
                "n": n,
                "per_seed": dict(zip(seeds, gaps, strict=True)),
            }
        paired[cell] = entry
    return paired


def paired_table(paired: dict[str, dict[str, Any]]) -> str:
    """The paired gaps as markdown: mean ± 95 % half-width (n), per metric."""
    if not paired:
        return ""
    header = ["paired gap", *(f"{m} (mean ± 95 % CI)" for m in PAIRED_METRICS), "seeds"]
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell, entry in paired.items():
        cells = []
        for metric in PAIRED_METRICS:
            gap = entry[metric]
            spread = "n/a" if gap["ci95"] is None else f"{gap['ci95']:.2f}"
            cells.append(f"{gap['mean']:+.2f} ± {spread}")
        seeds = ", ".join(str(s) for s in entry["seeds"])
        lines.append(f"| {cell} − {entry['base']} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"


def diagnostic_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cell, mean and std over seeds of the factor diagnostic read against its null.

    ``nuisance_dominated_share`` and ``mean_label_score`` of every feature dim, and the share
    the pure-noise null gives on the same images; cells without a diagnosis are left out.
    """
    from solo_fgsynth.diagnose.analysis import ALL_ROW, NULL_ROW

    by_cell: dict[str, list[dict[str, dict[str, Any]]]] = defaultdict(list)
    for record in records:
        if record.get("diagnosis"):
            by_cell[record["cell"]].append({row["criterion"]: row for row in record["diagnosis"]})
    return {
        cell: {
            "nuisance_dominated_share": _mean_std(
                [rows[ALL_ROW]["nuisance_dominated_share"] for rows in runs]
            ),
            "mean_label_score": _mean_std([rows[ALL_ROW]["mean_label_score"] for rows in runs]),
            "null_nuisance_dominated_share": _mean_std(
                [
                    rows[NULL_ROW]["nuisance_dominated_share"] if NULL_ROW in rows else None
                    for rows in runs
                ]
            ),
        }
        for cell, runs in by_cell.items()
    }


def diagnostic_table(diagnostic: dict[str, dict[str, Any]]) -> str:
    """The diagnostic summary as markdown: every dim's shares beside the pure-noise null's."""
    if not diagnostic:
        return ""
    lines = [
        "",
        "| factor diagnostic, all feature dims | nuisance-dominated share | mean label R² "
        "| pure-noise null's share | seeds |",
        "|---|---|---|---|---|",
    ]
    for cell, entry in diagnostic.items():
        null = entry["null_nuisance_dominated_share"]
        lines.append(
            f"| {cell} | {format_mean_std(entry['nuisance_dominated_share'], 3)} "
            f"| {format_mean_std(entry['mean_label_score'], 3)} "
            f"| {'n/a' if null['mean'] is None else format_mean_std(null, 3)} "
            f"| {entry['mean_label_score']['n']} |"
        )
    return "\n".join(lines) + "\n"


def format_mean_std(entry: dict[str, float], digits: int = 2) -> str:
    """``mean ± std`` over seeds; a single seed has no spread, so it prints ``mean (n=1)``."""
    if entry["n"] < 2:
        return f"{entry['mean']:.{digits}f} (n=1)"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any], ratios: dict[str, dict[str, float]]) -> str:
    """The results as a markdown table (mean ± std over seeds), then the overhead ratios."""
    header = ["method", *METRICS, "step time (s)", "peak mem (MB)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell, entry in summary.items():
        cells = [format_mean_std(entry[m]) for m in METRICS]
        lines.append(
            f"| {cell} | "
            + " | ".join(cells)
            + f" | {_number(entry['step_time_s']['mean'], 3)}"
            + f" | {_number(entry['peak_memory_mb']['mean'], 0)}"
            + f" | {entry['linear_top1']['n']} |"
        )
    if ratios:
        lines += ["", "| overhead | step time ratio | peak memory ratio |", "|---|---|---|"]
        for name, ratio in ratios.items():
            lines.append(f"| {name} | {ratio['step_time_s']:.2f} | {ratio['peak_memory_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def plot_accuracy(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars of each metric per method, with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(summary)
    width = 0.8 / max(len(cells), 1)
    figure, axis = plt.subplots(figsize=(2 + 1.6 * len(METRICS), 4))
    for offset, cell in enumerate(cells):
        positions = np.arange(len(METRICS)) + offset * width
        means = [summary[cell][m]["mean"] for m in METRICS]
        stds = [summary[cell][m]["std"] for m in METRICS]
        axis.bar(positions, means, width, yerr=stds, capsize=3, label=cell)
    axis.set_xticks(np.arange(len(METRICS)) + width * (len(cells) - 1) / 2, METRICS)
    axis.set_ylabel("percent")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_losses(records: list[dict[str, Any]], path: Path) -> None:
    """Per-step base SSL loss of every run (the stock method's own loss term)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for record in records:
        curve = record["base_losses"] or record["losses"]
        if not curve:
            continue
        axis.plot(curve, label=f"{record['cell']} s{record['seed']}", linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("base SSL loss")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


CURVE_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def curve_styles(records: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, str, str]]:
    """``(cell, seed) -> (colour index, line style, marker)``: a colour a cell, a style a seed."""
    cells = list(dict.fromkeys(record["cell"] for record in records))
    seeds = sorted({record["seed"] for record in records})
    return {
        (record["cell"], record["seed"]): (
            cells.index(record["cell"]),
            *CURVE_STYLES[seeds.index(record["seed"]) % len(CURVE_STYLES)],
        )
        for record in records
    }


def plot_curves(records: list[dict[str, Any]], path: Path) -> bool:
    """Validation linear-probe top-1 against training steps, one line per run.

    One colour per cell and one line style per seed, so a dozen runs stay apart. Returns
    False (and writes nothing) when no run recorded a curve.
    """
    runs = [record for record in records if record.get("curve")]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = curve_styles(runs)
    colours = plt.get_cmap("tab20" if len({cell for cell, _ in styles}) > 10 else "tab10")
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for record in runs:
        steps, top1 = zip(*record["curve"], strict=True)
        colour, line, marker = styles[(record["cell"], record["seed"])]
        axis.plot(
            steps,
            top1,
            linestyle=line,
            marker=marker,
            color=colours(colour),
            label=f"{record['cell']} s{record['seed']}",
        )
    axis.set_xlabel("training step")
    axis.set_ylabel("val linear top-1 (%)")
    axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def gradcam_panel(rows: dict[str, Path], path: Path, min_height: int = 96) -> None:
    """Stack each cell's Grad-CAM strip into one image, one labelled row per cell.

    Small crops are enlarged (nearest neighbour) to at least ``min_height`` pixels a row.
    """
    from PIL import ImageDraw

    strips = {cell: Image.open(p).convert("RGB") for cell, p in rows.items() if p.exists()}
    if not strips:
        return
    scale = max(1, -(-min_height // min(s.height for s in strips.values())))
    strips = {
        cell: s.resize((s.width * scale, s.height * scale), Image.Resampling.NEAREST)
        for cell, s in strips.items()
    }
    label_width = 140
    width = label_width + max(s.width for s in strips.values())
    height = sum(s.height for s in strips.values())
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    top = 0
    for cell, strip in strips.items():
        panel.paste(strip, (label_width, top))
        draw.text((4, top + strip.height // 2 - 5), cell, fill="black")
        top += strip.height
    panel.save(path)

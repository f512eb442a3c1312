"""The benchmark runner: plans every (method, seed) cell of a preset and runs it.

Each (method, seed) cell is pretrained and evaluated in its own process (see
:mod:`solo_fgsynth.benchmark.cell`); a finished cell is reused while its setting and fgsynth
version are today's (:mod:`solo_fgsynth.benchmark.reuse`), and retrained from scratch on
``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from solo_fgsynth._io import atomic_write_json, atomic_write_text
from solo_fgsynth._solo import require_solo
from solo_fgsynth.benchmark.cell import INIT_METHOD
from solo_fgsynth.benchmark.fgvr import for_dataset, quoted_table
from solo_fgsynth.benchmark.pairs import pairs_panel
from solo_fgsynth.benchmark.report import (
    diagnostic_summary,
    diagnostic_table,
    gradcam_panel,
    markdown_table,
    overheads,
    paired_gaps,
    paired_table,
    plot_accuracy,
    plot_curves,
    plot_losses,
    summarize,
)
from solo_fgsynth.benchmark.reuse import RESULT_FILE, SPEC_FILE, prepare_cell
from solo_fgsynth.callbacks import CHECKPOINT_CHOICES, checkpoint_label
from solo_fgsynth.errors import UserError
from solo_fgsynth.resources import config_dir, scripts_dir

PRESET_DIR = scripts_dir() / "benchmark"


def _preset_path(preset: str) -> Path:
    is_file = Path(preset).suffix in (".yaml", ".yml")
    candidate = Path(preset) if is_file else PRESET_DIR / f"{preset}.yaml"
    if candidate.is_file():
        return candidate
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
    raise UserError(
        f"benchmark preset {preset!r} not found (looked for {candidate}); "
        f"available presets: {', '.join(available) or 'none'}, or pass a .yaml path"
    )


def load_preset(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset as a plain dict, with ``extends: NAME`` resolved.

    An extending preset starts from the named preset (a name in the same folder, or a path
    relative to it), replaces the keys it sets, and appends its ``extra_overrides`` to the
    inherited ``overrides``: one frozen setting, reused by the presets built on it.
    """
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise UserError(f"benchmark preset {path} extends itself: {chain}")
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(own, dict):
        raise UserError(f"benchmark preset {path} must be a yaml mapping")
    parent_name = own.pop("extends", None)
    extra = list(own.pop("extra_overrides", []))
    if parent_name is None:
        preset = own
    else:
        parent = Path(str(parent_name))
        parent = path.parent / (parent if parent.suffix in (".yaml", ".yml") else f"{parent}.yaml")
        if not parent.is_file():
            raise UserError(f"benchmark preset {path.name} extends {parent_name!r}: no {parent}")
        preset = {**load_preset(parent, (*_seen, path)), **own}
    preset["overrides"] = [*preset.get("overrides", []), *extra]
    return preset


def plan_cells(
    preset: dict[str, Any],
    seeds: list[int],
    ablations: list[str],
    methods: list[str] | None = None,
) -> list[dict]:
    """Every (method or ablation, seed) cell of the comparison, with identical overrides.

    A method listed in the preset's ``method_overrides`` gets those after the shared ones (the
    supervised reference's own learning rate, say); an fgsynth cell and its ablations share
    their method's. ``methods`` narrows the preset's methods (None: all of them); ablations then
    run only on the preset's ``ablation_methods`` among them, so one base's ablations need no
    other base. ``ablation_only`` restricts an ablation to some of ``ablation_methods`` (a knob
    one base has). ``methods`` may also name single ablation cells (``fgsynth_byol-random``),
    which run without their fgsynth cell.
    The ``init`` method trains nothing: it evaluates the starting weights the overrides name
    (``backbone.init``) on the data of the preset's ``init_config`` (a method's config).
    """
    config_path = config_dir(preset["config_path"])
    if config_path is None:
        raise UserError(
            f"preset config_path {preset['config_path']!r} is not a folder, here or among the "
            f"packaged configs in {scripts_dir()}"
        )
    known = preset.get("ablations", {})
    unknown = [name for name in ablations if name not in known]
    if unknown:
        raise UserError(f"unknown ablation(s) {', '.join(unknown)}: allowed are {', '.join(known)}")
    chosen = preset["methods"] if methods is None else methods
    allowed = [*preset["methods"], *preset.get("optional_methods", [])]
    takers = _ablation_takers(preset)
    ablation_cells = {f"{base}-{name}": (base, name) for name in known for base in takers[name]}
    stray = [name for name in chosen if name not in [*allowed, *ablation_cells]]
    if stray:
        raise UserError(
            f"method(s) {', '.join(stray)} not in the preset: allowed are "
            f"{', '.join(allowed)}, or an ablation cell such as "
            f"{next(iter(ablation_cells), 'fgsynth_byol-random')}"
        )
    single = [ablation_cells[name] for name in chosen if name in ablation_cells]
    chosen = [name for name in chosen if name not in ablation_cells]
    per_method = preset.get("method_overrides", {})
    unknown = [name for name in per_method if not (config_path / f"{name}.yaml").is_file()]
    if unknown:
        raise UserError(
            f"method_overrides names {', '.join(unknown)}: no such method config in {config_path}"
        )
    bases = [base for base in preset["ablation_methods"] if base in chosen]
    if ablations and not bases:
        raise UserError(
            f"--ablations {' '.join(ablations)} needs one of "
            f"{', '.join(preset['ablation_methods'])} in --methods (kept: {', '.join(chosen)})"
        )
    entries = [(method, method, None, []) for method in chosen]
    for name in ablations:
        kept = [base for base in bases if base in takers[name]]
        if not kept:
            raise UserError(
                f"--ablations {name} applies only to {', '.join(takers[name])}: none of them is "
                f"in --methods (kept: {', '.join(chosen)})"
            )
        for base in kept:
            entries.append((f"{base}-{name}", base, name, list(known[name])))
    for base, name in single:
        if (base, name) not in [(entry[1], entry[2]) for entry in entries]:
            entries.append((f"{base}-{name}", base, name, list(known[name])))
    cells = []
    for cell, method, ablation, extra in entries:
        for seed in seeds:
            cells.append(
                {
                    "cell": cell,
                    "method": method,
                    "ablation": ablation,
                    "seed": seed,
                    "config_path": str(config_path),
                    "config_name": _config_name(preset, method),
                    "overrides": [
                        *preset.get("overrides", []),
                        *per_method.get(method, []),
                        *extra,
                    ],
                    "eval": dict(preset["eval"]),
                }
            )
    return cells


def _ablation_takers(preset: dict[str, Any]) -> dict[str, list[str]]:
    """Each ablation's fgsynth methods: ``ablation_methods``, or its ``ablation_only`` list."""
    known = preset.get("ablations", {})
    only = preset.get("ablation_only", {})
    for name, bases in only.items():
        if name not in known:
            raise UserError(f"ablation_only names {name!r}: not an ablation of the preset")
        stray = [base for base in bases if base not in preset["ablation_methods"]]
        if stray:
            raise UserError(
                f"ablation_only.{name} names {', '.join(stray)}: allowed are "
                f"{', '.join(preset['ablation_methods'])}"
            )
    return {name: list(only.get(name, preset["ablation_methods"])) for name in known}


def _config_name(preset: dict[str, Any], method: str) -> str:
    """The pretrain config a cell reads: its method's, or ``init_config`` for the init cell."""
    if method != INIT_METHOD:
        return method
    if "init_config" not in preset:
        raise UserError(
            "the preset lists method 'init' but sets no init_config (the method config whose "
            "data and backbone the starting weights are evaluated on, e.g. init_config: byol)"
        )
    return str(preset["init_config"])


def paired_with_base(preset: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, str]:
    """Each fgsynth cell (and its ablation cells) with its stock base, from ``overhead_pairs``."""
    bases = dict(preset.get("overhead_pairs", {}))
    pairs = {}
    for record in records:
        method, cell = record["method"], record["cell"]
        if method in bases and cell not in pairs:
            pairs[cell] = bases[method]
    return pairs


ENVIRONMENT_PACKAGES = (
    "solo-fgsynth",
    "solo-learn",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "numpy",
    "pillow",
    "scikit-learn",
)


def environment() -> dict[str, str | None]:
    """Python, platform and the versions the numbers depend on: a run reproduces bit for bit
    only on the same ones (the same cell on two environments can differ by points)."""
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ENVIRONMENT_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class CellFailedError(UserError, RuntimeError):
    """A cell's process exited with an error: one line naming the cell and its log, the log's
    tail as details; exit code 1 (the run failed, its input may be fine)."""

    exit_code = 1


def _run_cell_process(spec: dict[str, Any], log_path: Path) -> None:
    spec_path = Path(spec["cell_dir"]) / SPEC_FILE
    atomic_write_json(spec_path, spec)
    with open(log_path, "a") as log:  # appended: an earlier attempt's log is kept
        completed = subprocess.run(
            [sys.executable, "-m", "solo_fgsynth.benchmark.cell", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
    if completed.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise CellFailedError(
            f"cell {spec['cell']} seed {spec['seed']} failed (exit {completed.returncode}); "
            f"log: {log_path}",
            details=tail,
        )


def run_benchmark(
    preset_path: Path,
    out_dir: Path,
    seeds: list[int] | None,
    ablations: list[str],
    force: bool,
    methods: list[str] | None = None,
    checkpoint: str = "last",
    dataset: str | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run (or reuse) every cell, then write results.json, results.md and the figures.

    ``checkpoint`` picks what each cell evaluates (see ``CHECKPOINT_CHOICES``); ``dataset``
    and ``data_root`` fill a preset whose config path names ``{dataset}`` (fgvr).
    """
    started = time.perf_counter()
    preset = for_dataset(load_preset(preset_path), dataset, data_root)
    seeds = seeds if seeds is not None else list(preset["seeds"])
    cells = plan_cells(preset, seeds, ablations, methods)
    records = []
    progress = tqdm(cells, desc="benchmark", unit="cell")
    for spec in progress:
        cell_dir = out_dir / "cells" / f"{spec['cell']}-seed{spec['seed']}"
        spec["cell_dir"] = str(cell_dir)
        spec["checkpoint_choice"] = checkpoint
        progress.set_postfix_str(f"{spec['cell']} seed {spec['seed']}")
        run, set_aside_note = prepare_cell(cell_dir, spec, force)
        if set_aside_note:
            progress.write(set_aside_note, file=sys.stderr)
        if run:
            cell_dir.mkdir(parents=True, exist_ok=True)
            spec["started_at"] = time.time()
            _run_cell_process(spec, cell_dir / "log.txt")
        records.append(json.loads((cell_dir / RESULT_FILE).read_text()))
    summary = summarize(records)
    pairs = dict(preset.get("overhead_pairs", {}))
    ratios = overheads(summary, pairs)
    paired = paired_gaps(records, paired_with_base(preset, records))
    diagnostic = diagnostic_summary(records)
    results = {
        "preset": preset_path.name,
        "settings": preset,
        "seeds": seeds,
        "ablations": ablations,
        "evaluated": checkpoint_label(checkpoint),
        "summary": summary,
        "overhead": ratios,
        "paired": paired,
        "diagnostic": diagnostic,
        "environment": environment(),
        "wall_s": None,
        "cells_wall_s": sum(r.get("wall_s") or 0.0 for r in records),
        "runs": records,
    }
    table = f"Evaluated: {checkpoint_label(checkpoint)}.\n\n" + markdown_table(summary, ratios)
    table += paired_table(paired)
    table += diagnostic_table(diagnostic)
    table += quoted_table(preset.get("quoted", []))
    plot_accuracy(summary, out_dir / "accuracy.png")
    plot_losses(records, out_dir / "losses.png")
    plot_curves(records, out_dir / "curves.png")
    first_seed = {
        r["cell"]: out_dir / "cells" / f"{r['cell']}-seed{seeds[0]}" / "gradcam.png"
        for r in records
    }
    gradcam_panel(first_seed, out_dir / "gradcam.png")
    pair_grids = {cell: path.with_name("pairs.png") for cell, path in first_seed.items()}
    pairs_panel(pair_grids, out_dir / "pairs.png")
    results["wall_s"] = time.perf_counter() - started
    atomic_write_json(out_dir / "results.json", results)
    table += (
        f"\nWall time: {results['wall_s']:.0f} s for this run; the cells' own: "
        f"{results['cells_wall_s']:.0f} s.\n"
    )
    atomic_write_text(out_dir / "results.md", table)
    print(table)
    return results


def main(argv: list[str]) -> int:
    """Parse the benchmark's arguments and run it."""
    parser = argparse.ArgumentParser(
        prog="solo-fgsynth benchmark",
        description="Pretrain stock byol/simclr and fgsynth on identical budgets and compare "
        "linear probe, kNN and leave-one-out retrieval, with step time and peak memory.",
    )
    parser.add_argument(
        "--preset", default="quick", help="quick, cpu, tuning, full, or a preset .yaml path"
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override seeds")
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=[],
        help="extra fgsynth cells from the preset's ablations: variance, gradcam, random, "
        "no_pairs (quick, cpu); knob values such as perturbation_noise (tuning). They run on the "
        "preset's ablation_methods that --methods keeps",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="run only these of the preset's methods, or single ablation cells such as "
        "fgsynth_byol-random (without their fgsynth cell)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="retrain every cell from scratch (an earlier attempt is kept as CELL.replaced-TIME)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=list(CHECKPOINT_CHOICES),
        default="last",
        help="evaluate the last checkpoint, the best by retrieval on a held-out 10%% of the "
        "training split (best), or the best on the test split (best-on-test, LCR's selection: "
        "the test set leaks into the choice; results are labelled so)",
    )
    parser.add_argument("--dataset", help="fgvr preset: cub200, cars or aircraft")
    parser.add_argument("--data-root", help="fgvr preset: the dataset's root folder")
    args = parser.parse_args(argv)
    require_solo()
    preset_path = _preset_path(args.preset)
    suffix = "".join(
        f"-{part}" for part in (args.dataset, args.checkpoint) if part not in (None, "last")
    )
    out_dir = args.out or Path("results") / f"{preset_path.stem}{suffix}"
    run_benchmark(
        preset_path,
        out_dir,
        args.seeds,
        args.ablations,
        args.force,
        args.methods,
        args.checkpoint,
        args.dataset,
        args.data_root,
    )
    print(f"results written to {out_dir}")
    return 0

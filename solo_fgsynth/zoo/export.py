"""Publishing: turn a solo-learn checkpoint into backbone-only weights, a manifest entry and a card.

solo-learn's Checkpointer writes a Lightning ``.ckpt`` whose ``state_dict`` holds the
backbone under ``backbone.*`` and the full run configuration as ``args.json`` beside it;
both are read here, so the published entry records exactly the recipe that produced it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solo_fgsynth._io import atomic_write_bytes, atomic_write_text
from solo_fgsynth.backbones import BACKBONES
from solo_fgsynth.checkpoints import read_method_backbone, read_training_recipe
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.zoo.card import render_card
from solo_fgsynth.zoo.errors import ZooError
from solo_fgsynth.zoo.manifest import (
    DEFAULT_LICENSE,
    DEFAULT_MANIFEST,
    KNOWN_METRICS,
    PACKAGED_WEIGHTS_DIR,
    PACKAGED_WEIGHTS_LIMIT_BYTES,
    BackboneSpec,
    Manifest,
    ZooEntry,
    validate_metrics,
    validate_name,
)
from solo_fgsynth.zoo.weights import build_backbone, check_state, serialize_backbone

# solo-learn backbone names this exporter maps to a library model; all are torchvision ResNets.
SOLO_BACKBONES = {"resnet18": "resnet18", "resnet50": "resnet50"}
PLUGIN_BACKBONES = tuple(BACKBONES)  # built by this package, recorded by name and kwargs
# The repository's zoo/ folder (cards, shipped weights) beside the package in a source checkout.
REPO_ROOT = DEFAULT_MANIFEST.parents[2]
REPO_ZOO_DIR = REPO_ROOT / "zoo"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the entry and the three files."""

    entry: ZooEntry
    weights_path: Path
    card_path: Path
    manifest_path: Path


def read_metrics_file(path: str | Path) -> dict[str, float]:
    """Metrics from a results JSON: known keys at the top level or under ``"metrics"``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ZooError(f"cannot read metrics file {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = data["metrics"]
    if not isinstance(data, dict):
        raise ZooError(f"metrics file {path} must hold a JSON object")
    found = {key: data[key] for key in KNOWN_METRICS if key in data}
    if not found:
        raise ZooError(
            f"metrics file {path} has none of the known metrics ({', '.join(KNOWN_METRICS)}) "
            "at its top level or under 'metrics'"
        )
    return validate_metrics(found, f"metrics file {path}")


def parse_metric(text: str) -> tuple[str, float]:
    """Parse one ``key=value`` metric given on the command line."""
    key, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or number is None:
        raise ZooError(f"metric {text!r} must look like KEY=NUMBER, e.g. linear_top1=61.3")
    return key.strip(), number


def _recipe_field(recipe: dict[str, Any], dotted: str, args_path: Path) -> Any:
    value: Any = recipe
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise ZooError(f"training recipe {args_path} has no '{dotted}'")
    return value


def default_weights_dir(manifest_path: Path, size_bytes: int) -> Path:
    """Where exported weights go: inside the package (so into the wheel) for the packaged
    manifest when they are at most ``PACKAGED_WEIGHTS_LIMIT_BYTES``, else beside the cards."""
    if manifest_path == DEFAULT_MANIFEST and size_bytes <= PACKAGED_WEIGHTS_LIMIT_BYTES:
        return PACKAGED_WEIGHTS_DIR
    return _default_dirs(manifest_path) / "weights"


def _default_dirs(manifest_path: Path) -> Path:
    """Where cards and weights go: the repository's zoo/ for the packaged manifest."""
    if manifest_path != DEFAULT_MANIFEST:
        return manifest_path.parent
    if not (REPO_ROOT / "pyproject.toml").is_file():
        raise ZooError(
            "exporting into the packaged manifest needs a source checkout of solo-fgsynth "
            f"(no pyproject.toml in {REPO_ROOT}); pass --manifest, --weights-dir and --cards-dir"
        )
    return REPO_ZOO_DIR


def write_cards(
    manifest: str | Path | None = None, cards_dir: str | Path | None = None
) -> list[Path]:
    """Rewrite every entry's model card from the manifest, e.g. after editing its ``notes``."""
    zoo = Manifest.load(manifest)
    if zoo.path is None and cards_dir is None:
        raise ZooError(f"the manifest {zoo.url} is served from a URL; pass --cards-dir")
    directory = Path(cards_dir or _default_dirs(zoo.path) / "cards").resolve()
    paths = []
    for entry in zoo.entries:
        path = directory / f"{entry.name}.md"
        atomic_write_text(path, render_card(entry))
        paths.append(path)
    return paths


def _dataset_name(recipe: dict[str, Any], args_file: Path) -> str:
    """The dataset as the user named it: ``data.source_dataset`` when the launcher rewrote
    an fgmarks/FGVR dataset into solo-learn's ``custom``, else ``data.dataset``."""
    data = recipe.get("data") or {}
    return data.get("source_dataset") or _recipe_field(recipe, "data.dataset", args_file)


def export_checkpoint(
    ckpt: str | Path,
    *,
    name: str,
    args_path: str | Path | None = None,
    metrics: Mapping[str, float] | None = None,
    urls: Sequence[str] = (),
    license: str = DEFAULT_LICENSE,
    base_method: str | None = None,
    notes: str = "",
    manifest: str | Path | None = None,
    weights_dir: str | Path | None = None,
    cards_dir: str | Path | None = None,
    replace: bool = False,
    date: dt.date | None = None,
) -> ExportResult:
    """Publish a solo-learn checkpoint as a zoo entry: weights, card, then the manifest.

    Without ``urls`` the entry's source is the weights file itself, as a path relative to
    the manifest (weights shipped in the repository). The manifest is written last, so a
    failure part-way never leaves an entry pointing at a missing file.
    """
    validate_name(name)
    ckpt_path = Path(ckpt).resolve()
    zoo = Manifest.load(manifest)
    if zoo.path is None:
        raise ZooError(
            f"the manifest {zoo.url} is served from a URL; export into a local manifest file "
            "(--manifest PATH), then upload it and the weights"
        )
    if name in zoo.names() and not replace:
        raise ZooError(f"entry {name!r} already exists in {zoo.path}; use --replace to overwrite")
    args_file = Path(args_path).resolve() if args_path else ckpt_path.parent / "args.json"
    recipe = read_training_recipe(args_file)
    state = read_method_backbone(ckpt_path)

    solo_name = _recipe_field(recipe, "backbone.name", args_file)
    if solo_name in PLUGIN_BACKBONES:
        kwargs = dict(recipe.get("backbone", {}).get("kwargs") or {})
        spec = BackboneSpec(library="solo_fgsynth", arch=solo_name, kwargs=kwargs)
    elif solo_name in SOLO_BACKBONES:
        conv1 = state.get("conv1.weight")
        spec = BackboneSpec(
            library="torchvision",
            arch=SOLO_BACKBONES[solo_name],
            cifar_stem=conv1 is not None and tuple(conv1.shape[-2:]) == (3, 3),
        )
    else:
        raise ZooError(
            f"backbone {solo_name!r} from {args_file} is not supported by export; "
            f"supported: {', '.join([*SOLO_BACKBONES, *PLUGIN_BACKBONES])}"
        )
    check_state(build_backbone(spec), state, f"backbone of {ckpt_path}")
    method = _recipe_field(recipe, "method", args_file)
    if base_method is None and method == "fgsynth":
        try:
            base_method = _recipe_field(recipe, "method_kwargs.base", args_file)
        except ZooError as error:
            raise ZooError(f"{error}; name the wrapped method with --base-method") from None

    _recipe_field(recipe, "augmentations.0.crop_size", args_file)
    view = EvalView.of(recipe["augmentations"][0])
    data = serialize_backbone(state, spec)
    zoo_dir = _default_dirs(zoo.path)
    weights_dir = weights_dir or default_weights_dir(zoo.path, len(data))
    weights_path = Path(weights_dir).resolve() / f"{name}.safetensors"
    card_path = Path(cards_dir or zoo_dir / "cards").resolve() / f"{name}.md"
    sources = list(urls) or [Path(os.path.relpath(weights_path, zoo.path.parent)).as_posix()]
    entry = ZooEntry.from_dict(
        {
            "name": name,
            "method": method,
            "base_method": base_method,
            "backbone": spec.to_dict(),
            "dataset": _dataset_name(recipe, args_file),
            "crop_size": view.crop_size,
            "mean": list(view.mean),
            "std": list(view.std),
            "head": [],  # the file holds the backbone alone
            "metrics": dict(metrics or {}),
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "license": license,
            "urls": sources,
            "date": (date or dt.datetime.now(dt.UTC).date()).isoformat(),
            "recipe": recipe,
            "notes": notes,
        },
        where=f"new entry from {ckpt_path}",
    )
    atomic_write_bytes(weights_path, data)
    atomic_write_text(card_path, render_card(entry))
    zoo.add(entry, replace=replace)
    zoo.save()
    return ExportResult(entry, weights_path, card_path, zoo.path)

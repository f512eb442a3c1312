"""Pretrained-weight zoo: list, download (sha256-verified, cached) and load published backbones.

``solo_fgsynth.zoo.load("NAME")`` returns a ready backbone; ``solo-fgsynth zoo`` lists,
describes, downloads and publishes entries of the manifest shipped with the package.
Loading and exporting need torch; their names are imported on first use, so that listing the
zoo does not pay for torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solo_fgsynth.errors import concise_user_errors
from solo_fgsynth.zoo.card import render_card
from solo_fgsynth.zoo.download import CACHE_ENV, OFFLINE_ENV, cache_dir, fetch
from solo_fgsynth.zoo.errors import (
    DownloadError,
    ManifestError,
    OfflineError,
    UnknownModelError,
    WeightsMismatchError,
    ZooError,
)
from solo_fgsynth.zoo.manifest import (
    DEFAULT_MANIFEST,
    MANIFEST_ENV,
    BackboneSpec,
    Manifest,
    ZooEntry,
)

if TYPE_CHECKING:
    from solo_fgsynth.zoo.export import ExportResult, export_checkpoint, write_cards
    from solo_fgsynth.zoo.loader import eval_transform, load, load_into_solo

_NEED_TORCH = {
    "ExportResult": "export",
    "export_checkpoint": "export",
    "write_cards": "export",
    "eval_transform": "loader",
    "load": "loader",
    "load_into_solo": "loader",
}


def __getattr__(name: str) -> Any:
    """The loading and exporting names, imported from their modules on first use (torch)."""
    if name in _NEED_TORCH:
        return getattr(importlib.import_module(f"{__name__}.{_NEED_TORCH[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@concise_user_errors
def list_models(manifest: str | Path | None = None) -> list[str]:
    """Names of the published entries, in manifest order."""
    return Manifest.load(manifest).names()


@concise_user_errors
def get_entry(name: str, manifest: str | Path | None = None) -> ZooEntry:
    """The manifest entry called ``name``; an unknown name raises with close names suggested."""
    return Manifest.load(manifest).get(name)


__all__ = [
    "CACHE_ENV",
    "DEFAULT_MANIFEST",
    "MANIFEST_ENV",
    "OFFLINE_ENV",
    "BackboneSpec",
    "DownloadError",
    "ExportResult",
    "Manifest",
    "ManifestError",
    "OfflineError",
    "UnknownModelError",
    "WeightsMismatchError",
    "ZooEntry",
    "ZooError",
    "cache_dir",
    "eval_transform",
    "export_checkpoint",
    "fetch",
    "get_entry",
    "list_models",
    "load",
    "load_into_solo",
    "render_card",
    "write_cards",
]

"""Pretrained-weight zoo: list, download (sha256-verified, cached) and load published backbones.

``solo_fgsynth.zoo.load("NAME")`` returns a ready backbone; ``solo-fgsynth zoo`` lists,
describes, downloads and publishes entries of the manifest shipped with the package.
"""

from pathlib import Path

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
from solo_fgsynth.zoo.export import ExportResult, export_checkpoint, write_cards
from solo_fgsynth.zoo.loader import load, load_into_solo
from solo_fgsynth.zoo.manifest import (
    DEFAULT_MANIFEST,
    MANIFEST_ENV,
    BackboneSpec,
    Manifest,
    ZooEntry,
)


def list_models(manifest: str | Path | None = None) -> list[str]:
    """Names of the published entries, in manifest order."""
    return Manifest.load(manifest).names()


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
    "export_checkpoint",
    "fetch",
    "get_entry",
    "list_models",
    "load",
    "load_into_solo",
    "render_card",
    "write_cards",
]

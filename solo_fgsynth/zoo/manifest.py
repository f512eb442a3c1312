"""The zoo manifest: one JSON file listing every published backbone, its files and its provenance.

The manifest ships inside the package (``solo_fgsynth/zoo/manifest.json``), so an installed
copy can list, verify and load weights without the repository; ``$SOLO_FGSYNTH_MANIFEST`` names
another one, a file or an http(s) URL. A source URL without a scheme is relative to the
manifest: weights under the size limit ship in the package's ``zoo/weights/``, larger ones
stay in the repository's ``zoo/weights/`` or on a server.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from solo_fgsynth._io import atomic_write_text
from solo_fgsynth.validation import check_number
from solo_fgsynth.zoo.errors import ManifestError, UnknownModelError

SCHEMA_VERSION = 1
DEFAULT_MANIFEST = Path(__file__).resolve().with_name("manifest.json")
MANIFEST_ENV = "SOLO_FGSYNTH_MANIFEST"
MANIFEST_TIMEOUT_S = 30
# Weights shipped inside the package (and wheel) beside the manifest, each at most this size;
# larger ones stay in the repository's zoo/weights/ or are served from a URL.
PACKAGED_WEIGHTS_DIR = DEFAULT_MANIFEST.with_name("weights")
PACKAGED_WEIGHTS_LIMIT_BYTES = 8 * 2**20
DEFAULT_LICENSE = "MIT"  # of weights published without --license

# "solo_fgsynth": a backbone this package registers (solo_fgsynth.backbones.BACKBONES)
LIBRARIES = ("torchvision", "timm", "solo_fgsynth")
# Metric keys an entry may carry, all in percent; list shows the first three as columns.
KNOWN_METRICS = (
    "linear_top1",
    "knn_top1",
    "retrieval_map",
    "linear_top5",
    "knn_top5",
    "retrieval_top1",
    "retrieval_top5",
)
URL_SCHEMES = ("http", "https", "file")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build the backbone: the library, its model name, and solo-learn's small-crop stem."""

    library: str
    arch: str
    cifar_stem: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the manifest."""
        return {
            "library": self.library,
            "arch": self.arch,
            "cifar_stem": self.cifar_stem,
            "kwargs": dict(self.kwargs),
        }


@dataclass(frozen=True)
class ZooEntry:
    """One published backbone: what it is, how it was trained, how well it does, where it lives."""

    name: str
    method: str
    base_method: str | None
    backbone: BackboneSpec
    dataset: str
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    head: tuple[str, ...]
    metrics: dict[str, float]
    size_bytes: int
    sha256: str
    license: str
    urls: tuple[str, ...]
    date: str
    recipe: dict[str, Any]
    notes: str = ""

    @property
    def cache_filename(self) -> str:
        """File name in the cache; the hash prefix keeps republished weights apart."""
        return f"{self.name}-{self.sha256[:12]}.safetensors"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the manifest, fields in schema order."""
        return {
            "name": self.name,
            "method": self.method,
            "base_method": self.base_method,
            "backbone": self.backbone.to_dict(),
            "dataset": self.dataset,
            "crop_size": self.crop_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "head": list(self.head),
            "metrics": dict(self.metrics),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "license": self.license,
            "urls": list(self.urls),
            "date": self.date,
            "recipe": self.recipe,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "entry") -> ZooEntry:
        """Validate one manifest entry; a bad field raises :class:`ManifestError` naming it."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: must be a JSON object, got {type(data).__name__}")
        name = data.get("name")
        if isinstance(name, str):
            where = f"{where} {name!r}"
        allowed = {
            "name",
            "method",
            "base_method",
            "backbone",
            "dataset",
            "crop_size",
            "mean",
            "std",
            "head",
            "metrics",
            "size_bytes",
            "sha256",
            "license",
            "urls",
            "date",
            "recipe",
            "notes",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(
            name=validate_name(_require(data, "name", str, where)),
            method=_require(data, "method", str, where),
            base_method=_optional_str(data, "base_method", where),
            backbone=_backbone(data.get("backbone"), where),
            dataset=_require(data, "dataset", str, where),
            crop_size=_positive_int(data, "crop_size", where),
            mean=_channel_stats(data, "mean", where),
            std=_channel_stats(data, "std", where, positive=True),
            head=_head(data.get("head"), where),
            metrics=validate_metrics(_require(data, "metrics", dict, where), where),
            size_bytes=_positive_int(data, "size_bytes", where),
            sha256=_sha256(data, where),
            license=_require(data, "license", str, where),
            urls=_urls(data.get("urls"), where),
            date=_date(data, where),
            recipe=_require(data, "recipe", dict, where),
            notes=_optional_str(data, "notes", where) or "",
        )


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid entry name: lower-case letters, digits, ``._-``."""
    if not _NAME_RE.match(name):
        raise ManifestError(
            f"invalid entry name {name!r}: use lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def validate_metrics(metrics: dict[str, Any], where: str = "metrics") -> dict[str, float]:
    """Check metric names against :data:`KNOWN_METRICS` and values for finite numbers."""
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        if key not in KNOWN_METRICS:
            raise ManifestError(
                f"{where}: unknown metric {key!r}; allowed: {', '.join(KNOWN_METRICS)}"
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ManifestError(f"{where}: metric {key!r} must be a finite number, got {value!r}")
        clean[key] = float(value)
    return clean


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        expected = "a non-empty string" if kind is str else f"a JSON {kind.__name__}"
        raise ManifestError(f"{where}: field {key!r} must be {expected}, got {value!r}")
    return value


def _optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where}: field {key!r} must be a string or null, got {value!r}")
    return value


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ManifestError(f"{where}: field {key!r} must be a positive integer, got {value!r}")
    return value


def _channel_stats(
    data: dict[str, Any], key: str, where: str, positive: bool = False
) -> tuple[float, float, float]:
    """The per-channel normalisation the weights were trained with (RGB, images in [0, 1])."""
    value = data.get(key)
    if not isinstance(value, list) or len(value) != 3:
        raise ManifestError(f"{where}: field {key!r} must be a list of 3 numbers, got {value!r}")
    low = "a positive" if positive else "a"
    for number in value:
        check_number(
            f"{where}: field {key!r} item",
            number,
            0 if positive else None,
            low_open=positive,
            why=f"{low} per-channel value",
            error=ManifestError,
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def _head(value: Any, where: str) -> tuple[str, ...]:
    """Key prefixes of the file's classifier head (empty for a backbone-only file)."""
    if not isinstance(value, list) or not all(isinstance(key, str) and key for key in value):
        raise ManifestError(
            f"{where}: field 'head' must be a list of key prefixes (empty: no head), got {value!r}"
        )
    return tuple(value)


def _sha256(data: dict[str, Any], where: str) -> str:
    value = data.get("sha256")
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise ManifestError(
            f"{where}: field 'sha256' must be 64 lower-case hex digits, got {value!r}"
        )
    return value


def _date(data: dict[str, Any], where: str) -> str:
    value = data.get("date")
    try:
        dt.date.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ManifestError(
            f"{where}: field 'date' must be an ISO date YYYY-MM-DD, got {value!r}"
        ) from None
    return value  # type: ignore[return-value]


def _urls(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{where}: field 'urls' must be a non-empty list, got {value!r}")
    for url in value:
        if not isinstance(url, str) or not url:
            raise ManifestError(f"{where}: every URL must be a non-empty string, got {url!r}")
        scheme = urlsplit(url).scheme
        if scheme and scheme not in URL_SCHEMES:
            raise ManifestError(
                f"{where}: URL {url!r} has scheme {scheme!r}; allowed: "
                f"{', '.join(URL_SCHEMES)}, or a path relative to the manifest"
            )
    return tuple(value)


def _backbone(value: Any, where: str) -> BackboneSpec:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: field 'backbone' must be a JSON object, got {value!r}")
    library = value.get("library")
    if library not in LIBRARIES:
        raise ManifestError(
            f"{where}: backbone library {library!r} is not supported; allowed: {LIBRARIES}"
        )
    arch = _require(value, "arch", str, f"{where} backbone")
    cifar_stem = value.get("cifar_stem", False)
    if not isinstance(cifar_stem, bool):
        raise ManifestError(f"{where}: backbone 'cifar_stem' must be true or false")
    if cifar_stem and not (library == "torchvision" and arch.startswith("resnet")):
        raise ManifestError(
            f"{where}: 'cifar_stem' applies to torchvision ResNets only, not {library}:{arch}"
        )
    kwargs = value.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ManifestError(f"{where}: backbone 'kwargs' must be a JSON object, got {kwargs!r}")
    return BackboneSpec(library=library, arch=arch, cifar_stem=cifar_stem, kwargs=kwargs)


def manifest_location(path: str | Path | None = None) -> str | Path:
    """The manifest to use: ``path`` if given, else ``$SOLO_FGSYNTH_MANIFEST`` (a file or an
    http(s) URL, e.g. a lab's own server), else the one shipped in the package."""
    if path is not None:
        return path
    return os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST


def _download_manifest(url: str) -> str:
    try:
        response = requests.get(url, timeout=MANIFEST_TIMEOUT_S)
        response.raise_for_status()
    except requests.RequestException as error:
        raise ManifestError(f"cannot download manifest {url}: {error}") from None
    return response.text


class Manifest:
    """The parsed manifest: its entries in file order, and where it lives (a file or a URL)."""

    def __init__(self, path: Path | None, entries: list[ZooEntry], url: str | None = None) -> None:
        self.path = path
        self.url = url
        self.entries = entries

    @property
    def source(self) -> str:
        """Where the manifest was read from: its URL, or its file path."""
        return self.url or str(self.path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Manifest:
        """Read and validate the manifest at ``path``, a file or an http(s) URL (default:
        ``$SOLO_FGSYNTH_MANIFEST``, else the one shipped in the package)."""
        location = manifest_location(path)
        url = str(location) if urlsplit(str(location)).scheme in ("http", "https") else None
        file = None if url else Path(location).expanduser().resolve()
        path = url or file
        try:
            text = _download_manifest(url) if url else file.read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            raise ManifestError(f"manifest not found: {path}") from None
        except (OSError, json.JSONDecodeError) as error:
            raise ManifestError(f"cannot read manifest {path}: {error}") from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest {path}: expected a JSON object with schema_version {SCHEMA_VERSION}"
            )
        raw = data.get("entries")
        if not isinstance(raw, list):
            raise ManifestError(f"manifest {path}: 'entries' must be a list, got {raw!r}")
        entries = [
            ZooEntry.from_dict(item, f"manifest {path}: entry {i}") for i, item in enumerate(raw)
        ]
        names = [entry.name for entry in entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ManifestError(f"manifest {path}: duplicate entry names {duplicates}")
        return cls(file, entries, url)

    def names(self) -> list[str]:
        """Entry names in file order."""
        return [entry.name for entry in self.entries]

    def get(self, name: str) -> ZooEntry:
        """The entry called ``name``; an unknown name raises with the closest names suggested."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        names = self.names()
        if not names:
            raise UnknownModelError(
                f"unknown model {name!r}: the manifest {self.source} has no entries yet"
            )
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(n) for n in close)}?"
            if close
            else f"available: {', '.join(names)}"
        )
        raise UnknownModelError(f"unknown model {name!r}; {hint}")

    def add(self, entry: ZooEntry, *, replace: bool = False) -> None:
        """Append ``entry``, or swap it in for the entry of the same name when ``replace``."""
        for i, existing in enumerate(self.entries):
            if existing.name == entry.name:
                if not replace:
                    raise ManifestError(
                        f"entry {entry.name!r} already exists in {self.source}; "
                        "pass replace=True (CLI: --replace) to overwrite it"
                    )
                self.entries[i] = entry
                return
        self.entries.append(entry)

    def save(self) -> None:
        """Write the manifest back atomically, two-space indented for readable diffs."""
        if self.path is None:
            raise ManifestError(
                f"the manifest {self.url} is served from a URL and cannot be written here; "
                "publish into a local manifest file (--manifest PATH) and upload it"
            )
        data = {
            "schema_version": SCHEMA_VERSION,
            "entries": [entry.to_dict() for entry in self.entries],
        }
        atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def source_urls(self, entry: ZooEntry) -> list[str]:
        """The entry's URLs in order; relative ones resolved against the manifest's location
        (``file://`` URLs beside a manifest file, the server's for a manifest URL)."""
        resolved = []
        for url in entry.urls:
            if urlsplit(url).scheme:
                resolved.append(url)
            elif self.url is not None:
                resolved.append(urljoin(self.url, url))
            else:
                resolved.append((self.path.parent / url).resolve().as_uri())
        return resolved

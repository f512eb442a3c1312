"""Crash-safe on-disk caches: a directory is built under a temporary name and renamed into place.

Only a directory holding the completion marker is trusted; anything else under the cache root
(a half-built ``.<key>.partial-*`` directory, or a directory whose marker is gone) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from solo_fgsynth._io import atomic_write_json

COMPLETE_MARKER = ".complete.json"


def stable_key(description: Mapping[str, Any]) -> str:
    """A short hex digest of a JSON-serialisable description; equal descriptions give equal keys."""
    encoded = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def is_complete(directory: Path) -> bool:
    """True when ``directory`` was fully built: it holds the completion marker."""
    return (directory / COMPLETE_MARKER).is_file()


def read_marker(directory: Path) -> dict[str, Any]:
    """The manifest stored in a complete directory's marker."""
    return json.loads((directory / COMPLETE_MARKER).read_text())


def cached_directory(
    root: Path, key: str, build: Callable[[Path], None], manifest: Mapping[str, Any]
) -> Path:
    """Return ``root/key``, first building it with ``build(staging_dir)`` when not complete.

    The build runs in a fresh temporary directory next to the target; the marker (holding
    ``manifest``) is written last and the directory is then renamed into place, so an
    interrupted build never leaves a directory that a later call trusts.
    """
    target = root / key
    if is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=root))
    try:
        build(staging)
        atomic_write_json(staging / COMPLETE_MARKER, manifest)
        if target.exists() and not is_complete(target):
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_complete(target):
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

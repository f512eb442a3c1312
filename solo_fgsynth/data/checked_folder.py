"""Image folders given directly (solo-learn's ``custom`` dataset), checked once before training.

Every image is opened and decoded before the first step, so a corrupt file stops the run at once
and names itself, instead of crashing a DataLoader worker hours later. A folder whose listing
(paths, sizes, modification times) was checked before is not decoded again. With
``skip_unreadable`` the unreadable files are left out through a cached tree of symlinks to the
readable ones, with a warning naming them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from solo_fgsynth._io import atomic_write_json
from solo_fgsynth.data._cache import cached_directory, stable_key
from solo_fgsynth.data.layouts import verify_images, warn_skipped
from solo_fgsynth.errors import MissingDataError

CHECK_VERSION = 1


def folder_images(root: Path, labelled: bool) -> list[Path]:
    """The files solo-learn reads from ``root``: torchvision's ImageFolder (``<class>/...``
    images) when ``labelled``, else every entry of ``root`` as its unlabelled dataset lists it."""
    if not labelled:
        return sorted(root / name for name in os.listdir(root))
    images = []
    for class_dir in sorted(entry.path for entry in os.scandir(root) if entry.is_dir()):
        for folder, _, files in sorted(os.walk(class_dir, followlinks=True)):
            images.extend(
                Path(folder) / name
                for name in sorted(files)
                if name.lower().endswith(IMG_EXTENSIONS)
            )
    return images


def _listing_key(root: Path, images: list[Path]) -> str:
    entries = []
    for path in images:
        try:
            stat = path.stat()
            entries.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
        except OSError:  # a dangling link: listed, so that the check reports it
            entries.append((str(path.relative_to(root)), -1, -1))
    return stable_key({"version": CHECK_VERSION, "root": str(root), "files": entries})


def _recorded_unreadable(record: Path) -> list[Path] | None:
    """The unreadable images an earlier check of the same listing found; None if never checked."""
    if not record.is_file():
        return None
    return [Path(path) for path in json.loads(record.read_text())["unreadable"]]


def checked_image_folder(
    root: Path,
    labelled: bool,
    cache_dir: Path,
    skip_unreadable: bool = False,
    progress: bool = True,
) -> Path:
    """``root`` once every image in it decodes, or with ``skip_unreadable`` a cached symlink tree
    of the readable ones; raises :class:`UnreadableImagesError` naming the bad files otherwise."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingDataError(f"image folder {root} does not exist or is not a directory")
    images = folder_images(root, labelled)
    key = _listing_key(root, images)
    record = Path(cache_dir) / "checked" / f"{key}.json"
    unreadable = _recorded_unreadable(record)
    if unreadable is None or (unreadable and not skip_unreadable):
        unreadable = verify_images(images, progress=progress, skip_unreadable=skip_unreadable)
        listed = [str(path) for path in unreadable]
        atomic_write_json(record, {"root": str(root), "images": len(images), "unreadable": listed})
    elif unreadable:
        warn_skipped(unreadable)
    if not unreadable:
        return root
    skipped = set(unreadable)

    def build(staging: Path) -> None:
        for path in images:
            if path not in skipped:
                link = staging / path.relative_to(root)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())

    manifest = {"root": str(root), "unreadable": sorted(str(path) for path in skipped)}
    return cached_directory(Path(cache_dir) / "readable", key, build, manifest)

"""FGVR dataset layouts turned into solo-learn ``image_folder`` trees of symlinks.

Each reader parses a dataset as distributed (CUB-200-2011, Stanford Cars and FGVC-Aircraft as
torchvision lays them out, or a generic ``train``/``val`` ImageFolder) into a
:class:`LayoutListing`. :func:`prepare_layout` checks every image once, then builds
``<cache>/<name>/<key>/{train,val}/<class>/<image>`` symlinks, which solo-learn's ``custom``
dataset loads with torchvision's ``ImageFolder``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from solo_fgsynth.data._cache import cached_directory, read_marker, stable_key
from solo_fgsynth.errors import DataError, MissingDataError

LAYOUT_VERSION = 1
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
# what data.root must hold, by dataset name: in the readers' errors and in "data.root must be set"
EXPECTED_LAYOUTS = {
    "cub200": "the CUB_200_2011 folder with images.txt, image_class_labels.txt, "
    "train_test_split.txt and images/",
    "cars": "torchvision's stanford_cars layout: devkit/cars_meta.mat, "
    "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/ and cars_test/",
    "aircraft": "fgvc-aircraft-2013b/data/ with variants.txt, "
    "images_variant_{train,val,test}.txt and images/",
    "imagefolder": "root/train/<class>/<image> and root/val/<class>/<image>",
}


@dataclass(frozen=True)
class LayoutListing:
    """A dataset's class folder names (sorted order == label order) and its labelled images."""

    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    val: tuple[tuple[Path, int], ...]

    def __post_init__(self) -> None:
        if list(self.classes) != sorted(self.classes) or len(set(self.classes)) != len(
            self.classes
        ):
            raise DataError("class folder names must be unique and sorted in label order")
        for split_name, samples in (("train", self.train), ("val", self.val)):
            present = {label for _, label in samples}
            outside = sorted(label for label in present if not 0 <= label < len(self.classes))
            if outside:
                raise DataError(
                    f"{split_name} split has labels {outside} outside [0, {len(self.classes)})"
                )
            empty = [name for label, name in enumerate(self.classes) if label not in present]
            if empty:
                raise DataError(
                    f"{split_name} split has no images for classes {empty}; every class needs "
                    "at least one image in both splits for an image_folder dataset"
                )


class UnreadableImagesError(DataError):
    """Images that cannot be opened and decoded: one line with the first and the fix, every bad
    path in ``paths`` and, one per line, in ``details``."""

    def __init__(self, problems: Sequence[tuple[Path, str]]) -> None:
        self.problems = list(problems)
        self.paths = [path for path, _ in problems]
        path, reason = self.problems[0]
        more = f" and {len(self.problems) - 1} more" if len(self.problems) > 1 else ""
        super().__init__(
            f"{len(problems)} unreadable image(s): {path} ({reason}){more}; fix or remove them, "
            "or skip them with a warning: ++data.skip_unreadable=true",
            details=[f"  {path}: {reason}" for path, reason in problems],
        )


def _decode_problem(path: Path) -> str | None:
    """None when ``path`` opens and fully decodes with PIL, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(error).__name__}: {error}"
    return None


def verify_images(
    paths: Iterable[Path], progress: bool = True, skip_unreadable: bool = False
) -> list[Path]:
    """Open and decode every image; raise :class:`UnreadableImagesError` listing all bad paths.

    Run once before training so a missing or corrupt file is reported up front, not mid-epoch.
    With ``skip_unreadable`` the bad paths are returned, with a warning naming them, instead.
    """
    path_list = [Path(path) for path in paths]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(
            tqdm(
                pool.map(_decode_problem, path_list),
                total=len(path_list),
                desc="checking images",
                unit="img",
                disable=not progress,
            )
        )
    problems = [(path, reason) for path, reason in zip(path_list, reasons, strict=True) if reason]
    if problems and not skip_unreadable:
        raise UnreadableImagesError(problems)
    if problems:
        warn_skipped([path for path, _ in problems])
    return [path for path, _ in problems]


def warn_skipped(paths: Sequence[Path | str]) -> None:
    """Warn that ``paths`` are left out of the data because they are unreadable."""
    shown = ", ".join(str(path) for path in paths[:5])
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    warnings.warn(
        f"data.skip_unreadable: leaving out {len(paths)} unreadable image(s): {shown}{more}",
        UserWarning,
        stacklevel=2,
    )


def _folder_names(names: Sequence[str]) -> tuple[str, ...]:
    """Filesystem-safe class folder names whose sorted order equals the label order."""
    width = max(3, len(str(len(names) - 1)))
    return tuple(
        f"{label:0{width}d}_{_UNSAFE_CHARACTERS.sub('_', name).strip('_') or 'class'}"
        for label, name in enumerate(names)
    )


def _require(path: Path, layout: str, expected: str) -> Path:
    if not path.exists():
        raise MissingDataError(f"{layout} layout is incomplete: missing {path} ({expected})")
    return path


def _read_rows(path: Path, columns: int) -> list[list[str]]:
    """Non-empty lines of a whitespace-separated text file, split into ``columns`` fields."""
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=columns - 1)
        if len(fields) != columns:
            raise DataError(
                f"{path}:{line_number}: expected {columns} fields, got {line.strip()!r}"
            )
        rows.append(fields)
    return rows


def _integer(text: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}: expected an integer, got {text!r}") from None


def _existing_root(root: Path) -> Path:
    resolved = Path(root).expanduser().resolve()
    if not resolved.is_dir():
        raise MissingDataError(f"dataset root {resolved} does not exist or is not a directory")
    return resolved


def _locate(root: Path, subfolder: str) -> Path:
    """``root/subfolder`` when the user pointed at its parent, else ``root`` itself."""
    resolved = _existing_root(root)
    nested = resolved / subfolder
    return nested if nested.is_dir() else resolved


def read_cub200(root: Path) -> LayoutListing:
    """CUB-200-2011 (``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
    ``images/``); the official test split becomes ``val``. ``root`` may also be its parent."""
    base = _locate(root, "CUB_200_2011")
    layout = "CUB-200-2011"
    expected = f"expected {EXPECTED_LAYOUTS['cub200']}"
    images_file = _require(base / "images.txt", layout, expected)
    labels_file = _require(base / "image_class_labels.txt", layout, expected)
    split_file = _require(base / "train_test_split.txt", layout, expected)
    image_dir = _require(base / "images", layout, expected)

    relative_paths = {_integer(i, images_file): p for i, p in _read_rows(images_file, 2)}
    class_ids = {
        _integer(i, labels_file): _integer(c, labels_file) for i, c in _read_rows(labels_file, 2)
    }
    is_train = {
        _integer(i, split_file): _integer(t, split_file) == 1 for i, t in _read_rows(split_file, 2)
    }
    for name, table in (("image_class_labels.txt", class_ids), ("train_test_split.txt", is_train)):
        missing = sorted(set(relative_paths) - set(table))
        if missing:
            raise DataError(f"{base / name} has no entry for image ids {missing[:10]}")

    sorted_ids = sorted({class_ids[image_id] for image_id in relative_paths})
    label_of = {class_id: label for label, class_id in enumerate(sorted_ids)}
    readable_names: dict[int, str] = {}
    for image_id, relative in relative_paths.items():
        parent = Path(relative).parent.name
        readable_names.setdefault(class_ids[image_id], re.sub(r"^\d+\.", "", parent) or parent)
    classes = _folder_names([readable_names[class_id] for class_id in sorted_ids])
    train, val = [], []
    for image_id, relative in sorted(relative_paths.items()):
        sample = (image_dir / relative, label_of[class_ids[image_id]])
        (train if is_train[image_id] else val).append(sample)
    return LayoutListing(classes, tuple(train), tuple(val))


def _load_mat_records(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    return np.atleast_1d(loadmat(path, squeeze_me=True)["annotations"])


def read_stanford_cars(root: Path) -> LayoutListing:
    """Stanford Cars as torchvision expects it (``stanford_cars/devkit/cars_train_annos.mat``,
    ``cars_test_annos_withlabels.mat``, ``cars_train/``, ``cars_test/``); test becomes ``val``."""
    from scipy.io import loadmat

    base = _locate(root, "stanford_cars")
    layout = "Stanford Cars"
    expected = f"expected {EXPECTED_LAYOUTS['cars']}"
    meta_file = _require(base / "devkit" / "cars_meta.mat", layout, expected)
    split_sources = {
        "train": (
            _require(base / "devkit" / "cars_train_annos.mat", layout, expected),
            _require(base / "cars_train", layout, expected),
        ),
        "val": (
            _require(base / "cars_test_annos_withlabels.mat", layout, expected),
            _require(base / "cars_test", layout, expected),
        ),
    }
    class_names = np.atleast_1d(loadmat(meta_file, squeeze_me=True)["class_names"])
    names = [str(name) for name in class_names]
    samples: dict[str, list[tuple[Path, int]]] = {}
    for split_name, (annotations_file, image_dir) in split_sources.items():
        samples[split_name] = []
        for record in _load_mat_records(annotations_file):
            class_number = int(record["class"])
            if not 1 <= class_number <= len(names):
                raise DataError(
                    f"{annotations_file}: class {class_number} outside 1..{len(names)} "
                    f"(the classes in {meta_file})"
                )
            samples[split_name].append((image_dir / str(record["fname"]), class_number - 1))
    return LayoutListing(_folder_names(names), tuple(samples["train"]), tuple(samples["val"]))


def read_fgvc_aircraft(root: Path) -> LayoutListing:
    """FGVC-Aircraft 2013b at variant level (``fgvc-aircraft-2013b/data/...``); ``train`` +
    ``val`` lists become ``train`` and the ``test`` list becomes ``val`` (the usual protocol)."""
    base = _locate(root, "fgvc-aircraft-2013b") / "data"
    layout = "FGVC-Aircraft"
    expected = f"expected {EXPECTED_LAYOUTS['aircraft']}"
    variants = [
        line.strip()
        for line in _require(base / "variants.txt", layout, expected).read_text().splitlines()
        if line.strip()
    ]
    label_of = {name: label for label, name in enumerate(variants)}
    image_dir = _require(base / "images", layout, expected)
    split_files = {
        "train": ("images_variant_train.txt", "images_variant_val.txt"),
        "val": ("images_variant_test.txt",),
    }
    samples: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    for split_name, file_names in split_files.items():
        for file_name in file_names:
            list_file = _require(base / file_name, layout, expected)
            for image_name, variant in _read_rows(list_file, 2):
                if variant not in label_of:
                    raise DataError(f"{list_file}: variant {variant!r} is not in variants.txt")
                samples[split_name].append((image_dir / f"{image_name}.jpg", label_of[variant]))
    return LayoutListing(_folder_names(variants), tuple(samples["train"]), tuple(samples["val"]))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in class_dir.rglob("*")
        if path.is_file() and path.name.lower().endswith(IMG_EXTENSIONS)
    )


def read_imagefolder(root: Path) -> LayoutListing:
    """A generic ``root/train/<class>/...`` and ``root/val/<class>/...`` tree with equal classes."""
    base = _existing_root(root)
    layout = "ImageFolder"
    expected = f"expected {EXPECTED_LAYOUTS['imagefolder']}"
    split_dirs = {split: _require(base / split, layout, expected) for split in ("train", "val")}
    class_sets = {
        split: sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        for split, folder in split_dirs.items()
    }
    if class_sets["train"] != class_sets["val"]:
        only_train = sorted(set(class_sets["train"]) - set(class_sets["val"]))
        only_val = sorted(set(class_sets["val"]) - set(class_sets["train"]))
        raise DataError(
            f"{base}: train and val must have the same class folders; only in train: "
            f"{only_train}, only in val: {only_val}"
        )
    classes = tuple(class_sets["train"])
    if not classes:
        raise DataError(f"{split_dirs['train']} has no class folders ({expected})")
    samples = {
        split: tuple(
            (path, label)
            for label, name in enumerate(classes)
            for path in _image_files(folder / name)
        )
        for split, folder in split_dirs.items()
    }
    return LayoutListing(classes, samples["train"], samples["val"])


LAYOUT_READERS: dict[str, Callable[[Path], LayoutListing]] = {
    "cub200": read_cub200,
    "cars": read_stanford_cars,
    "aircraft": read_fgvc_aircraft,
    "imagefolder": read_imagefolder,
}


def _link_split(
    split_dir: Path, classes: Sequence[str], samples: Sequence[tuple[Path, int]]
) -> None:
    for name in classes:
        (split_dir / name).mkdir(parents=True)
    taken: set[Path] = set()
    for source, label in samples:
        link = split_dir / classes[label] / source.name
        copy_number = 1
        while link in taken:
            link = link.with_name(f"{source.stem}_{copy_number}{source.suffix}")
            copy_number += 1
        taken.add(link)
        link.symlink_to(source.resolve())


def prepare_layout(
    name: str,
    root: Path,
    cache_dir: Path,
    progress: bool = True,
    skip_unreadable: bool = False,
) -> tuple[Path, Path]:
    """Read layout ``name`` from ``root``, check its images once, and return the (train, val)
    folders of a cached symlink tree under ``cache_dir/name/<key>``.

    With ``skip_unreadable`` the tree leaves unreadable images out, with a warning at each call.
    """
    if name not in LAYOUT_READERS:
        raise DataError(f"unknown layout {name!r}; allowed: {sorted(LAYOUT_READERS)}")
    listing = LAYOUT_READERS[name](Path(root))
    description = {
        "layout": name,
        "version": LAYOUT_VERSION,
        "classes": list(listing.classes),
        "train": [(str(path), label) for path, label in listing.train],
        "val": [(str(path), label) for path, label in listing.val],
    }
    if skip_unreadable:
        description["skip_unreadable"] = True
    manifest = {
        "dataset": name,
        "root": str(Path(root).expanduser().resolve()),
        "classes": description["classes"],
        "counts": {"train": len(listing.train), "val": len(listing.val)},
    }

    def build(staging: Path) -> None:
        paths = [path for path, _ in listing.train + listing.val]
        skipped = set(verify_images(paths, progress=progress, skip_unreadable=skip_unreadable))
        kept = LayoutListing(
            listing.classes,
            tuple(sample for sample in listing.train if sample[0] not in skipped),
            tuple(sample for sample in listing.val if sample[0] not in skipped),
        )
        _link_split(staging / "train", kept.classes, kept.train)
        _link_split(staging / "val", kept.classes, kept.val)
        manifest["skipped"] = sorted(str(path) for path in skipped)

    target = cached_directory(Path(cache_dir) / name, stable_key(description), build, manifest)
    skipped_before = read_marker(target).get("skipped", [])
    if skipped_before and not manifest.get("skipped"):
        warn_skipped(skipped_before)
    return target / "train", target / "val"

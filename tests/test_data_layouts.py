"""FGVR layouts on tiny fabricated trees: parsing, torchvision parity, errors, symlink caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat
from torchvision.datasets import FGVCAircraft, ImageFolder, StanfordCars

from solo_fgsynth.data import layouts, prepare_data_cfg
from solo_fgsynth.data._cache import COMPLETE_MARKER
from solo_fgsynth.data.layouts import (
    UnreadableImagesError,
    prepare_layout,
    read_cub200,
    read_fgvc_aircraft,
    read_imagefolder,
    read_stanford_cars,
    verify_images,
)


def _write_image(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade, 2 * shade % 256, 50)).save(path)
    return path


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _make_cub(root: Path) -> Path:
    """Two species, three images each; the third image of each is in the test split."""
    base = root / "CUB_200_2011"
    folders = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, splits = [], [], []
    for image_id in range(1, 7):
        class_id = 1 + (image_id - 1) // 3
        relative = f"{folders[class_id - 1]}/bird_{image_id}.jpg"
        _write_image(base / "images" / relative, shade=image_id)
        images.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {class_id}")
        splits.append(f"{image_id} {0 if image_id % 3 == 0 else 1}")
    _write_lines(base / "images.txt", images)
    _write_lines(base / "image_class_labels.txt", labels)
    _write_lines(base / "train_test_split.txt", splits)
    return base


def _cars_annotations(entries: list[tuple[int, str]]) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    records = np.empty(len(entries), dtype=[(name, "O") for name in fields])
    for row, (class_number, fname) in enumerate(entries):
        records[row] = (1, 1, 3, 3, class_number, fname)
    return records


def _make_cars(root: Path) -> Path:
    """torchvision's stanford_cars layout with the .mat files in the devkit's format."""
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012"], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    train = [(1, "00001.jpg"), (2, "00002.jpg"), (2, "00003.jpg")]
    test = [(2, "00001.jpg"), (1, "00002.jpg")]
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _cars_annotations(train)})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _cars_annotations(test)})
    for folder, entries in (("cars_train", train), ("cars_test", test)):
        for class_number, fname in entries:
            _write_image(base / folder / fname, shade=class_number)
    return base


def _make_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    _write_lines(data / "variants.txt", ["707-320", "F/A-18", "Cessna 172"])
    lists = {
        "train": ["0001 707-320", "0002 F/A-18", "0003 Cessna 172"],
        "val": ["0004 F/A-18"],
        "test": ["0005 707-320", "0006 F/A-18", "0007 Cessna 172"],
    }
    for split, lines in lists.items():
        _write_lines(data / f"images_variant_{split}.txt", lines)
        for line in lines:
            _write_image(data / "images" / f"{line.split()[0]}.jpg")
    return data


def _make_imagefolder(root: Path) -> Path:
    for split in ("train", "val"):
        for shade, name in enumerate(("cat", "dog")):
            _write_image(root / split / name / "a.png", shade)
    _write_image(root / "train" / "cat" / "nested" / "a.png", 9)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_cub200_tree_loads_with_imagefolder(tmp_path: Path) -> None:
    base = _make_cub(tmp_path / "raw")
    train_dir, val_dir = prepare_layout("cub200", tmp_path / "raw", tmp_path / "cache", False)
    train, val = ImageFolder(str(train_dir)), ImageFolder(str(val_dir))
    assert train.classes == ["000_Black_footed_Albatross", "001_Laysan_Albatross"]
    assert val.classes == train.classes
    assert sorted(train.targets) == [0, 0, 1, 1]
    assert sorted(val.targets) == [0, 1]
    link = train_dir / "001_Laysan_Albatross" / "bird_4.jpg"
    assert link.is_symlink()
    assert Path(os.readlink(link)) == base / "images" / "002.Laysan_Albatross" / "bird_4.jpg"
    assert (train_dir.parent / COMPLETE_MARKER).is_file()
    assert train_dir.parent.parent == tmp_path / "cache" / "cub200"


def test_cub200_root_may_be_the_dataset_folder_or_its_parent(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    assert read_cub200(base) == read_cub200(tmp_path)


@pytest.mark.parametrize(
    "missing", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "images"]
)
def test_incomplete_cub200_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    base = _make_cub(tmp_path)
    target = base / missing
    if target.is_dir():
        target.rename(base / "moved_away")
    else:
        target.unlink()
    message = f"CUB-200-2011 layout is incomplete: missing .*/{missing} "
    with pytest.raises(FileNotFoundError, match=message):
        read_cub200(base)


def test_stanford_cars_matches_torchvision(tmp_path: Path) -> None:
    base = _make_cars(tmp_path)
    listing = read_stanford_cars(tmp_path)
    assert listing.classes == (
        "000_AM_General_Hummer_SUV_2000",
        "001_Ram_C_V_Cargo_Van_Minivan_2012",
    )
    for split, samples in (("train", listing.train), ("test", listing.val)):
        reference = StanfordCars(str(tmp_path), split=split)._samples
        assert [(str(path), label) for path, label in samples] == reference
    assert listing.val[0] == (base / "cars_test" / "00001.jpg", 1)


def test_stanford_cars_without_test_labels_names_the_file(tmp_path: Path) -> None:
    (_make_cars(tmp_path) / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*/cars_test_annos_withlabels\.mat"):
        read_stanford_cars(tmp_path)


def test_fgvc_aircraft_matches_torchvision_train_plus_val_and_test(tmp_path: Path) -> None:
    _make_aircraft(tmp_path)
    listing = read_fgvc_aircraft(tmp_path)
    assert listing.classes == ("000_707-320", "001_F_A-18", "002_Cessna_172")
    reference_train = [
        (file, label)
        for split in ("train", "val")
        for file, label in zip(
            FGVCAircraft(str(tmp_path), split=split)._image_files,
            FGVCAircraft(str(tmp_path), split=split)._labels,
            strict=True,
        )
    ]
    test = FGVCAircraft(str(tmp_path), split="test")
    assert [(str(path), label) for path, label in listing.train] == reference_train
    assert [(str(path), label) for path, label in listing.val] == list(
        zip(test._image_files, test._labels, strict=True)
    )


def test_fgvc_aircraft_unknown_variant_and_missing_list(tmp_path: Path) -> None:
    data = _make_aircraft(tmp_path)
    _write_lines(data / "images_variant_val.txt", ["0004 Concorde"])
    with pytest.raises(ValueError, match=r"images_variant_val\.txt: variant 'Concorde' is not in"):
        read_fgvc_aircraft(tmp_path)
    _write_lines(data / "images_variant_val.txt", ["0004 F/A-18"])
    (data / "images_variant_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*/images_variant_test\.txt"):
        read_fgvc_aircraft(tmp_path)


def test_imagefolder_keeps_class_names_and_finds_nested_images(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "raw")
    listing = read_imagefolder(root)
    assert listing.classes == ("cat", "dog")
    assert [(path.relative_to(root).as_posix(), label) for path, label in listing.train] == [
        ("train/cat/a.png", 0),
        ("train/cat/nested/a.png", 0),
        ("train/dog/a.png", 1),
    ]
    train_dir, _ = prepare_layout("imagefolder", root, tmp_path / "cache", progress=False)
    assert sorted(path.name for path in (train_dir / "cat").iterdir()) == ["a.png", "a_1.png"]
    assert sorted(ImageFolder(str(train_dir)).targets) == [0, 0, 1]


def test_imagefolder_with_different_class_folders_is_rejected(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path)
    (root / "val" / "dog" / "a.png").rename(root / "val" / "dog" / "a.jpeg")
    (root / "val" / "dog").rename(root / "val" / "wolf")
    message = r"only in train: \['dog'\], only in val: \['wolf'\]"
    with pytest.raises(ValueError, match=message):
        read_imagefolder(root)


def test_a_class_without_val_images_is_rejected(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path)
    (root / "val" / "dog" / "a.png").unlink()
    with pytest.raises(ValueError, match=r"val split has no images for classes \['dog'\]"):
        read_imagefolder(root)


def test_verify_images_lists_every_bad_path(tmp_path: Path) -> None:
    good = _write_image(tmp_path / "good.png")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(noise).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 definitely not a jpeg")
    missing = tmp_path / "missing.jpg"
    verify_images([good], progress=False)
    with pytest.raises(UnreadableImagesError, match=r"3 unreadable image\(s\)") as error:
        verify_images([good, truncated, garbage, missing], progress=False)
    assert error.value.paths == [truncated, garbage, missing]
    assert str(truncated) in str(error.value)  # the one line names the first and the fix
    assert "++data.skip_unreadable=true" in str(error.value)
    listed = "\n".join(error.value.details)  # printed above it, one bad path a line
    assert len(error.value.details) == 3
    for path in (truncated, garbage, missing):
        assert str(path) in listed
    assert str(good) not in listed + str(error.value)


def test_corrupt_image_stops_the_build_before_any_tree_is_trusted(tmp_path: Path) -> None:
    base = _make_cub(tmp_path / "raw")
    corrupt = base / "images" / "001.Black_footed_Albatross" / "bird_2.jpg"
    corrupt.write_bytes(b"broken")
    with pytest.raises(UnreadableImagesError, match=r"bird_2\.jpg") as error:
        prepare_layout("cub200", base, tmp_path / "cache", progress=False)
    assert error.value.paths == [corrupt]
    assert list((tmp_path / "cache" / "cub200").iterdir()) == []


def test_complete_tree_is_reused_without_checking_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _make_cub(tmp_path / "raw")
    first = prepare_layout("cub200", base, tmp_path / "cache", progress=False)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete tree was rebuilt")

    monkeypatch.setattr(layouts, "verify_images", must_not_run)
    assert prepare_layout("cub200", tmp_path / "raw", tmp_path / "cache", progress=False) == first


def test_unknown_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown layout 'inat'; allowed: \['aircraft', 'cars'"):
        prepare_layout("inat", tmp_path, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"dataset root .*/nowhere does not exist"):
        read_cub200(tmp_path / "nowhere")


def test_prepare_data_cfg_converts_an_fgvr_layout(tmp_path: Path) -> None:
    _make_aircraft(tmp_path / "raw")
    data = OmegaConf.create({"dataset": "aircraft", "root": str(tmp_path / "raw")})
    OmegaConf.set_struct(data, True)
    prepare_data_cfg(data, tmp_path / "cache", progress=False)
    assert data.dataset == "custom"
    assert data.source_dataset == "aircraft"
    assert (data.format, data.no_labels, data.root) == (
        "image_folder",
        False,
        str(tmp_path / "raw"),
    )
    assert len(ImageFolder(data.train_path)) == 4
    assert len(ImageFolder(data.val_path)) == 3
    assert Path(data.train_path).parent.parent == tmp_path / "cache" / "aircraft"


def test_prepare_data_cfg_requires_a_root(tmp_path: Path) -> None:
    for node in ({"dataset": "cars"}, {"dataset": "cars", "root": "???"}):
        with pytest.raises(ValueError, match=r"data\.root must be set .* the cars dataset"):
            prepare_data_cfg(OmegaConf.create(node), tmp_path)

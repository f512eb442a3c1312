"""``solo-fgsynth doctor``: the report a bug needs, and each blocking problem with its fix."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from solo_fgsynth import doctor
from solo_fgsynth.cli import main
from solo_fgsynth.launch.compat import WORKAROUNDS


@pytest.fixture
def writable_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    folders = {"SOLO_FGSYNTH_DATA_DIR": tmp_path / "data", "SOLO_FGSYNTH_CACHE": tmp_path / "zoo"}
    for variable, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(variable, str(folder))
    return folders


@pytest.mark.solo
def test_doctor_reports_versions_workarounds_and_folders_and_exits_0(
    writable_folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for package in ("lightning", "torchmetrics", "timm"):
        assert f"{package:<13}{version(package)}" in lines
    assert any(line.startswith(f"solo-learn   {version('solo-learn')} at ") for line in lines)
    assert any(line.startswith("torch        ") for line in lines)
    for workaround in WORKAROUNDS:
        assert any(f" {workaround.name} (" in line for line in lines)
    data = writable_folders["SOLO_FGSYNTH_DATA_DIR"]
    assert f"data folder  {data} (writable; $SOLO_FGSYNTH_DATA_DIR)" in lines
    assert any(line.startswith("zoo manifest ") and "entries)" in line for line in lines)
    assert lines[-1] == "no blocking problem found"


def test_doctor_names_an_unusable_data_folder_and_the_variable_that_fixes_it(
    writable_folders: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(blocker / "data"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"  problem: data folder {blocker / 'data'}: {blocker} is not a folder\n" in out
    assert "  fix:     export SOLO_FGSYNTH_DATA_DIR=A_WRITABLE_FOLDER\n" in out


def test_doctor_without_solo_learn_exits_1_with_the_install_fix(
    writable_folders: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(doctor, "solo_available", lambda: False)
    assert main(["doctor"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "solo-learn   not installed" in lines
    assert lines[-2:] == [
        "  problem: solo-learn is not installed",
        "  fix:     install solo-learn with the lines of README 'Installing solo-learn'",
    ]


def test_gpu_only_configs_are_listed_by_folder_only_without_cuda(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    files = {
        "pretrain/cub200/byol.yaml": "accelerator: gpu\ndevices: [0]\n",
        "pretrain/cub200/simclr.yaml": "accelerator: auto\nprecision: 16-mixed\n",
        "pretrain/fgmarks/byol.yaml": "accelerator: auto\nprecision: 32\n",
        "knn/cub200/knn.yaml": "accelerator: cuda\n",
        "benchmark/v1/quick.yaml": "accelerator: gpu\n",  # not a launcher config
    }
    for name, text in files.items():
        (scripts / name).parent.mkdir(parents=True, exist_ok=True)
        (scripts / name).write_text(text)
    assert doctor.gpu_only_configs(scripts, cuda=False) == {
        "scripts/knn/cub200": ["knn"],
        "scripts/pretrain/cub200": ["byol", "simclr"],
    }
    assert doctor.gpu_only_configs(scripts, cuda=True) == {}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="lists them only without CUDA")
def test_doctor_lists_the_shipped_gpu_configs_with_the_cpu_overrides(
    writable_folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    main(["doctor"])
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(
        "configs      need a GPU (none visible); add accelerator=cpu devices=1 precision=32:"
    )
    listed = lines[start + 1 : start + 9]
    assert any(line.strip().startswith("scripts/pretrain/cub200: byol, ") for line in listed)
    assert not any("fgmarks" in line for line in listed)

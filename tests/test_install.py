"""A regular install: the wheel carries configs, presets, manifest and small weights, and they
resolve from any working directory; a user's own config folder or manifest still wins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from solo_fgsynth.zoo.manifest import (
    DEFAULT_MANIFEST,
    PACKAGED_WEIGHTS_DIR,
    PACKAGED_WEIGHTS_LIMIT_BYTES,
    Manifest,
)

REPO = Path(__file__).resolve().parents[1]
WHEEL_LIMIT_BYTES = 20 * 10**6

# Run in the installed copy from an empty directory: every preset's cells and every config
# compose, and every weight the manifest ships inside the package is there with its sha256 and
# loads with SOLO_FGSYNTH_OFFLINE=1 and an empty cache.
RESOLVE_EVERYTHING = """
import hashlib, json, sys
from pathlib import Path
import solo_fgsynth
from solo_fgsynth.benchmark.runner import _preset_path, load_preset, plan_cells
from solo_fgsynth.benchmark.fgvr import for_dataset
from solo_fgsynth.launch import load_config
from solo_fgsynth.resources import scripts_dir
from solo_fgsynth.zoo import Manifest, load

package = Path(solo_fgsynth.__file__).parent
report = {"package": str(package), "presets": {}, "configs": [], "weights": []}
for preset in sorted(p.stem for p in (scripts_dir() / "benchmark").glob("*.yaml")):
    spec = load_preset(_preset_path(preset))
    if "{dataset}" in spec["config_path"]:
        spec = for_dataset(spec, spec["datasets"][0], "/data")
    cells = plan_cells(spec, [0], [])
    for cell in cells:
        load_config(cell["config_path"], cell["config_name"], [])
    report["presets"][preset] = sorted({cell["config_path"] for cell in cells})
for stage in ("pretrain", "linear", "knn"):
    for folder in sorted((scripts_dir() / stage).iterdir()):
        for config in sorted(folder.glob("*.yaml")):
            load_config(f"scripts/{stage}/{folder.name}", config.stem)
            report["configs"].append(f"{stage}/{folder.name}/{config.stem}")
zoo = Manifest.load()
for entry in zoo.entries:
    for url in zoo.source_urls(entry):
        local = Path(url.removeprefix("file://"))
        if url.startswith("file://") and package in local.parents:
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            loaded = not load(entry.name).training
            report["weights"].append([entry.name, digest == entry.sha256, loaded])
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of this working tree (links kept, big repo weights left out)."""
    source = tmp_path_factory.mktemp("source") / "solo-fgsynth"
    ignore = shutil.ignore_patterns(
        ".git", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", "*.safetensors"
    )
    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    for shipped in PACKAGED_WEIGHTS_DIR.glob("*.safetensors"):
        shutil.copy2(shipped, source / "solo_fgsynth" / "zoo" / "weights" / shipped.name)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-q", "-w", str(out), str(source)], check=True, timeout=600)
    (built,) = out.glob("solo_fgsynth-*.whl")
    return built


def test_shipped_weights_stay_under_the_limit_and_the_wheel_under_20_mb(wheel: Path) -> None:
    for weights in PACKAGED_WEIGHTS_DIR.glob("*.safetensors"):
        assert weights.stat().st_size <= PACKAGED_WEIGHTS_LIMIT_BYTES, weights
    assert wheel.stat().st_size < WHEEL_LIMIT_BYTES


def test_installed_wheel_resolves_every_preset_config_and_shipped_weight_from_elsewhere(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
    subprocess.run([*pip_install, "--target", str(target), str(wheel)], check=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "SOLO_FGSYNTH_DATA_DIR": str(tmp_path),
        "SOLO_FGSYNTH_CACHE": str(tmp_path / "empty-zoo-cache"),
        "SOLO_FGSYNTH_OFFLINE": "1",
    }
    env.pop("SOLO_FGSYNTH_MANIFEST", None)
    completed = subprocess.run(
        [sys.executable, "-c", RESOLVE_EVERYTHING],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.splitlines()[-1])
    package = Path(report["package"])
    assert package == target / "solo_fgsynth"
    presets = {p.stem for p in (REPO / "scripts" / "benchmark").glob("*.yaml")}
    assert set(report["presets"]) == presets
    for folders in report["presets"].values():
        assert all(Path(folder).is_relative_to(package) for folder in folders)
    configs = {
        f"{path.parent.parent.name}/{path.parent.name}/{path.stem}"
        for stage in ("pretrain", "linear", "knn")
        for path in (REPO / "scripts" / stage).glob("*/*.yaml")
    }
    assert set(report["configs"]) == configs
    shipped = {
        entry.name
        for entry in Manifest.load(DEFAULT_MANIFEST).entries
        if any(not url.startswith(("http", "file", "../")) for url in entry.urls)
    }
    assert {name for name, _, _ in report["weights"]} == shipped
    assert all(matches and loaded for _, matches, loaded in report["weights"])


def test_a_users_own_config_folder_wins_over_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from solo_fgsynth.launch import load_config

    own = tmp_path / "scripts" / "pretrain" / "fgmarks"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text("name: my-own\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("scripts/pretrain/fgmarks", "mine").name == "my-own"
    monkeypatch.chdir(tmp_path / "scripts")
    assert load_config("scripts/pretrain/fgmarks", "byol").method == "byol"  # the packaged one


def test_manifest_from_the_environment_file_or_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(DEFAULT_MANIFEST.read_text())
    data["entries"] = data["entries"][:1]
    data["entries"][0]["urls"] = ["weights/one.safetensors"]
    own = tmp_path / "lab" / "manifest.json"
    own.parent.mkdir()
    own.write_text(json.dumps(data))
    monkeypatch.setenv("SOLO_FGSYNTH_MANIFEST", str(own))
    zoo = Manifest.load()
    assert zoo.path == own and len(zoo.entries) == 1
    assert zoo.source_urls(zoo.entries[0]) == [(own.parent / "weights/one.safetensors").as_uri()]

    served = Manifest(None, zoo.entries, url="https://lab.example/zoo/manifest.json")
    assert served.source_urls(served.entries[0]) == [
        "https://lab.example/zoo/weights/one.safetensors"
    ]


def test_export_puts_weights_in_the_package_only_under_the_size_limit(tmp_path: Path) -> None:
    from solo_fgsynth.zoo.export import REPO_ZOO_DIR, default_weights_dir

    limit = PACKAGED_WEIGHTS_LIMIT_BYTES
    assert default_weights_dir(DEFAULT_MANIFEST, limit) == PACKAGED_WEIGHTS_DIR
    assert default_weights_dir(DEFAULT_MANIFEST, limit + 1) == REPO_ZOO_DIR / "weights"
    assert default_weights_dir(tmp_path / "manifest.json", 1) == tmp_path / "weights"

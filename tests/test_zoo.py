"""Zoo manifest, export of solo-learn checkpoints, loading, mismatch errors and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision
from PIL import Image
from torch import nn

from solo_fgsynth import zoo
from solo_fgsynth.checkpoints import CheckpointError
from solo_fgsynth.cli import main as solo_fgsynth_main
from solo_fgsynth.errors import DEBUG_ENV
from solo_fgsynth.zoo.export import REPO_ZOO_DIR
from solo_fgsynth.zoo.manifest import DEFAULT_MANIFEST, BackboneSpec, Manifest

NAME = "fgsynth-byol-resnet18-fgmarks"
RECIPE = {
    "name": "fgsynth-byol-fgmarks",
    "method": "fgsynth",
    "backbone": {"name": "resnet18", "kwargs": {}},
    "method_kwargs": {"base": "byol", "proj_hidden_dim": 32, "var_fraction": 0.25},
    "data": {"dataset": "fgmarks", "format": "image_folder"},
    "augmentations": [{"crop_size": 32, "num_crops": 1}, {"crop_size": 32, "num_crops": 1}],
    "optimizer": {"name": "lars", "batch_size": 16, "lr": 1.0},
    "max_epochs": 2,
    "wandb_run_id": None,
}


def zoo_main(argv: list[str]) -> int:
    """``solo-fgsynth zoo ARGV``, as the command line runs it (errors printed, exit code)."""
    return solo_fgsynth_main(["zoo", *argv])


def _solo_resnet18(cifar: bool = True) -> nn.Module:
    """A resnet18 backbone shaped as solo-learn builds it, with non-default weights."""
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    if cifar:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        model.maxpool = nn.Identity()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.1)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(7)
    return model


def _write_checkpoint(directory: Path, backbone: nn.Module, recipe: dict | None = None) -> Path:
    """A checkpoint laid out like solo-learn's Checkpointer output, with args.json beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state |= {f"momentum_backbone.{k}": v.clone() + 1 for k, v in backbone.state_dict().items()}
    state |= {"projector.0.weight": torch.randn(32, 512), "classifier.weight": torch.randn(5, 512)}
    ckpt = directory / "fgsynth-byol-fgmarks-offline-ab12cd34-ep=1.ckpt"
    torch.save({"epoch": 1, "global_step": 20, "state_dict": state}, ckpt)
    (directory / "args.json").write_text(json.dumps(recipe or RECIPE))
    return ckpt


def _empty_manifest(path: Path) -> Path:
    path.write_text(json.dumps({"schema_version": 1, "entries": []}))
    return path


def _publish_file(
    tmp_path: Path, state: dict[str, torch.Tensor], spec: BackboneSpec, **meta: str
) -> Path:
    """A manifest whose one entry points at a hand-written safetensors file."""
    weights = tmp_path / "weights" / "w.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, str(weights), metadata=meta or None)
    data = weights.read_bytes()
    entry = {
        "name": NAME,
        "method": "byol",
        "base_method": None,
        "backbone": spec.to_dict(),
        "dataset": "fgmarks",
        "crop_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "head": [],
        "metrics": {},
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "license": "MIT",
        "urls": ["weights/w.safetensors"],
        "date": "2025-01-01",
        "recipe": {},
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    return manifest


@pytest.fixture
def exported(tmp_path: Path) -> tuple[nn.Module, zoo.ExportResult]:
    backbone = _solo_resnet18()
    ckpt = _write_checkpoint(tmp_path / "run", backbone)
    result = zoo.export_checkpoint(
        ckpt,
        name=NAME,
        metrics={"linear_top1": 61.25, "knn_top1": 55.5, "retrieval_map": 30.125},
        manifest=_empty_manifest(tmp_path / "manifest.json"),
    )
    return backbone, result


def test_packaged_manifest_is_valid_and_its_cards_are_current() -> None:
    packaged = Manifest.load()
    assert packaged.path == DEFAULT_MANIFEST
    for entry in packaged.entries:
        card = REPO_ZOO_DIR / "cards" / f"{entry.name}.md"
        assert card.read_text() == zoo.render_card(entry), "run: solo-fgsynth zoo cards"


def _malformed_manifest(path: Path) -> Path:
    path.write_text(json.dumps({"schema_version": 1, "entries": [{"name": "x"}]}))
    return path


def _http_only_manifest(path: Path) -> Path:
    entry = zoo.get_entry("byol-resnet18small-fgmarks", manifest=DEFAULT_MANIFEST).to_dict()
    entry["urls"] = ["http://127.0.0.1:9/never-fetched.safetensors"]
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    return path


@pytest.mark.parametrize(
    ("make_manifest", "name", "error_type"),
    [
        (lambda path: DEFAULT_MANIFEST, "byol-resnet18smal-fgmarks", zoo.UnknownModelError),
        (_malformed_manifest, "x", zoo.ManifestError),
        (_http_only_manifest, "byol-resnet18small-fgmarks", zoo.OfflineError),
    ],
    ids=["unknown-name", "malformed-manifest", "offline-without-cache"],
)
def test_load_raises_the_error_whose_message_is_the_cli_line(
    make_manifest: Callable[[Path], Path],
    name: str,
    error_type: type[zoo.ZooError],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = make_manifest(tmp_path / "manifest.json")
    cache = tmp_path / "cache"
    with pytest.raises(error_type) as error:
        zoo.load(name, manifest=manifest, cache=cache, offline=True)
    message = str(error.value)
    assert "\n" not in message
    args = ["download", name, "--manifest", str(manifest), "--cache-dir", str(cache), "--offline"]
    assert zoo_main(args) == 2
    assert capsys.readouterr().err == f"solo-fgsynth zoo download: error: {message}\n"


def test_a_python_caller_sees_its_call_and_the_message_not_the_zoo_internals() -> None:
    code = "from solo_fgsynth import zoo; zoo.load('nope')"
    env = {**os.environ, "PYTHONPATH": str(Path(zoo.__file__).resolve().parents[2])}
    env.pop(DEBUG_ENV, None)
    env.pop(zoo.MANIFEST_ENV, None)
    run = [sys.executable, "-c", code]
    plain = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    debug = subprocess.run(
        run, capture_output=True, text=True, env={**env, DEBUG_ENV: "1"}, timeout=300
    )
    message = f"unknown model 'nope'; available: {', '.join(zoo.list_models(DEFAULT_MANIFEST))}"
    for result in (plain, debug):
        assert result.returncode == 1
        assert (
            result.stderr.splitlines()[-1]
            == f"solo_fgsynth.zoo.errors.UnknownModelError: {message}"
        )
    frames = [line for line in plain.stderr.splitlines() if line.lstrip().startswith("File ")]
    assert len(frames) == 2 and frames[0].startswith('  File "<string>", line 1')
    assert "manifest.py" not in plain.stderr and "manifest.py" in debug.stderr


def test_list_of_an_empty_manifest_prints_a_helpful_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _empty_manifest(tmp_path / "manifest.json")
    assert zoo_main(["list", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "No pretrained weights are published yet" in out
    assert "solo-fgsynth zoo export CKPT --name NAME" in out


def test_export_records_file_hash_recipe_and_card(
    exported: tuple[nn.Module, zoo.ExportResult],
) -> None:
    _, result = exported
    entry = Manifest.load(result.manifest_path).get(NAME)
    data = result.weights_path.read_bytes()
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size_bytes == len(data)
    assert entry.recipe == RECIPE
    assert (entry.method, entry.base_method, entry.dataset, entry.crop_size) == (
        "fgsynth",
        "byol",
        "fgmarks",
        32,
    )
    assert entry.backbone == BackboneSpec("torchvision", "resnet18", cifar_stem=True)
    # the recipe names no normalisation: solo-learn's default, ImageNet's; no head in the file
    assert (entry.mean, entry.std, entry.head) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ())
    assert entry.metrics == {"linear_top1": 61.25, "knn_top1": 55.5, "retrieval_map": 30.125}
    assert entry.urls == ("weights/fgsynth-byol-resnet18-fgmarks.safetensors",)
    assert result.card_path.read_text() == zoo.render_card(entry)
    assert entry.sha256 in result.card_path.read_text()
    assert '"var_fraction": 0.25' in result.card_path.read_text()
    stored = safetensors.torch.load_file(str(result.weights_path))
    assert not any(key.startswith(("backbone.", "momentum_", "projector")) for key in stored)


def test_export_then_load_gives_identical_tensors(
    exported: tuple[nn.Module, zoo.ExportResult], tmp_path: Path
) -> None:
    backbone, result = exported
    model = zoo.load(NAME, manifest=result.manifest_path, cache=tmp_path / "cache")
    expected, loaded = backbone.state_dict(), model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.padding == (2, 2)
    backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), backbone(x))
    cached = zoo.fetch(NAME, manifest=result.manifest_path, cache=tmp_path / "cache")
    assert cached.read_bytes() == result.weights_path.read_bytes()


def test_load_without_pretrained_needs_no_file(
    exported: tuple[nn.Module, zoo.ExportResult], tmp_path: Path
) -> None:
    _, result = exported
    result.weights_path.unlink()
    model = zoo.load(NAME, pretrained=False, manifest=result.manifest_path, cache=tmp_path / "c")
    assert model.conv1.kernel_size == (3, 3)
    with pytest.raises(zoo.DownloadError, match="local file not found"):
        zoo.load(NAME, manifest=result.manifest_path, cache=tmp_path / "c")


def test_load_into_solo_fills_backbone_and_momentum_backbone(
    exported: tuple[nn.Module, zoo.ExportResult], tmp_path: Path
) -> None:
    backbone, result = exported
    method = nn.Module()
    method.backbone = _solo_resnet18()
    method.momentum_backbone = _solo_resnet18()
    zoo.load_into_solo(method, NAME, manifest=result.manifest_path, cache=tmp_path / "cache")
    for target in (method.backbone, method.momentum_backbone):
        for key, tensor in backbone.state_dict().items():
            assert torch.equal(target.state_dict()[key], tensor), key


def test_load_into_solo_checks_before_copying(
    exported: tuple[nn.Module, zoo.ExportResult], tmp_path: Path
) -> None:
    _, result = exported
    method = nn.Module()
    method.backbone = _solo_resnet18(cifar=False)
    before = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    with pytest.raises(zoo.WeightsMismatchError, match=r"conv1\.weight file \(64, 3, 3, 3\)"):
        zoo.load_into_solo(method, NAME, manifest=result.manifest_path, cache=tmp_path / "c")
    after = method.backbone.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    with pytest.raises(zoo.ZooError, match="has no 'backbone' module"):
        zoo.load_into_solo(nn.Linear(2, 2), NAME, manifest=result.manifest_path)


def test_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    state = _solo_resnet18(cifar=False).state_dict()
    manifest = _publish_file(tmp_path, state, BackboneSpec("torchvision", "resnet18", True))
    with pytest.raises(zoo.WeightsMismatchError) as error:
        zoo.load(NAME, manifest=manifest, cache=tmp_path / "cache")
    assert "conv1.weight file (64, 3, 7, 7) vs model (64, 3, 3, 3)" in str(error.value)
    assert "small-crop (cifar) stem" in str(error.value)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = dict(_solo_resnet18().state_dict())
    del state["layer4.1.bn2.weight"]
    state["head.weight"] = torch.zeros(3)
    manifest = _publish_file(tmp_path, state, BackboneSpec("torchvision", "resnet18", True))
    with pytest.raises(zoo.WeightsMismatchError) as error:
        zoo.load(NAME, manifest=manifest, cache=tmp_path / "cache")
    assert "missing keys: layer4.1.bn2.weight" in str(error.value)
    assert "unexpected keys: head.weight" in str(error.value)


def test_arch_mismatch_between_file_and_manifest(tmp_path: Path) -> None:
    state = _solo_resnet18().state_dict()
    manifest = _publish_file(
        tmp_path,
        state,
        BackboneSpec("torchvision", "resnet50", True),
        library="torchvision",
        arch="resnet18",
        cifar_stem="true",
    )
    with pytest.raises(
        zoo.WeightsMismatchError, match="arch: file 'resnet18' vs manifest 'resnet50'"
    ):
        zoo.load(NAME, manifest=manifest, cache=tmp_path / "cache")


def test_unknown_name_suggests_close_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _publish_file(
        tmp_path, _solo_resnet18().state_dict(), BackboneSpec("torchvision", "resnet18", True)
    )
    with pytest.raises(zoo.UnknownModelError, match=f"did you mean '{NAME}'"):
        zoo.load("fgsynth-byol-resnet18-fgmark", manifest=manifest)
    with pytest.raises(zoo.UnknownModelError, match=f"available: {NAME}"):
        zoo.get_entry("vit-small-imagenet", manifest=manifest)
    assert zoo_main(["info", "fgsynth-byl-resnet18-fgmarks", "--manifest", str(manifest)]) == 2
    assert f"did you mean '{NAME}'" in capsys.readouterr().err


def test_manifest_errors_name_the_bad_field(tmp_path: Path) -> None:
    manifest = _publish_file(
        tmp_path, _solo_resnet18().state_dict(), BackboneSpec("torchvision", "resnet18", True)
    )
    data = json.loads(manifest.read_text())
    data["entries"][0]["sha256"] = "abc"
    data["entries"][0]["urls"] = ["ftp://example.org/w.safetensors"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(zoo.ManifestError, match="field 'sha256' must be 64 lower-case hex"):
        Manifest.load(manifest)
    data["entries"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(zoo.ManifestError, match="scheme 'ftp'; allowed: http, https, file"):
        Manifest.load(manifest)


def test_export_refuses_bad_input(tmp_path: Path) -> None:
    manifest = _empty_manifest(tmp_path / "manifest.json")
    backbone = _solo_resnet18()
    ckpt = _write_checkpoint(tmp_path / "run", backbone)
    (tmp_path / "run" / "args.json").unlink()
    with pytest.raises(CheckpointError, match=r"training recipe not found.*--args"):
        zoo.export_checkpoint(ckpt, name=NAME, manifest=manifest)

    vit = dict(RECIPE, backbone={"name": "vit_small", "kwargs": {}})
    ckpt = _write_checkpoint(tmp_path / "vit", backbone, recipe=vit)
    with pytest.raises(zoo.ZooError, match=r"'vit_small'.*supported: resnet18, resnet50"):
        zoo.export_checkpoint(ckpt, name=NAME, manifest=manifest)

    not_solo = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, not_solo)
    (tmp_path / "args.json").write_text(json.dumps(RECIPE))
    with pytest.raises(CheckpointError, match=r"no 'backbone\.\*' weights.*encoder\.weight"):
        zoo.export_checkpoint(not_solo, name=NAME, manifest=manifest)

    ckpt = _write_checkpoint(tmp_path / "ok", backbone)
    with pytest.raises(zoo.ManifestError, match="invalid entry name 'Bad Name'"):
        zoo.export_checkpoint(ckpt, name="Bad Name", manifest=manifest)
    with pytest.raises(zoo.ManifestError, match="unknown metric 'top1'; allowed: linear_top1"):
        zoo.export_checkpoint(ckpt, name=NAME, manifest=manifest, metrics={"top1": 1.0})
    zoo.export_checkpoint(ckpt, name=NAME, manifest=manifest)
    with pytest.raises(zoo.ZooError, match="already exists"):
        zoo.export_checkpoint(ckpt, name=NAME, manifest=manifest)
    assert json.loads(manifest.read_text())["entries"][0]["name"] == NAME
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []


def test_cli_export_list_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _empty_manifest(tmp_path / "manifest.json")
    ckpt = _write_checkpoint(tmp_path / "run", _solo_resnet18())
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"metrics": {"linear_top1": 61.5, "knn_top1": 50.0}}))
    args = ["export", str(ckpt), "--name", NAME, "--manifest", str(manifest)]
    mirrors = ["--url", "https://example.org/a.safetensors", "--url", "https://example.net/a"]
    extra = ["--metrics-from", str(results), "--metric", "retrieval_map=33.3", *mirrors]
    assert zoo_main([*args, *extra, "--metric", "knn_top1=51"]) == 0
    out = capsys.readouterr().out
    assert "Upload the weights file" in out and "https://example.net/a" in out

    entry = zoo.get_entry(NAME, manifest=manifest)
    assert entry.metrics == {"linear_top1": 61.5, "knn_top1": 51.0, "retrieval_map": 33.3}
    assert entry.urls == ("https://example.org/a.safetensors", "https://example.net/a")

    assert zoo_main(["list", "--manifest", str(manifest)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "NAME",
        "METHOD",
        "BACKBONE",
        "DATASET",
        "CROP",
        "LINEAR@1",
        "KNN@1",
        "mAP",
        "SIZE",
    ]
    assert table[1].split()[:2] == [NAME, "fgsynth(byol)"]
    assert table[1].split()[-5:-2] == ["61.50", "51.00", "33.30"]

    assert zoo_main(["info", NAME, "--manifest", str(manifest)]) == 0
    card = capsys.readouterr().out
    assert card == zoo.render_card(entry)
    assert "| kNN top-1 (%) | 51.00 |" in card

    assert zoo_main([*args, "--metric", "linear_top1=high"]) == 2
    assert "must look like KEY=NUMBER" in capsys.readouterr().err

    card_path = tmp_path / "cards" / f"{NAME}.md"
    card_path.write_text("stale")
    assert zoo_main(["cards", "--manifest", str(manifest)]) == 0
    assert capsys.readouterr().out.strip() == str(card_path)
    assert card_path.read_text() == card


@pytest.mark.solo
def test_real_solo_byol_checkpoint_round_trip(tmp_path: Path) -> None:
    """Train stock BYOL one tiny epoch with solo-learn's own classes, export, load back."""
    import lightning
    from omegaconf import OmegaConf
    from solo.args.pretrain import parse_cfg
    from solo.methods import METHODS
    from solo.utils.checkpointer import Checkpointer

    pipeline = {
        "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
        "color_jitter": {
            "prob": 0.0,
            "brightness": 0.4,
            "contrast": 0.4,
            "saturation": 0.2,
            "hue": 0.1,
        },
        "grayscale": {"prob": 0.0},
        "gaussian_blur": {"prob": 0.0},
        "solarization": {"prob": 0.0},
        "equalization": {"prob": 0.0},
        "horizontal_flip": {"prob": 0.5},
        "crop_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "head": [],
        "num_crops": 1,
    }
    cfg = OmegaConf.create(
        {
            "name": "byol-tiny",
            "method": "byol",
            "backbone": {"name": "resnet18"},
            "method_kwargs": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
            "momentum": {"base_tau": 0.99, "final_tau": 1.0},
            "data": {
                "dataset": "cifar10",
                "train_path": str(tmp_path),
                "val_path": None,
                "format": "image_folder",
                "num_workers": 0,
            },
            "optimizer": {
                "name": "sgd",
                "batch_size": 4,
                "lr": 0.1,
                "classifier_lr": 0.1,
                "weight_decay": 1e-5,
            },
            "scheduler": {"name": "none"},
            "checkpoint": {"enabled": True, "dir": str(tmp_path / "ck"), "frequency": 1},
            "max_epochs": 1,
            "devices": [0],
            "accelerator": "cpu",
            "strategy": "auto",
            "precision": 32,
            "augmentations": [pipeline, pipeline],
            "wandb": {"enabled": False},
        }
    )
    cfg = parse_cfg(cfg)
    model = METHODS["byol"](cfg)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    views = [(i, [images[i], images[i].flip(-1)], labels[i]) for i in range(8)]
    loader = torch.utils.data.DataLoader(views, batch_size=4)
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[Checkpointer(cfg, logdir=tmp_path / "ck")],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    (ckpt,) = (tmp_path / "ck").rglob("*.ckpt")
    assert (ckpt.parent / "args.json").is_file()

    manifest = _empty_manifest(tmp_path / "manifest.json")
    zoo.export_checkpoint(ckpt, name="byol-resnet18-tiny", manifest=manifest)
    entry = zoo.get_entry("byol-resnet18-tiny", manifest=manifest)
    assert (entry.method, entry.base_method, entry.dataset) == ("byol", None, "cifar10")
    assert entry.backbone.cifar_stem
    assert entry.recipe == json.loads((ckpt.parent / "args.json").read_text())

    trained = model.backbone.state_dict()
    loaded = zoo.load("byol-resnet18-tiny", manifest=manifest, cache=tmp_path / "cache")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.items())

    fresh = METHODS["byol"](cfg)
    zoo.load_into_solo(fresh, "byol-resnet18-tiny", manifest=manifest, cache=tmp_path / "cache")
    for target in (fresh.backbone, fresh.momentum_backbone):
        assert all(torch.equal(target.state_dict()[k], v) for k, v in trained.items())


def test_export_and_load_of_a_plugin_backbone_keep_its_name_and_width(tmp_path: Path) -> None:
    from solo_fgsynth.backbones import BACKBONES

    backbone = BACKBONES["resnet10_small"](width=8)
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    recipe = {**RECIPE, "backbone": {"name": "resnet10_small", "kwargs": {"width": 8}}}
    ckpt = _write_checkpoint(tmp_path / "run", backbone, recipe)
    result = zoo.export_checkpoint(
        ckpt, name=NAME, metrics={}, manifest=_empty_manifest(tmp_path / "manifest.json")
    )
    entry = Manifest.load(result.manifest_path).get(NAME)
    assert entry.backbone == BackboneSpec("solo_fgsynth", "resnet10_small", False, {"width": 8})
    model = zoo.load(NAME, manifest=result.manifest_path, cache=tmp_path / "cache")
    backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), backbone(x))


def test_an_unknown_plugin_backbone_is_named_with_the_known_ones(tmp_path: Path) -> None:
    spec = BackboneSpec("solo_fgsynth", "resnet99_small")
    manifest = _publish_file(tmp_path, {"w": torch.zeros(1)}, spec)
    with pytest.raises(zoo.ZooError, match="'resnet99_small' is unknown; known: resnet10_small"):
        zoo.load(NAME, manifest=manifest, pretrained=False)


def test_an_entry_records_its_normalisation_and_eval_transform_uses_it(tmp_path: Path) -> None:
    spec = BackboneSpec("torchvision", "resnet18")
    manifest = _publish_file(tmp_path, torchvision.models.resnet18().state_dict(), spec)
    data = json.loads(manifest.read_text())
    data["entries"][0]["mean"] = [0.5, 0.25, 0.0]
    data["entries"][0]["std"] = [0.5, 0.5, 2.0]
    manifest.write_text(json.dumps(data))
    transform = zoo.eval_transform(NAME, manifest=manifest)
    normalize = transform.transforms[-1]
    assert (list(normalize.mean), list(normalize.std)) == ([0.5, 0.25, 0.0], [0.5, 0.5, 2.0])
    image = transform(Image.new("RGB", (50, 40), (255, 0, 255)))
    assert image.shape == (3, 32, 32)
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, -0.5, 0.5]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mean", None, r"field 'mean' must be a list of 3 numbers, got None"),
        ("mean", [0.5, 0.5], r"field 'mean' must be a list of 3 numbers"),
        ("std", [0.2, 0.0, 0.2], r"field 'std' item=0\.0 is out of range: allowed is a finite "),
        ("mean", [0.5, "x", 0.5], r"field 'mean' item='x' is out of range"),
        ("head", "fc.", r"field 'head' must be a list of key prefixes \(empty: no head\)"),
    ],
)
def test_an_entry_without_valid_preprocessing_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    spec = BackboneSpec("torchvision", "resnet18")
    manifest = _publish_file(tmp_path, torchvision.models.resnet18().state_dict(), spec)
    data = json.loads(manifest.read_text())
    data["entries"][0][field] = value
    manifest.write_text(json.dumps(data))
    with pytest.raises(zoo.ManifestError, match=message):
        Manifest.load(manifest)

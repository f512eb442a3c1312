"""backbone.init: every source kind loads the file's exact tensors; misfits fail with names.

The weight files are written here; timm and torchvision find theirs in caches pointed at
temporary folders, and their download functions are replaced so nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
import torchvision
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from solo_fgsynth.backbones.init import BackboneInitError, init_backbone
from solo_fgsynth.checkpoints import CheckpointError
from solo_fgsynth.zoo import manifest as zoo_manifest


class Tiny(nn.Module):
    """A ResNet-named toy backbone: conv1, bn1, layer1, and a classifier ``fc`` when ``head``."""

    def __init__(self, width: int = 4, head: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Conv2d(width, width, 1)
        self.fc = nn.Linear(width, 3) if head else nn.Identity()


def _random_state(build: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """Seeded tensors of a fresh ``build()``: its own initialisation, normalisation jittered."""
    torch.manual_seed(seed)
    fresh = build()
    state = {}
    for key, value in fresh.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone() + seed
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape) + 0.5
        elif value.dim() == 1:  # norm scales and shifts, running means, biases
            state[key] = value + 0.1 * torch.randn(value.shape)
        else:
            state[key] = value.clone()
    return state


def _assert_holds(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    held = backbone.state_dict()
    for key, value in held.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_its_tensors_and_drops_the_classifier_head(
    tmp_path: Path, suffix: str
) -> None:
    state = _random_state(lambda: Tiny(head=True), seed=1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save({f"module.{key}": value for key, value in state.items()}, path)  # DDP names
    else:
        safetensors.torch.save_file(state, str(path))
    backbone = Tiny()
    result = init_backbone(backbone, str(path))
    _assert_holds(backbone, state)
    assert result.unexpected == result.dropped_head == ["fc.bias", "fc.weight"]
    assert result.missing == [] and result.mismatched == []
    assert sorted(result.loaded) == sorted(backbone.state_dict())


def test_solo_learn_checkpoint_loads_the_backbone_not_its_momentum_copy(tmp_path: Path) -> None:
    online, momentum = _random_state(Tiny, 1), _random_state(Tiny, 2)
    state = {f"backbone.{k}": v for k, v in online.items()}
    state |= {f"momentum_backbone.{k}": v for k, v in momentum.items()}
    state |= {"projector.0.weight": torch.ones(2, 4), "classifier.weight": torch.ones(5, 4)}
    path = tmp_path / "run-ep=9.ckpt"
    torch.save({"state_dict": state, "epoch": 9, "global_step": 90}, path)
    backbone = Tiny()
    result = init_backbone(backbone, str(path))
    _assert_holds(backbone, online)
    assert result.unexpected == [] and result.missing == []


def test_wrong_architecture_fails_naming_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    state = _random_state(lambda: Tiny(width=8), 1)
    state["layer2.weight"] = torch.zeros(1)
    torch.save(state, path)
    backbone = Tiny(width=4)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(BackboneInitError) as error:
        init_backbone(backbone, str(path))
    message = str(error.value)
    assert f"backbone.init={str(path)!r} does not fit Tiny" in message
    assert "unexpected keys: layer2.weight" in message
    assert "conv1.weight file (8, 3, 3, 3) vs model (4, 3, 3, 3)" in message
    _assert_holds(backbone, before)  # nothing was copied


def test_missing_key_is_an_error_unless_not_strict_which_reports_it(tmp_path: Path) -> None:
    state = _random_state(Tiny, 1)
    del state["layer1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    backbone = Tiny()
    with pytest.raises(BackboneInitError, match=r"missing keys: layer1\.weight;.*init_strict"):
        init_backbone(backbone, str(path))
    untouched = backbone.layer1.weight.detach().clone()
    result = init_backbone(backbone, str(path), strict=False)
    assert result.missing == ["layer1.weight"]
    assert torch.equal(backbone.layer1.weight, untouched)
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])


def test_missing_classifier_head_is_expected(tmp_path: Path) -> None:
    state = _random_state(Tiny, 1)
    path = tmp_path / "headless.pth"
    torch.save(state, path)
    result = init_backbone(Tiny(head=True), str(path))
    assert result.missing == ["fc.bias", "fc.weight"]


def test_unusable_specs_name_the_spec(tmp_path: Path) -> None:
    with pytest.raises(BackboneInitError, match=r"backbone.init='.*nothing.pth': no such file"):
        init_backbone(Tiny(), str(tmp_path / "nothing.pth"))
    with pytest.raises(BackboneInitError, match=r"'imagenet' is not a file, not a zoo entry"):
        init_backbone(Tiny(), "imagenet")
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a tensor file")
    with pytest.raises(CheckpointError, match=r"backbone.init='.*garbage.pth' is not a readable"):
        init_backbone(Tiny(), str(garbage))


# --------------------------------------------------------------------------- timm

TIMM_NAME = "test_resnet.r160_in1k"  # timm's 0.5M-parameter test ResNet with a pretrained tag


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache in a temporary folder (timm's weights live there)."""
    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def _cache_timm_weights(cache: Path, state: dict[str, torch.Tensor]) -> None:
    """Lay ``state`` out as huggingface_hub caches ``timm/<name>``'s model.safetensors."""
    repo = cache / f"models--timm--{TIMM_NAME}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))


def test_timm_weights_come_from_timms_cache(hf_cache: Path) -> None:
    state = _random_state(lambda: timm.create_model("test_resnet"), seed=3)
    _cache_timm_weights(hf_cache, state)
    backbone = timm.create_model("test_resnet", num_classes=0)
    result = init_backbone(backbone, f"timm:{TIMM_NAME}")
    _assert_holds(backbone, state)
    assert result.dropped_head == ["fc.bias", "fc.weight"] and result.missing == []
    assert "timm/test_resnet.r160_in1k" in result.source


def test_unreachable_timm_weights_name_the_spec_and_what_was_tried(hf_cache: Path) -> None:
    with pytest.raises(BackboneInitError) as error:
        init_backbone(timm.create_model("test_resnet", num_classes=0), f"timm:{TIMM_NAME}")
    message = str(error.value)
    assert message.startswith(f"backbone.init='timm:{TIMM_NAME}': could not get timm's")
    assert "Hugging Face Hub 'timm/test_resnet.r160_in1k'" in message and str(hf_cache) in message


def test_unknown_timm_tag_lists_the_tags() -> None:
    with pytest.raises(BackboneInitError, match=r"timm has no 'resnet50.bogus'.*resnet50.a1_in1k"):
        init_backbone(Tiny(), "timm:resnet50.bogus")


# --------------------------------------------------------------------------- torchvision

TV_WEIGHTS = "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1"  # 1.4M parameters, a ResNet-like fc head


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub's cache in a temporary folder, with downloading replaced by a network error."""

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"no network in tests ({url})")

    hub = tmp_path / "hub"
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    yield hub
    torch.hub.set_dir(previous)


def test_torchvision_weights_come_from_the_hub_cache(hub_dir: Path) -> None:
    state = _random_state(torchvision.models.shufflenet_v2_x0_5, seed=4)
    url = torchvision.models.get_weight(TV_WEIGHTS).url
    cached = hub_dir / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    backbone = torchvision.models.shufflenet_v2_x0_5()
    backbone.fc = nn.Identity()
    result = init_backbone(backbone, f"torchvision:{TV_WEIGHTS}")
    _assert_holds(backbone, state)
    assert result.dropped_head == ["fc.bias", "fc.weight"] and result.missing == []


def test_unreachable_torchvision_weights_name_the_url_and_the_cache(hub_dir: Path) -> None:
    url = torchvision.models.get_weight(TV_WEIGHTS).url
    with pytest.raises(BackboneInitError) as error:
        init_backbone(Tiny(), f"torchvision:{TV_WEIGHTS}")
    message = str(error.value)
    assert message.startswith(f"backbone.init='torchvision:{TV_WEIGHTS}': could not get")
    assert url in message and str(hub_dir / "checkpoints") in message


def test_unknown_torchvision_weights_are_named() -> None:
    with pytest.raises(BackboneInitError, match=r"'ResNet50_Weights.IMAGENET1K_V9' is not a"):
        init_backbone(Tiny(), "torchvision:ResNet50_Weights.IMAGENET1K_V9")


# --------------------------------------------------------------------------- zoo


@pytest.mark.parametrize("prefix", ["zoo:", ""])
def test_zoo_entry_loads_its_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    state = _random_state(Tiny, seed=5)
    weights = tmp_path / "weights" / "tiny.safetensors"
    weights.parent.mkdir()
    safetensors.torch.save_file(state, str(weights))
    data = weights.read_bytes()
    entry = {
        "name": "tiny-test",
        "method": "byol",
        "base_method": None,
        "backbone": {"library": "torchvision", "arch": "resnet18"},
        "dataset": "fgmarks",
        "crop_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "head": [],
        "metrics": {},
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "license": "MIT",
        "urls": ["weights/tiny.safetensors"],
        "date": "2025-01-01",
        "recipe": {},
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    monkeypatch.setattr(zoo_manifest, "DEFAULT_MANIFEST", manifest)
    monkeypatch.setenv("SOLO_FGSYNTH_CACHE", str(tmp_path / "cache"))
    backbone = Tiny()
    result = init_backbone(backbone, f"{prefix}tiny-test")
    _assert_holds(backbone, state)
    assert "zoo entry 'tiny-test'" in result.source


# --------------------------------------------------------------------------- launcher

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_RUN = [
    "backbone.name=resnet18",
    "optimizer.batch_size=4",
    "data.num_workers=0",
    "accelerator=cpu",
    "devices=1",
    "strategy=auto",
    "precision=32",
    "max_epochs=1",
    "+limit_train_batches=1",
    "+limit_val_batches=1",
    "+num_sanity_val_steps=0",
    "+enable_progress_bar=False",
    "+enable_model_summary=False",
]


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision resnet18 state dict with its fc head, as ImageNet weights files hold."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(_random_state(torchvision.models.resnet18, seed=6), path)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def folder(make_image_folder) -> Path:
    """5 classes of two 32 px images each."""
    return make_image_folder(2)


class _CaptureAndStop(Callback):
    """Keep the backbones' tensors at the start of training, then stop the run."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        for name in ("backbone", "momentum_backbone"):
            self.states[name] = {
                k: v.clone() for k, v in getattr(module, name).state_dict().items()
            }
        raise _Stopped


class _Stopped(Exception):
    pass


@pytest.mark.solo
@pytest.mark.parametrize("config", ["byol", "fgsynth_byol"])
def test_pretraining_starts_both_backbones_from_backbone_init(
    config: str, folder: Path, resnet18_weights: Path, tmp_path: Path
) -> None:
    from solo_fgsynth.launch import load_config, run_pretrain

    cfg = load_config(
        SCRIPTS / "pretrain" / "custom",
        config,
        [
            *TINY_RUN,
            f"data.train_path={folder}",
            "data.val_path=null",
            "augmentations.0.crop_size=32",
            "augmentations.1.crop_size=32",
            f"checkpoint.dir={tmp_path}",
            f"++backbone.init={resnet18_weights}",
        ],
    )
    capture = _CaptureAndStop()
    with pytest.raises(_Stopped):
        run_pretrain(cfg, extra_callbacks=[capture])
    expected = torch.load(resnet18_weights, weights_only=True)
    for name in ("backbone", "momentum_backbone"):
        state = capture.states[name]
        assert set(state) == set(expected) - {"fc.weight", "fc.bias"}
        _assert_holds_values(state, expected)


def _assert_holds_values(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        assert torch.equal(value.contiguous(), expected[key].contiguous()), key


def _linear_cfg(folder: Path, *extra: str):
    from solo.args.linear import parse_cfg

    from solo_fgsynth.launch import _resolve_devices, load_config

    cfg = load_config(
        SCRIPTS / "linear" / "custom",
        "linear",
        [*TINY_RUN, f"data.train_path={folder}", f"data.val_path={folder}", *extra],
    )
    _resolve_devices(cfg)
    return parse_cfg(cfg)


@pytest.mark.solo
def test_linear_backbone_init_alone_evaluates_the_starting_weights(
    folder: Path, resnet18_weights: Path
) -> None:
    from solo_fgsynth.launch.linear_eval import _linear_backbone

    cfg = _linear_cfg(
        folder, "pretrained_feature_extractor=null", f"++backbone.init={resnet18_weights}"
    )
    backbone = _linear_backbone(cfg)
    _assert_holds_values(backbone.state_dict(), torch.load(resnet18_weights, weights_only=True))


def _solo_checkpoint(directory: Path, recorded_init: str | None) -> tuple[Path, dict]:
    """A solo-learn style checkpoint of a resnet18 backbone, and its args.json."""
    directory.mkdir(parents=True)
    backbone = _random_state(torchvision.models.resnet18, seed=7)
    del backbone["fc.weight"], backbone["fc.bias"]
    path = directory / "run-ep=0.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.items()}}, path)
    args = {"method": "byol", "backbone": {"name": "resnet18", "init": recorded_init}}
    (directory / "args.json").write_text(json.dumps(args))
    return path, backbone


@pytest.mark.solo
def test_linear_checkpoint_wins_over_the_init_it_was_pretrained_from(
    folder: Path, resnet18_weights: Path, tmp_path: Path
) -> None:
    from solo_fgsynth.launch.linear_eval import _linear_backbone

    checkpoint, weights = _solo_checkpoint(tmp_path / "run", str(resnet18_weights))
    cfg = _linear_cfg(
        folder,
        f"pretrained_feature_extractor={checkpoint}",
        f"++backbone.init={resnet18_weights}",
    )
    _assert_holds_values(_linear_backbone(cfg).state_dict(), weights)


@pytest.mark.solo
def test_linear_refuses_a_checkpoint_mixed_with_another_init(
    folder: Path, resnet18_weights: Path, tmp_path: Path
) -> None:
    from solo_fgsynth.launch import LaunchError
    from solo_fgsynth.launch.linear_eval import _linear_backbone

    checkpoint, _ = _solo_checkpoint(tmp_path / "run", None)
    cfg = _linear_cfg(
        folder,
        f"pretrained_feature_extractor={checkpoint}",
        f"++backbone.init={resnet18_weights}",
    )
    with pytest.raises(LaunchError, match=r"ambiguous: .* records no backbone.init.*=null"):
        _linear_backbone(cfg)
    cfg = _linear_cfg(folder, "pretrained_feature_extractor=null")
    with pytest.raises(LaunchError, match="nothing to evaluate"):
        _linear_backbone(cfg)


@pytest.mark.solo
def test_knn_of_backbone_init_alone_uses_the_starting_weights(
    folder: Path, resnet18_weights: Path
) -> None:
    from solo_fgsynth.launch import load_config, run_knn

    cfg = load_config(
        SCRIPTS / "knn" / "custom",
        "knn",
        [
            f"data.train_path={folder}",
            f"data.val_path={folder}",
            "batch_size=4",
            "num_workers=0",
            "accelerator=cpu",
            "k=[1]",
            "temperature=[0.1]",
            "distance_function=[cosine]",
            "feature_type=[backbone]",
            "+backbone.name=resnet18",
            f"++backbone.init={resnet18_weights}",
            "+data.augmentations.crop_size=32",
        ],
    )
    results = run_knn(cfg)
    assert results["backbone/k=1/cosine/T=0.1"]["acc1"] == pytest.approx(100.0)

"""The one weight reader: every format, the wrappers' prefixes, the one fit check, its messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from solo_fgsynth.checkpoints import (
    CheckpointError,
    fit_problems,
    load_fitting,
    read_backbone_weights,
    read_checkpoint,
    read_lightning_state,
    read_method_backbone,
    read_training_recipe,
    unwrapped_key,
)
from solo_fgsynth.errors import UserError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


def _state() -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in Net().state_dict().items()}


@pytest.mark.parametrize(
    ("key", "plain"),
    [
        ("module.backbone.conv1.weight", "backbone.conv1.weight"),
        ("backbone._orig_mod.conv1.weight", "backbone.conv1.weight"),
        ("_orig_mod.module.conv1.weight", "conv1.weight"),
        ("layer1.0.conv1.weight", "layer1.0.conv1.weight"),
        ("modules.weight", "modules.weight"),  # a part that only starts like a wrapper stays
    ],
)
def test_wrapper_prefixes_of_ddp_and_compile_are_removed(key: str, plain: str) -> None:
    assert unwrapped_key(key) == plain


def test_every_format_reads_to_the_same_backbone_tensors(tmp_path: Path) -> None:
    state = _state()
    solo = {f"backbone.{k}": v for k, v in state.items()} | {"projector.0.weight": torch.ones(2)}
    compiled = {f"backbone._orig_mod.{k}": v for k, v in state.items()}
    files = {
        "solo.ckpt": {"state_dict": solo, "global_step": 7},
        "ddp.ckpt": {"state_dict": {f"module.{k}": v for k, v in solo.items()}},
        "compiled.ckpt": {"state_dict": compiled},
        "plain.pth": state,
        "wrapped.pt": {"model": state},
    }
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
    safetensors.torch.save_file(state, str(tmp_path / "plain.safetensors"))
    for name in [*files, "plain.safetensors"]:
        read = read_backbone_weights(tmp_path / name)
        assert sorted(read) == sorted(state), name
        assert all(torch.equal(read[key], state[key]) for key in state), name
    assert read_checkpoint(tmp_path / "solo.ckpt")["global_step"] == 7
    assert sorted(read_method_backbone(tmp_path / "compiled.ckpt")) == sorted(state)


def test_unusable_files_are_one_line_naming_what_the_user_gave(tmp_path: Path) -> None:
    what = "pretrained_feature_extractor='x'"
    with pytest.raises(CheckpointError, match=rf"^{what} does not exist \(from "):
        read_checkpoint(tmp_path / "none.ckpt", what)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"is not a \.ckpt/\.pth/\.pt/\.bin/\.safetensors"):
        read_checkpoint(tmp_path / "notes.txt")
    (tmp_path / "broken.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"'.*broken.ckpt' is not a readable checkpoint \("):
        read_checkpoint(tmp_path / "broken.ckpt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save(_state(), tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="has no 'state_dict'"):
        read_lightning_state(tmp_path / "bare.ckpt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"no 'backbone\.\*' weights.*encoder\.weight"):
        read_method_backbone(tmp_path / "other.ckpt")
    assert issubclass(CheckpointError, UserError)


def test_fit_problems_name_missing_unexpected_and_mismatched_keys() -> None:
    expected = _state()
    state = dict(expected)
    del state["bn.bias"]
    state["fc.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(4, 3, 5, 5)
    assert fit_problems(expected, state) == [
        "missing keys: bn.bias",
        "unexpected keys: fc.weight",
        "shape mismatches: conv1.weight file (4, 3, 5, 5) vs model (4, 3, 3, 3)",
        "conv1 differs: the file and the model disagree on the small-crop (cifar) stem",
    ]
    assert fit_problems(expected, state, optional=("fc.", "bn.b"))[0].startswith("shape")
    with_head = expected | {"head.w": torch.ones(1)}
    assert fit_problems(expected, with_head, ignore_unexpected=True) == []


def test_load_fitting_loads_everything_or_nothing() -> None:
    source, target = Net(), Net()
    state = source.state_dict() | {"projector.weight": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"^run does not fit: unexpected keys: projector"):
        load_fitting(target, state, "run does not fit")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    broken = dict(state)
    del broken["bn.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: bn\.weight"):
        load_fitting(target, broken, "run does not fit", ignore_unexpected=True)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    load_fitting(target, state, "run does not fit", ignore_unexpected=True)
    assert all(torch.equal(source.state_dict()[k], v) for k, v in target.state_dict().items())


def test_training_recipe_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"training recipe not found: .*args.json.*--args"):
        read_training_recipe(tmp_path / "args.json")
    (tmp_path / "args.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        read_training_recipe(tmp_path / "args.json")
    (tmp_path / "args.json").write_text(json.dumps({"method": "byol"}))
    assert read_training_recipe(tmp_path / "args.json") == {"method": "byol"}

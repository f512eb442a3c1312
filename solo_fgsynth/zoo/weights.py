"""Backbones from manifest entries: build the module, read and write backbone-only safetensors.

Files hold the backbone's ``state_dict`` without the ``backbone.`` prefix (for ResNets these
are torchvision's keys, as in solo-learn), plus metadata naming the architecture, so a file
and a manifest entry that disagree are caught before any weight is copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import timm
import torch
import torchvision
from torch import nn

from solo_fgsynth.backbones import BACKBONES
from solo_fgsynth.checkpoints import fit_problems, read_checkpoint, state_of
from solo_fgsynth.zoo.errors import ManifestError, WeightsMismatchError
from solo_fgsynth.zoo.manifest import BackboneSpec

FILE_FORMAT = "solo-fgsynth-backbone"
FILE_FORMAT_VERSION = "1"


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """A randomly initialised backbone as solo-learn builds it: no classifier head.

    ``cifar_stem`` applies solo-learn's small-crop ResNet stem: a 3x3, stride-1, padding-2
    ``conv1`` without bias, and no max-pool.
    """
    if spec.library == "torchvision":
        if not spec.arch.startswith("resnet"):
            raise ManifestError(
                f"torchvision backbone {spec.arch!r} is not supported; solo-learn uses "
                "torchvision only for ResNets (resnet18, resnet50, ...)"
            )
        try:
            model = torchvision.models.get_model(spec.arch, weights=None, **spec.kwargs)
        except (ValueError, TypeError) as error:
            raise ManifestError(
                f"cannot build torchvision model {spec.arch!r} with kwargs {spec.kwargs}: {error}"
            ) from None
        model.fc = nn.Identity()
        if spec.cifar_stem:
            model.conv1 = nn.Conv2d(
                3, model.conv1.out_channels, kernel_size=3, stride=1, padding=2, bias=False
            )
            model.maxpool = nn.Identity()
        return model
    if spec.library == "solo_fgsynth":
        if spec.arch not in BACKBONES:
            raise ManifestError(
                f"solo_fgsynth backbone {spec.arch!r} is unknown; known: {', '.join(BACKBONES)}"
            )
        try:
            return BACKBONES[spec.arch](**spec.kwargs)
        except (ValueError, TypeError) as error:
            raise ManifestError(
                f"cannot build {spec.arch!r} with kwargs {spec.kwargs}: {error}"
            ) from None
    if spec.library == "timm":
        try:
            return timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.kwargs)
        except (RuntimeError, TypeError) as error:
            raise ManifestError(
                f"cannot build timm model {spec.arch!r} with kwargs {spec.kwargs}: {error}"
            ) from None
    raise ManifestError(f"backbone library {spec.library!r} is not supported")


def backbone_metadata(spec: BackboneSpec) -> dict[str, str]:
    """The safetensors metadata that names the architecture a file was written for."""
    return {
        "format": FILE_FORMAT,
        "format_version": FILE_FORMAT_VERSION,
        "library": spec.library,
        "arch": spec.arch,
        "cifar_stem": str(spec.cifar_stem).lower(),
    }


def serialize_backbone(state: Mapping[str, torch.Tensor], spec: BackboneSpec) -> bytes:
    """The bytes of a backbone-only safetensors file for ``state``."""
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    return safetensors.torch.save(tensors, metadata=backbone_metadata(spec))


def read_backbone(path: Path, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """Read a backbone file, refusing one whose metadata names another architecture."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, safetensors.SafetensorError) as error:
        raise WeightsMismatchError(f"{path} is not a readable safetensors file: {error}") from None
    expected = backbone_metadata(spec)
    wrong = {
        key: (metadata[key], expected[key])
        for key in ("library", "arch", "cifar_stem")
        if key in metadata and metadata[key] != expected[key]
    }
    if wrong:
        detail = ", ".join(f"{k}: file {f!r} vs manifest {m!r}" for k, (f, m) in wrong.items())
        raise WeightsMismatchError(f"{path} was written for another backbone ({detail})")
    return state_of(read_checkpoint(path))


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`WeightsMismatchError` naming every missing, unexpected or mis-shaped key."""
    problems = fit_problems(model.state_dict(), state)
    if problems:
        raise WeightsMismatchError(
            f"{what} does not fit {type(model).__name__}: " + "; ".join(problems)
        )

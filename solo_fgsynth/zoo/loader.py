"""One-line loading: a manifest name in, a verified pretrained backbone out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from solo_fgsynth.data.views import EvalView
from solo_fgsynth.errors import concise_user_errors
from solo_fgsynth.zoo.download import DEFAULT_RETRIES, fetch_entry
from solo_fgsynth.zoo.errors import ZooError
from solo_fgsynth.zoo.manifest import Manifest, ZooEntry
from solo_fgsynth.zoo.weights import build_backbone, check_state, read_backbone


def _verified_state(
    name: str,
    manifest: str | Path | None,
    cache: str | Path | None,
    offline: bool | None,
    progress: bool | None,
    retries: int,
) -> tuple[ZooEntry, Path, dict[str, torch.Tensor]]:
    zoo = Manifest.load(manifest)
    entry = zoo.get(name)
    path = fetch_entry(zoo, entry, cache=cache, offline=offline, progress=progress, retries=retries)
    return entry, path, read_backbone(path, entry.backbone)


@concise_user_errors
def load(
    name: str,
    *,
    pretrained: bool = True,
    manifest: str | Path | None = None,
    cache: str | Path | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
) -> nn.Module:
    """Build entry ``name``'s backbone and, if ``pretrained``, load its verified weights.

    The module has no classifier head and is returned in eval mode; call ``.train()`` to
    fine-tune. Downloads go to the cache (``$SOLO_FGSYNTH_CACHE``) unless ``offline``.
    """
    if not pretrained:
        return build_backbone(Manifest.load(manifest).get(name).backbone).eval()
    entry, path, state = _verified_state(name, manifest, cache, offline, progress, retries)
    model = build_backbone(entry.backbone)
    check_state(model, state, f"weights file {path} of {name!r}")
    model.load_state_dict(state)
    return model.eval()


@concise_user_errors
def eval_transform(name: str, *, manifest: str | Path | None = None) -> transforms.Compose:
    """The deterministic view entry ``name``'s features are meant to be read with: its crop
    size and the normalisation it was trained with, as its manifest entry records them."""
    entry = Manifest.load(manifest).get(name)
    return EvalView(entry.crop_size, entry.mean, entry.std).transform()


@concise_user_errors
def load_into_solo(
    model: nn.Module,
    name: str,
    *,
    momentum: bool = True,
    manifest: str | Path | None = None,
    cache: str | Path | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
) -> nn.Module:
    """Load entry ``name`` into a solo-learn method's ``backbone`` and return the method.

    With ``momentum`` (default) a ``momentum_backbone`` gets the same weights, as solo-learn
    initialises it from the backbone. Nothing is copied unless every key and shape fits.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ZooError(
            f"{type(model).__name__} has no 'backbone' module; load_into_solo expects a "
            "solo-learn method (a solo.methods.base.BaseMethod subclass)"
        )
    targets = {"backbone": backbone}
    momentum_backbone = getattr(model, "momentum_backbone", None)
    if momentum and isinstance(momentum_backbone, nn.Module):
        targets["momentum_backbone"] = momentum_backbone
    _, path, state = _verified_state(name, manifest, cache, offline, progress, retries)
    for attribute, module in targets.items():
        check_state(module, state, f"weights file {path} of {name!r} (for model.{attribute})")
    with torch.no_grad():
        for module in targets.values():
            module.load_state_dict(state)
    return model

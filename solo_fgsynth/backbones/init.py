"""Initialise a backbone in place from pretrained weights, reporting every key that did not fit.

A spec names one source: ``timm:NAME.TAG`` (timm's own pretrained mechanism and cache),
``torchvision:ENUM.MEMBER`` (torchvision's weights enum, cached by ``torch.hub``), a local
file (``.pth``/``.pt``/``.bin``, ``.safetensors``, or a solo-learn/Lightning ``.ckpt`` whose
``state_dict`` has ``backbone.`` keys), or a zoo entry name (``zoo:NAME`` or the bare name).
Nothing is ever loaded with a silent ``strict=False``: the backbone always receives a complete
state dict, and keys that did not fit are errors or, when asked, reported by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from solo_fgsynth.checkpoints import (
    fit_problems,
    key_listing,
    read_backbone_weights,
    state_of,
)
from solo_fgsynth.errors import UserError

# Classifier heads a backbone may lack (solo-learn replaces a ResNet's ``fc`` by Identity).
# The classifier heads of a file or of torchvision weights, which do not name theirs; timm's
# pretrained cfg and a zoo entry do, and their own names are used for them.
HEAD_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "head_dist.")
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

logger = logging.getLogger(__name__)


class BackboneInitError(UserError, ValueError):
    """A backbone.init spec that cannot be loaded; the message names the spec and the cause."""


@dataclass(frozen=True)
class InitResult:
    """What ``init_backbone`` did: keys loaded, keys left at their values, keys not used."""

    spec: str
    source: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]
    head: tuple[str, ...] = HEAD_PREFIXES

    @property
    def dropped_head(self) -> list[str]:
        """Unexpected keys that belong to a classifier head (an expected drop)."""
        return [key for key in self.unexpected if key.startswith(self.head)]


@dataclass(frozen=True)
class _Source:
    state: dict[str, torch.Tensor]
    where: str
    head: tuple[str, ...] = HEAD_PREFIXES  # key prefixes of its classifier head


def _from_file(spec: str, path: Path) -> _Source:
    return _Source(read_backbone_weights(path, f"backbone.init={spec!r}"), str(path))


def _from_timm(spec: str, name: str) -> _Source:
    import huggingface_hub.constants
    import timm
    from timm.models import get_pretrained_cfg

    try:
        pretrained = get_pretrained_cfg(name)
    except RuntimeError as error:  # a known model with an unknown tag
        pretrained, reason = None, str(error)
    else:
        reason = "no such model"
    if pretrained is None:
        tags = timm.list_pretrained(f"{name.split('.')[0]}.*")
        hint = f"; pretrained tags: {key_listing(tags)}" if tags else ""
        raise BackboneInitError(f"backbone.init={spec!r}: timm has no {name!r} ({reason}){hint}")
    if pretrained.hf_hub_id:
        where = (
            f"Hugging Face Hub {pretrained.hf_hub_id!r} "
            f"(cache {huggingface_hub.constants.HF_HUB_CACHE})"
        )
    else:
        where = f"{pretrained.url} (cache {Path(torch.hub.get_dir()) / 'checkpoints'})"
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as error:  # network, cache and hub errors all mean: not reachable
        raise BackboneInitError(
            f"backbone.init={spec!r}: could not get timm's pretrained weights; tried {where}: "
            f"{type(error).__name__}: {error}"
        ) from None
    classifier = pretrained.classifier or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return _Source(model.state_dict(), where, tuple(f"{name}." for name in names))


def _from_torchvision(spec: str, name: str) -> _Source:
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError) as error:
        raise BackboneInitError(
            f"backbone.init={spec!r}: {name!r} is not a torchvision weights name "
            f"({error}); use e.g. torchvision:ResNet50_Weights.IMAGENET1K_V1"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(weights.url).path).name
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # network and cache errors all mean: not reachable
        raise BackboneInitError(
            f"backbone.init={spec!r}: could not get torchvision's weights; tried the cache "
            f"{cached} and {weights.url}: {type(error).__name__}: {error}"
        ) from None
    return _Source(state_of(state), f"{weights.url} (cache {cached})")


def _from_zoo(spec: str, name: str) -> _Source:
    from solo_fgsynth.zoo.download import fetch_entry
    from solo_fgsynth.zoo.errors import ZooError
    from solo_fgsynth.zoo.manifest import Manifest
    from solo_fgsynth.zoo.weights import read_backbone

    try:
        zoo = Manifest.load()
        entry = zoo.get(name)
        path = fetch_entry(zoo, entry)
        state = read_backbone(path, entry.backbone)
        return _Source(state, f"zoo entry {name!r} ({path})", entry.head)
    except ZooError as error:
        raise BackboneInitError(f"backbone.init={spec!r}: {error}") from None


def read_source(spec: str) -> _Source:
    """The tensors a spec names, keyed as the backbone names them, and where they came from."""
    if not isinstance(spec, str) or not spec.strip():
        raise BackboneInitError(
            f"backbone.init={spec!r} is not valid: use timm:NAME.TAG, "
            "torchvision:ENUM.MEMBER, a weights file, or a zoo name (null: no init)"
        )
    kind, _, name = spec.partition(":")
    if kind == "timm" and name:
        return _from_timm(spec, name)
    if kind == "torchvision" and name:
        return _from_torchvision(spec, name)
    if kind == "zoo" and name:
        return _from_zoo(spec, name)
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(spec, path)
    if path.suffix in FILE_SUFFIXES or "/" in spec:
        raise BackboneInitError(f"backbone.init={spec!r}: no such file {path}")
    from solo_fgsynth.zoo.manifest import Manifest

    if spec in Manifest.load().names():
        return _from_zoo(spec, spec)
    raise BackboneInitError(
        f"backbone.init={spec!r} is not a file, not a zoo entry "
        f"({', '.join(Manifest.load().names())}), and has no timm: or torchvision: prefix"
    )


def init_backbone(backbone: nn.Module, spec: str, strict: bool = True) -> InitResult:
    """Load ``spec``'s weights into ``backbone`` in place; return loaded/missing/unexpected keys.

    A classifier head in the source that the backbone lacks (e.g. torchvision's ``fc.*``) is an
    expected drop. Any other missing, unexpected or mis-shaped key raises
    :class:`BackboneInitError` naming it; with ``strict=False`` the keys that fit are loaded
    and the others are reported by name in the result and the log.
    """
    source = read_source(spec)
    target = backbone.state_dict()
    fits = [
        key
        for key in target
        if key in source.state and tuple(source.state[key].shape) == tuple(target[key].shape)
    ]
    missing = sorted(key for key in target if key not in source.state)
    unexpected = sorted(key for key in source.state if key not in target)
    mismatched = sorted(key for key in target if key in source.state and key not in fits)
    problems = "; ".join(fit_problems(target, source.state, optional=source.head))
    if not fits:
        raise BackboneInitError(
            f"backbone.init={spec!r}: no tensor of {source.where} fits "
            f"{type(backbone).__name__}: {problems}"
        )
    if problems and strict:
        raise BackboneInitError(
            f"backbone.init={spec!r} does not fit {type(backbone).__name__}: {problems}; "
            "backbone.init_strict=false loads the keys that fit and reports the others"
        )
    merged = dict(target)
    with torch.no_grad():
        for key in fits:
            merged[key] = source.state[key].to(dtype=target[key].dtype)
        backbone.load_state_dict(merged, strict=True)
    result = InitResult(spec, source.where, fits, missing, unexpected, mismatched, source.head)
    message = f"backbone.init={spec!r}: loaded {len(fits)} tensors from {source.where}"
    if result.dropped_head:
        message += f"; dropped classifier head: {key_listing(result.dropped_head)}"
    if problems:
        message += f"; NOT loaded (backbone.init_strict=false): {problems}"
    (logger.warning if problems else logger.info)(message)
    return result

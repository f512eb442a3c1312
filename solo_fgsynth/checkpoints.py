"""The one reader of weight files and their training recipes, and the one check that weights fit.

Every command that reads weights (``backbone.init``, ``linear``, ``knn``, ``zoo export``,
``diagnose``, the benchmark) reads them here: solo-learn/Lightning ``.ckpt`` files, plain state
dicts (``.pth``/``.pt``/``.bin``) and ``.safetensors``, tensors only (``weights_only``), with the
wrappers' key prefixes removed (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``). Every
problem is a :class:`CheckpointError` whose message starts with what the user named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from solo_fgsynth.errors import UserError

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")
WRAPPER_PARTS = ("module", "_orig_mod")
BACKBONE_PREFIX = "backbone."
SHOWN_KEYS = 10


class CheckpointError(UserError, ValueError):
    """A weight file or training recipe that cannot be used; the message names it and why."""


def read_checkpoint(path: str | Path, what: str | None = None) -> dict[str, Any]:
    """The whole mapping stored in a weight file (a Lightning checkpoint keeps its step here).

    ``what`` starts every message (e.g. ``pretrained_feature_extractor='run.ckpt'``); by
    default the quoted path.
    """
    path = Path(path).expanduser()
    what = what or repr(str(path))
    if not path.exists():
        raise CheckpointError(f"{what} does not exist (from {Path.cwd()})")
    if not path.is_file() or path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{what} is not a {'/'.join(CHECKPOINT_SUFFIXES)} file")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            raw: Any = safetensors.torch.load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises pickle, zip, EOF or runtime errors
        reason = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{what} is not a readable checkpoint ({type(error).__name__}: {reason})"
        ) from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{what} holds a {type(raw).__name__}, not a state dict")
    return dict(raw)


def unwrapped_key(key: str) -> str:
    """``key`` without the parts DDP and ``torch.compile`` insert (``module.``, ``_orig_mod.``)."""
    return ".".join(part for part in key.split(".") if part not in WRAPPER_PARTS)


def state_of(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file, from its ``state_dict``/``model`` container if it has one."""
    for container in ("state_dict", "model"):
        inner = raw.get(container)
        if isinstance(inner, Mapping):
            raw = inner
            break
    return {
        unwrapped_key(key): value for key, value in raw.items() if isinstance(value, torch.Tensor)
    }


def read_lightning_state(path: str | Path, what: str | None = None) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a solo-learn/Lightning checkpoint, wrappers' prefixes removed."""
    raw = read_checkpoint(path, what)
    if not isinstance(raw.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path} has no 'state_dict'; expected a solo-learn/Lightning checkpoint"
        )
    return state_of(raw)


def backbone_part(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.`` tensors of a method's state, named as the backbone names them."""
    return {
        key.removeprefix(BACKBONE_PREFIX): value
        for key, value in state.items()
        if key.startswith(BACKBONE_PREFIX)
    }


def read_backbone_weights(path: str | Path, what: str | None = None) -> dict[str, torch.Tensor]:
    """A file's backbone tensors: a solo-learn checkpoint's ``backbone.`` part, else all of it."""
    state = state_of(read_checkpoint(path, what))
    backbone = backbone_part(state)
    return backbone or state


def read_method_backbone(path: str | Path, what: str | None = None) -> dict[str, torch.Tensor]:
    """The backbone of a solo-learn method checkpoint; refused if it has no ``backbone.`` part."""
    state = read_lightning_state(path, what)
    backbone = backbone_part(state)
    if not backbone:
        raise CheckpointError(
            f"{path} has no 'backbone.*' weights (a solo-learn method checkpoint has them); "
            f"its first keys are: {', '.join(list(state)[:8])}"
        )
    return backbone


def key_listing(keys: list[str]) -> str:
    """The first ``SHOWN_KEYS`` keys, then how many more there are."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = len(keys) - SHOWN_KEYS
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def fit_problems(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    *,
    ignore_unexpected: bool = False,
    optional: tuple[str, ...] = (),
) -> list[str]:
    """One clause per kind of misfit between ``state`` and a module's ``expected`` state.

    Missing, unexpected (unless ``ignore_unexpected``) and mis-shaped keys, each listed by
    name; keys under an ``optional`` prefix (a classifier head) may be absent on either side.
    """
    missing = sorted(k for k in expected if k not in state and not k.startswith(optional))
    unexpected = sorted(k for k in state if k not in expected and not k.startswith(optional))
    mismatched = [
        f"{key} file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    named = (
        ("missing keys", missing),
        ("unexpected keys", [] if ignore_unexpected else unexpected),
    )
    problems = [f"{kind}: {key_listing(keys)}" for kind, keys in named if keys]
    if mismatched:
        problems.append(f"shape mismatches: {key_listing(mismatched)}")
    if any(item.startswith("conv1.weight ") for item in mismatched):
        problems.append(
            "conv1 differs: the file and the model disagree on the small-crop (cifar) stem"
        )
    return problems


def load_fitting(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    misfit: str,
    *,
    ignore_unexpected: bool = False,
) -> None:
    """Load ``state`` into ``module`` if every weight fits, else raise one line naming the keys.

    ``misfit`` starts the message (``X does not fit Y``). With ``ignore_unexpected``, tensors
    the module lacks (a method's projector, for a bare backbone) are left out, as solo-learn's
    evaluation scripts leave them out; nothing is ever loaded with a silent ``strict=False``.
    """
    expected = module.state_dict()
    problems = fit_problems(expected, state, ignore_unexpected=ignore_unexpected)
    if problems:
        raise CheckpointError(f"{misfit}: {'; '.join(problems)}")
    module.load_state_dict({key: state[key] for key in expected}, strict=True)


def read_training_recipe(args_path: Path) -> dict[str, Any]:
    """solo-learn's ``args.json`` (the run's full config) beside a checkpoint, as a dict."""
    try:
        recipe = json.loads(args_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"training recipe not found: {args_path} (solo-learn writes args.json beside the "
            "checkpoint; pass its location with --args)"
        ) from None
    except (OSError, ValueError) as problem:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"cannot read training recipe {args_path}: {problem}") from None
    if not isinstance(recipe, dict):
        raise CheckpointError(f"training recipe {args_path} must hold a JSON object")
    return recipe

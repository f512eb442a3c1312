"""Evaluation follows its checkpoint: the backbone and data of the run that trained it.

solo-learn writes the pretraining config beside each checkpoint (``args.json``). ``linear`` and
``knn`` take from it what an evaluation config leaves unset (``null`` or absent): the backbone,
the dataset and its root, the fgmarks knobs, the crop size and normalisation. A value the
evaluation config does set wins and is reported as an override; one that would make the numbers
about other data (another dataset, label set, image or crop size) is refused unless
``++eval.allow_other_data=true`` says it is meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from solo_fgsynth.checkpoints import read_training_recipe
from solo_fgsynth.errors import LaunchError
from solo_fgsynth.validation import check_bool

ALLOW_OTHER_DATA = "eval.allow_other_data"
# keys whose difference makes an evaluation about other data than the checkpoint learned from
IDENTITY_KEYS = (
    "data.dataset",
    "data.fgmarks.num_classes",
    "data.fgmarks.first_class",
    "data.fgmarks.image_size",
    "data.augmentations.crop_size",
)


@dataclass
class Followed:
    """What an evaluation took from the checkpoint's recipe, and what its config overrode."""

    recipe: Path
    taken: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log: the recipe, the keys taken and the overrides with both values."""
        taken = ", ".join(f"{key}={value!r}" for key, value in self.taken.items()) or "nothing"
        line = f"following {self.recipe}: took {taken}"
        if self.overridden:
            overrides = ", ".join(
                f"{key}={ours!r} (checkpoint: {theirs!r})"
                for key, (ours, theirs) in self.overridden.items()
            )
            line += f"; overridden by the evaluation config: {overrides}"
        return line


def recipe_values(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The values evaluation follows, by dotted key, read from a pretraining ``args.json``.

    A plugin dataset (fgmarks, cub200, cars, aircraft) is recorded by solo-learn as ``custom``
    with cache paths; its own name and knobs are what a new evaluation needs.
    """
    data = recipe.get("data") or {}
    backbone = recipe.get("backbone") or {}
    views = recipe.get("augmentations") or [{}]
    values: dict[str, Any] = {
        "backbone.name": backbone.get("name"),
        "backbone.kwargs": backbone.get("kwargs"),
        "data.dataset": data.get("source_dataset") or data.get("dataset"),
        "data.root": data.get("root"),
        "data.augmentations.crop_size": views[0].get("crop_size"),
        "data.augmentations.mean": views[0].get("mean"),
        "data.augmentations.std": views[0].get("std"),
    }
    if values["data.dataset"] == "fgmarks":
        for knob, value in (data.get("fgmarks") or {}).items():
            values[f"data.fgmarks.{knob}"] = value
    return {key: value for key, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def follow_recipe(cfg: DictConfig, recipe_path: Path) -> Followed:
    """Fill ``cfg``'s unset keys from the recipe at ``recipe_path``; refuse other data.

    ``cfg`` is changed in place. The fgmarks knobs fall back to their defaults only where
    neither the config nor the recipe sets them.
    """
    recipe = read_training_recipe(recipe_path)
    followed = Followed(recipe_path)
    allow_other = OmegaConf.select(cfg, ALLOW_OTHER_DATA, default=False)
    check_bool(ALLOW_OTHER_DATA, allow_other, error=LaunchError)
    for key, theirs in recipe_values(recipe).items():
        ours = _plain(OmegaConf.select(cfg, key, default=None, throw_on_missing=False))
        if ours is None:
            with open_dict(cfg):
                OmegaConf.update(cfg, key, theirs, force_add=True)
            followed.taken[key] = theirs
        elif ours != theirs:
            if key in IDENTITY_KEYS and not allow_other:
                raise LaunchError(
                    f"{key}={ours!r} but the checkpoint was trained with {theirs!r} "
                    f"({recipe_path}): the numbers would be about other data; drop the "
                    f"setting to follow the checkpoint, or add ++{ALLOW_OTHER_DATA}=true"
                )
            followed.overridden[key] = (ours, theirs)
    return followed


def recipe_beside(checkpoint: str | Path) -> Path | None:
    """The ``args.json`` next to ``checkpoint``, or None (a bare weights file has none)."""
    candidate = Path(checkpoint).parent / "args.json"
    return candidate if candidate.is_file() else None

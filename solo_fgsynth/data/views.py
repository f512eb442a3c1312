"""The deterministic evaluation view shared by every frozen-feature evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms


@dataclass(frozen=True)
class EvalView:
    """Resize to the crop size, normalise as training did (RGB, images in [0, 1]).

    solo-learn normalises with ImageNet's statistics (as timm names them) unless an
    augmentation sets its own; a zoo entry records the ones its weights were trained with.
    """

    crop_size: int
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD

    @classmethod
    def of(cls, augmentation: Mapping[str, Any]) -> EvalView:
        """The view of a solo-learn augmentation node: its crop size and normalisation."""
        return cls(
            int(augmentation["crop_size"]),
            tuple(float(x) for x in augmentation.get("mean") or IMAGENET_DEFAULT_MEAN),
            tuple(float(x) for x in augmentation.get("std") or IMAGENET_DEFAULT_STD),
        )

    def transform(self) -> transforms.Compose:
        """The torchvision transform of this view."""
        return transforms.Compose(
            [
                transforms.Resize((self.crop_size, self.crop_size)),
                transforms.ToTensor(),
                transforms.Normalize(list(self.mean), list(self.std)),
            ]
        )

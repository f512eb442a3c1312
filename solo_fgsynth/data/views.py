"""The deterministic evaluation view shared by every frozen-feature evaluation."""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms


def eval_transform(crop_size: int) -> transforms.Compose:
    """Resize to the crop size and normalize as training does (ImageNet statistics, from timm)."""
    return transforms.Compose(
        [
            transforms.Resize((crop_size, crop_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )

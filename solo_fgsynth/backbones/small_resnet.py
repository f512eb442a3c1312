"""Narrow ResNets for small images, with a spatial ``layer4``: the embedded benchmark's backbones.

solo-learn's ``resnet18`` keeps the ImageNet stem (7x7 stride-2 conv and a max-pool) for any
dataset but CIFAR, so at 32 px its ``layer4`` is 1x1 and Grad-CAM reduces to one number per
channel. These timm ResNets use timm's deep stem (three 3x3 convs) at stride 1 and no pooling, so
``layer4`` is ``crop / 8`` on a side (4x4 at 32 px), and pay for that with fewer channels
(``width`` at ``layer1``, doubling at each stage; ``layer4`` has ``8 * width`` channels).
"""

from __future__ import annotations

from collections.abc import Callable

from timm.models.resnet import BasicBlock, ResNet
from torch import nn

DEFAULT_WIDTH = 32
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet10_small": (1, 1, 1, 1),
    "resnet18_small": (2, 2, 2, 2),
}


def small_resnet(depths: tuple[int, int, int, int], width: int = DEFAULT_WIDTH) -> ResNet:
    """A timm ResNet of BasicBlocks with a stride-1 deep stem, no stem pooling and no head."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 2 or width % 2:
        raise ValueError(f"backbone.kwargs.width must be an even integer >= 2, got {width!r}")
    model = ResNet(
        BasicBlock,
        depths,
        num_classes=0,
        stem_type="deep",
        stem_width=width // 2,  # the deep stem ends at 2 * stem_width = width channels
        channels=(width, 2 * width, 4 * width, 8 * width),
    )
    model.conv1[0].stride = (1, 1)
    model.maxpool = nn.Identity()
    model.inplanes = 8 * width  # solo-learn reads a ResNet's feature size from ``inplanes``
    return model


def _factory(name: str) -> Callable[..., ResNet]:
    def build(method: str | None = None, width: int = DEFAULT_WIDTH) -> ResNet:
        return small_resnet(DEPTHS[name], width=width)

    build.__name__ = name
    build.__doc__ = f"{name}: ResNet blocks {DEPTHS[name]}, small-image stem (``method`` unused)."
    return build


BACKBONES: dict[str, Callable[..., ResNet]] = {name: _factory(name) for name in DEPTHS}

"""Backbones: the small-image ResNets the plugin registers into solo-learn (usable from yaml as
``backbone.name``), and initialisation from pretrained weights (timm, torchvision, files, zoo).

``init_backbone(backbone, spec, strict=True)`` loads in place and returns what was loaded,
missing and unexpected; see :mod:`solo_fgsynth.backbones.init` for the spec forms.
"""

from solo_fgsynth.backbones.init import (
    HEAD_PREFIXES,
    BackboneInitError,
    InitResult,
    backbone_state,
    init_backbone,
    read_source,
)
from solo_fgsynth.backbones.small_resnet import BACKBONES, small_resnet

__all__ = [
    "BACKBONES",
    "HEAD_PREFIXES",
    "BackboneInitError",
    "InitResult",
    "backbone_state",
    "init_backbone",
    "read_source",
    "small_resnet",
]

"""Backbone initialisation from pretrained weights: timm, torchvision, files and the zoo.

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

__all__ = [
    "HEAD_PREFIXES",
    "BackboneInitError",
    "InitResult",
    "backbone_state",
    "init_backbone",
    "read_source",
]

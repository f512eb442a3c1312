"""Backbones: the small-image ResNets the plugin registers into solo-learn (usable from yaml as
``backbone.name``), by name in ``BACKBONES``.

Initialisation from pretrained weights (timm, torchvision, files, zoo) is in
:mod:`solo_fgsynth.backbones.init` (``init_backbone(backbone, spec, strict=True)``), which uses
the zoo; this package imports nothing of it, so the zoo can build backbones from the registry.
"""

from solo_fgsynth.backbones.small_resnet import BACKBONES, small_resnet

__all__ = ["BACKBONES", "small_resnet"]

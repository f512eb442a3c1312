"""Backbones the plugin adds to solo-learn's, usable from yaml as ``backbone.name``."""

from solo_fgsynth.backbones.small_resnet import BACKBONES, small_resnet

__all__ = ["BACKBONES", "small_resnet"]

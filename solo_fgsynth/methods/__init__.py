"""The solo-learn adapter: registers ``fgsynth``, ``supervised`` and the plugin's backbones."""

from __future__ import annotations

import warnings


def register_methods() -> None:
    """Add ``fgsynth`` and ``supervised`` to ``solo.methods.METHODS`` and the plugin's backbones
    to solo-learn's backbone table, so ``backbone.name: resnet18_small`` works for every method
    (idempotent)."""
    with warnings.catch_warnings():
        # solo-learn's own imports warn about timm/torch deprecations the user cannot act on.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from solo.methods import METHODS
        from solo.methods.base import BaseMethod

        from solo_fgsynth.backbones import BACKBONES
        from solo_fgsynth.methods.fgsynth import FGSynthMethod
        from solo_fgsynth.methods.supervised import Supervised

    METHODS["fgsynth"] = FGSynthMethod
    METHODS["supervised"] = Supervised
    BaseMethod._BACKBONES.update(BACKBONES)

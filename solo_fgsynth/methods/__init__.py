"""The solo-learn adapter: registers ``fgsynth`` into solo-learn's ``METHODS``."""

from __future__ import annotations

import warnings


def register_methods() -> None:
    """Add ``fgsynth`` to ``solo.methods.METHODS`` (idempotent); needs solo-learn."""
    with warnings.catch_warnings():
        # solo-learn's own imports warn about timm/torch deprecations the user cannot act on.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from solo.methods import METHODS

        from solo_fgsynth.methods.fgsynth import FGSynthMethod

    METHODS["fgsynth"] = FGSynthMethod

"""solo-fgsynth: discriminative features from synthesized pairs for fine-grained SSL.

Importing the package registers the ``fgsynth`` and ``supervised`` methods into solo-learn's
``METHODS`` when solo-learn is installed: at once if solo-learn is already imported, else as soon
as it is (:func:`solo_fgsynth._solo.register_with_solo`). The import itself loads neither
solo-learn nor torch, so the command line starts at once; the core in :mod:`solo_fgsynth.synth`
needs only PyTorch and is imported on first use of ``FGSynth`` or ``FGSynthConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from solo_fgsynth._solo import register_with_solo, solo_available

if TYPE_CHECKING:
    from solo_fgsynth.synth import FGSynth, FGSynthConfig

__version__ = "0.1.0"
__all__ = ["FGSynth", "FGSynthConfig", "__version__", "solo_available"]


def __getattr__(name: str) -> Any:
    """``FGSynth`` and ``FGSynthConfig``, imported from the core on first use (it imports torch)."""
    if name in ("FGSynth", "FGSynthConfig"):
        from solo_fgsynth import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if solo_available():
    register_with_solo()

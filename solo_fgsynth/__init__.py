"""solo-fgsynth: discriminative features from synthesized pairs for fine-grained SSL.

Importing the package registers the ``fgsynth`` method into solo-learn's ``METHODS``
when solo-learn is installed; the core in :mod:`solo_fgsynth.synth` needs only PyTorch.
"""

from solo_fgsynth._solo import solo_available
from solo_fgsynth.synth import FGSynth, FGSynthConfig

__version__ = "0.1.0"
__all__ = ["FGSynth", "FGSynthConfig", "__version__", "solo_available"]

if solo_available():
    from solo_fgsynth.methods import register_methods

    register_methods()

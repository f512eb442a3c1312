"""The toolkit-agnostic FGSynth core: plain PyTorch, usable from any training loop."""

from solo_fgsynth.synth.config import FGSynthConfig
from solo_fgsynth.synth.decoder import FeatureDecoder, decoder_plan, reconstruction_loss
from solo_fgsynth.synth.gradcam import FeatureMapTap, gradcam_importance
from solo_fgsynth.synth.perturb import partner_indices, perturb_features
from solo_fgsynth.synth.selection import Selection, lowest_fraction_mask, select_dimensions
from solo_fgsynth.synth.stats import DimensionStatistics
from solo_fgsynth.synth.synthesizer import FGSynth, SynthOutput

__all__ = [
    "DimensionStatistics",
    "FGSynth",
    "FGSynthConfig",
    "FeatureDecoder",
    "FeatureMapTap",
    "Selection",
    "SynthOutput",
    "decoder_plan",
    "gradcam_importance",
    "lowest_fraction_mask",
    "partner_indices",
    "perturb_features",
    "reconstruction_loss",
    "select_dimensions",
]

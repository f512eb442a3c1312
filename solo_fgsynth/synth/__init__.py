"""The toolkit-agnostic FGSynth core: plain PyTorch, usable from any training loop."""

from solo_fgsynth.synth.config import FGSYNTH_VERSION, FGSynthConfig
from solo_fgsynth.synth.decoder import FeatureDecoder, decoder_plan, reconstruction_loss
from solo_fgsynth.synth.gradcam import FeatureMapTap, gradcam_importance
from solo_fgsynth.synth.measure import (
    PairMeasurement,
    measure_pairs,
    pair_diff_ratio,
    pair_feature_ratio,
    pairs_grid,
    save_pairs_png,
)
from solo_fgsynth.synth.norm import frozen_batchnorm_statistics
from solo_fgsynth.synth.perturb import partner_indices, perturb_features
from solo_fgsynth.synth.selection import (
    Selection,
    lowest_fraction_mask,
    ranking_scores,
    select_dimensions,
)
from solo_fgsynth.synth.stats import DimensionStatistics
from solo_fgsynth.synth.synthesizer import FGSynth, SynthOutput

__all__ = [
    "FGSYNTH_VERSION",
    "DimensionStatistics",
    "FGSynth",
    "FGSynthConfig",
    "FeatureDecoder",
    "FeatureMapTap",
    "PairMeasurement",
    "Selection",
    "SynthOutput",
    "decoder_plan",
    "frozen_batchnorm_statistics",
    "gradcam_importance",
    "lowest_fraction_mask",
    "measure_pairs",
    "pair_diff_ratio",
    "pair_feature_ratio",
    "pairs_grid",
    "partner_indices",
    "perturb_features",
    "ranking_scores",
    "reconstruction_loss",
    "save_pairs_png",
    "select_dimensions",
]

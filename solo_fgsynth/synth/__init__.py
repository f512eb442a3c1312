"""The toolkit-agnostic FGSynth core: plain PyTorch, usable from any training loop."""

from solo_fgsynth.synth.config import FGSYNTH_VERSION, FGSynthConfig
from solo_fgsynth.synth.decoder import (
    DecoderOptimizer,
    FeatureDecoder,
    decoder_plan,
    reconstruction_loss,
)
from solo_fgsynth.synth.gradcam import (
    FeatureMapTap,
    forward_with_feature_map,
    gradcam_importance,
    gradcam_map,
    gradcam_weights,
)
from solo_fgsynth.synth.measure import (
    PairMeasurement,
    decoder_headroom,
    fit_fresh_decoder,
    measure_pairs,
    pairs_grid,
    random_mask_like,
    save_pairs_png,
)
from solo_fgsynth.synth.norm import frozen_batchnorm_statistics
from solo_fgsynth.synth.perturb import partner_indices, perturb_features
from solo_fgsynth.synth.quality import (
    pair_diff_ratio,
    pair_feature_ratio,
    pair_selectivity,
    recon_r2,
    reencode_correlation,
)
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
    "DecoderOptimizer",
    "DimensionStatistics",
    "FGSynth",
    "FGSynthConfig",
    "FeatureDecoder",
    "FeatureMapTap",
    "PairMeasurement",
    "Selection",
    "SynthOutput",
    "decoder_headroom",
    "decoder_plan",
    "fit_fresh_decoder",
    "forward_with_feature_map",
    "frozen_batchnorm_statistics",
    "gradcam_importance",
    "gradcam_map",
    "gradcam_weights",
    "lowest_fraction_mask",
    "measure_pairs",
    "pair_diff_ratio",
    "pair_feature_ratio",
    "pair_selectivity",
    "pairs_grid",
    "partner_indices",
    "perturb_features",
    "random_mask_like",
    "ranking_scores",
    "recon_r2",
    "reconstruction_loss",
    "reencode_correlation",
    "save_pairs_png",
    "select_dimensions",
]

"""Pretraining, linear evaluation and kNN for any solo-learn method, from solo-learn style yaml.

solo-learn's ``main_pretrain.py``, ``main_linear.py`` and ``main_knn.py`` are scripts outside its
package; this package does what they do with solo-learn's package functions, on CPU, GPU or DDP.
One module per stage (:mod:`.pretraining`, :mod:`.linear_eval`, :mod:`.knn_eval`); the config's
composition and checks in :mod:`.config`; what the stages share to run (weights, fit, logging,
CLI) in :mod:`.common`; and every solo-learn / lightning / torchmetrics workaround in
:mod:`.compat`.
"""

from solo_fgsynth.launch.config import (
    LaunchError,
    _device_ids,
    _resolve_devices,
    load_config,
)
from solo_fgsynth.launch.knn_eval import KNN_DISTANCES, KNN_FEATURES, _knn_grid, knn, run_knn
from solo_fgsynth.launch.linear_eval import linear, run_linear
from solo_fgsynth.launch.pretraining import pretrain, run_pretrain

__all__ = [
    "KNN_DISTANCES",
    "KNN_FEATURES",
    "LaunchError",
    "_device_ids",
    "_knn_grid",
    "_resolve_devices",
    "knn",
    "linear",
    "load_config",
    "pretrain",
    "run_knn",
    "run_linear",
    "run_pretrain",
]

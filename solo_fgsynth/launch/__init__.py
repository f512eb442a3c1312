"""Pretraining, linear evaluation and kNN for any solo-learn method, from solo-learn style yaml.

solo-learn's ``main_pretrain.py``, ``main_linear.py`` and ``main_knn.py`` are scripts outside its
package; this package does what they do with solo-learn's package functions, on CPU, GPU or DDP.
One module per stage (:mod:`.pretraining`, :mod:`.linear_eval`, :mod:`.knn_eval`); the config's
composition and checks in :mod:`.config`; what the stages share to run (weights, fit, logging)
in :mod:`.common`; the commands' arguments in :mod:`.cli`; and every solo-learn / lightning /
torchmetrics workaround in :mod:`.compat`. The names below are imported from their modules on
first use, so that a command's ``--help`` does not import lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from solo_fgsynth.launch.cli import knn, linear, pretrain
    from solo_fgsynth.launch.config import (
        LaunchError,
        _device_ids,
        _resolve_devices,
        load_config,
    )
    from solo_fgsynth.launch.knn_eval import KNN_DISTANCES, KNN_FEATURES, _knn_grid, run_knn
    from solo_fgsynth.launch.linear_eval import run_linear
    from solo_fgsynth.launch.pretraining import run_pretrain

# name -> the module under solo_fgsynth.launch that defines it
_MODULES = {
    "KNN_DISTANCES": "knn_eval",
    "KNN_FEATURES": "knn_eval",
    "LaunchError": "config",
    "_device_ids": "config",
    "_knn_grid": "knn_eval",
    "_resolve_devices": "config",
    "knn": "cli",
    "linear": "cli",
    "load_config": "config",
    "pretrain": "cli",
    "run_knn": "knn_eval",
    "run_linear": "linear_eval",
    "run_pretrain": "pretraining",
}

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


def __getattr__(name: str) -> Any:
    """One of the names above, imported from its module on first use."""
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

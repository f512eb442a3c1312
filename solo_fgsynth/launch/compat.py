"""Every workaround the launcher applies for solo-learn 1.0.6 on today's lightning, torch and
torchmetrics; each says what it works around and on which versions, so it can go once fixed.

:data:`WORKAROUNDS` lists them for ``solo-fgsynth doctor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig

from solo_fgsynth._solo import solo_available
from solo_fgsynth.launch.config import LaunchError


def _torchmetrics_major() -> int:
    try:
        return int(version("torchmetrics").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


@dataclass(frozen=True)
class Workaround:
    """One compatibility workaround: its name, what it works around, and whether it applies."""

    name: str
    summary: str
    applies: Callable[[], bool]


WORKAROUNDS = (
    Workaround(
        "cpu-devices-count",
        "solo-learn 1.0.6's parse_cfg takes len(devices), Lightning >= 2.0's CPU accelerator "
        "takes only a count: devices is an id list for parse_cfg, then a count on CPU",
        solo_available,
    ),
    Workaround(
        "cpu-sync-batchnorm-off",
        "torch's SyncBatchNorm runs on CUDA only (every torch version): sync_batchnorm is "
        "switched off for CPU runs (applies to those only)",
        lambda: True,
    ),
    Workaround(
        "knn-compute-on-step",
        "solo-learn 1.0.6's WeightedKNNClassifier passes compute_on_step, which torchmetrics "
        ">= 1.0 rejects: online kNN is refused; offline kNN is solo_fgsynth.metrics."
        "weighted_knn, tested equal to it",
        lambda: solo_available() and _torchmetrics_major() >= 1,
    ),
)


def lightning_devices(cfg: DictConfig) -> None:
    """After parse_cfg: Lightning's CPU accelerator takes a count; SyncBatchNorm needs CUDA."""
    if cfg.accelerator != "cpu":
        return
    cfg.devices = len(cfg.devices)
    if cfg.get("sync_batchnorm"):
        if cfg.devices > 1:
            rank_zero_warn("sync_batchnorm needs CUDA; CPU processes keep per-process BatchNorm")
        cfg.sync_batchnorm = False


def check_online_knn(cfg: DictConfig) -> None:
    """solo-learn's online kNN metric passes ``compute_on_step``, which torchmetrics>=1 rejects."""
    from solo.utils.knn import WeightedKNNClassifier
    from solo.utils.misc import omegaconf_select

    if not omegaconf_select(cfg, "knn_eval.enabled", False):
        return
    try:
        WeightedKNNClassifier()
    except ValueError as error:
        raise LaunchError(
            f"knn_eval.enabled=True: solo-learn's online kNN does not run here ({error}); "
            "set knn_eval.enabled=False and use 'solo-fgsynth knn' on the checkpoint"
        ) from error

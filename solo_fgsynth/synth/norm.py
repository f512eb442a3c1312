"""Running the synthesized pair through networks without touching their BatchNorm statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_batchnorm_statistics(*modules: nn.Module) -> Iterator[None]:
    """Inside this block, BatchNorm layers of ``modules`` leave their running statistics alone.

    A layer in train mode still normalises with the batch's own statistics, exactly as the
    real views are normalised, so the pair loss is unchanged; only ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` are not updated. Decoded images thus never
    shift the statistics that evaluation (linear probe, kNN) uses. Eval-mode layers behave
    as usual.
    """
    layers = [
        layer
        for module in modules
        for layer in module.modules()
        if isinstance(layer, _BatchNorm) and layer.track_running_stats
    ]
    with ExitStack() as restore:
        for layer in dict.fromkeys(layers):
            if layer.training:
                layer.track_running_stats = False
                restore.callback(setattr, layer, "track_running_stats", True)
        yield

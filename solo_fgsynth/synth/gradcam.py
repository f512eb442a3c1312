"""Grad-CAM channel importance captured from the ordinary backward pass of the SSL loss."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def gradcam_importance(feature_grad: Tensor, pooled: Tensor) -> Tensor:
    """Per-sample channel contribution to the Grad-CAM of the score ``-L`` (B x C).

    ``feature_grad`` is ``dL/dA`` (B x C x h x w) and ``pooled`` is ``GAP(A)`` (B x C). The
    Grad-CAM weight of channel k is ``alpha_k = mean_hw d(-L)/dA_k``: the score is the
    negated loss, because training increases it. A channel's importance is ``alpha_k * z_k``.
    """
    if feature_grad.dim() != 4 or feature_grad.shape[:2] != pooled.shape:
        raise ValueError(
            f"feature_grad {tuple(feature_grad.shape)} and pooled {tuple(pooled.shape)} "
            "do not match: expected (B, C, h, w) and (B, C)"
        )
    return -feature_grad.mean(dim=(2, 3)) * pooled


class FeatureMapTap:
    """Reads a module's output feature map ``A`` and, later, ``dL/dA`` without extra passes.

    A forward hook on the module sees ``A`` (only inside :meth:`capture`); it reports the
    pooled features ``GAP(A)`` at once and registers a tensor hook on ``A`` that reports
    the Grad-CAM importance when the ordinary ``loss.backward()`` reaches it.
    """

    def __init__(
        self,
        on_features: Callable[[Tensor], None],
        on_importance: Callable[[Tensor], None],
    ) -> None:
        self._on_features = on_features
        self._on_importance = on_importance
        self._active = False
        self._handle: RemovableHandle | None = None

    def attach(self, module: nn.Module) -> None:
        """Start watching ``module`` (e.g. a ResNet's ``layer4``); replaces an earlier attach."""
        self.detach()
        self._handle = module.register_forward_hook(self._forward_hook)

    def detach(self) -> None:
        """Stop watching the attached module."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        """True while a module is watched."""
        return self._handle is not None

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Within this block, forward passes through the watched module are recorded."""
        if not self.attached:
            raise RuntimeError("no module is attached: call attach(module) before capture()")
        previous, self._active = self._active, True
        try:
            yield
        finally:
            self._active = previous

    def _forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not self._active:
            return
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ValueError(
                f"the watched module {type(module).__name__} must return a B x C x h x w feature "
                f"map, got {type(output).__name__} {getattr(output, 'shape', '')}"
            )
        pooled = output.detach().mean(dim=(2, 3))
        self._on_features(pooled)
        if output.requires_grad:
            output.register_hook(lambda grad: self._on_importance(gradcam_importance(grad, pooled)))

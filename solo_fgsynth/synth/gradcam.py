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
    negated loss, because training increases it. A channel's importance is ``alpha_k * z_k``,
    computed in fp32 whatever the inputs' precision (fp16 overflows at grad 3000 x feature 30).
    """
    if feature_grad.dim() != 4 or feature_grad.shape[:2] != pooled.shape:
        raise ValueError(
            f"feature_grad {tuple(feature_grad.shape)} and pooled {tuple(pooled.shape)} "
            "do not match: expected (B, C, h, w) and (B, C)"
        )
    return -feature_grad.float().mean(dim=(2, 3)) * pooled.float()


class FeatureMapTap:
    """Reads a module's output feature map ``A`` and, later, ``dL/dA`` without extra passes.

    A forward hook on the module sees ``A`` (only inside :meth:`capture`); it reports the
    pooled features ``GAP(A)`` at once and registers a tensor hook on ``A`` that reports
    the Grad-CAM importance when the ordinary ``loss.backward()`` reaches it.

    With ``branch=True`` the rest of the network reads a view of ``A`` and only that view is
    hooked, while :meth:`take_live_pooled` hands out ``GAP(A)`` of the unhooked tensor: a loss
    built on it reaches the encoder without entering the Grad-CAM gradient.
    """

    def __init__(
        self,
        on_features: Callable[[Tensor], None],
        on_importance: Callable[[Tensor], None],
        branch: bool = False,
    ) -> None:
        self._on_features = on_features
        self._on_importance = on_importance
        self._branch = branch
        self._active = False
        self._grad_scale = 1.0
        self._live_pooled: list[Tensor] = []
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
    def capture(self, grad_scale: float = 1.0) -> Iterator[None]:
        """Within this block, forward passes through the watched module are recorded.

        ``grad_scale`` is the factor the loss of these passes will be multiplied by before its
        backward (mixed precision's gradient scaler): the importance is read divided by it.
        """
        if not self.attached:
            raise RuntimeError("no module is attached: call attach(module) before capture()")
        previous = self._active, self._grad_scale
        self._active, self._grad_scale = True, float(grad_scale)
        try:
            yield
        finally:
            self._active, self._grad_scale = previous

    def take_live_pooled(self) -> list[Tensor]:
        """``GAP(A)`` with its graph, per captured pass since the last call (``branch`` only)."""
        live, self._live_pooled = self._live_pooled, []
        return live

    def _forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
        if not self._active:
            return None
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ValueError(
                f"the watched module {type(module).__name__} must return a B x C x h x w feature "
                f"map, got {type(output).__name__} {getattr(output, 'shape', '')}"
            )
        pooled = output.detach().float().mean(dim=(2, 3))
        self._on_features(pooled)
        if not output.requires_grad:
            return None
        scale = self._grad_scale
        hooked = output
        if self._branch:
            self._live_pooled.append(output.float().mean(dim=(2, 3)))
            hooked = output.view_as(output)
        hooked.register_hook(
            lambda grad: self._on_importance(gradcam_importance(grad.float() / scale, pooled))
        )
        return hooked

"""Grad-CAM of the SSL loss on a backbone's last feature map: channel importance captured from the
ordinary backward pass (fgsynth), and the spatial map (LCR's target)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def gradcam_weights(feature_grad: Tensor) -> Tensor:
    """Grad-CAM channel weights ``alpha_k = mean_hw d(-L)/dA_k`` (B x C, fp32) from ``dL/dA``.

    The score is the negated loss, because training increases it; fp32 whatever the input's
    precision (fp16 overflows at grad 3000 x feature 30).
    """
    if feature_grad.dim() != 4:
        raise ValueError(
            f"feature_grad {tuple(feature_grad.shape)} is not a (B, C, h, w) feature map gradient"
        )
    return -feature_grad.float().mean(dim=(2, 3))


def gradcam_importance(feature_grad: Tensor, pooled: Tensor) -> Tensor:
    """Per-sample channel contribution to the Grad-CAM of the score ``-L`` (B x C).

    ``feature_grad`` is ``dL/dA`` (B x C x h x w) and ``pooled`` is ``GAP(A)`` (B x C); a
    channel's importance is ``alpha_k * z_k`` with the weights of :func:`gradcam_weights`.
    """
    if feature_grad.dim() != 4 or feature_grad.shape[:2] != pooled.shape:
        raise ValueError(
            f"feature_grad {tuple(feature_grad.shape)} and pooled {tuple(pooled.shape)} "
            "do not match: expected (B, C, h, w) and (B, C)"
        )
    return gradcam_weights(feature_grad) * pooled.float()


def gradcam_map(feature_grad: Tensor, feature_map: Tensor) -> Tensor:
    """The Grad-CAM map of the score ``-L``: ``ReLU(sum_k alpha_k A_k)``, B x h x w, fp32, detached.

    ``feature_grad`` is ``dL/dA`` and ``feature_map`` is ``A``, both B x C x h x w; the weights
    ``alpha`` are :func:`gradcam_weights`'.
    """
    if feature_grad.shape != feature_map.shape:
        raise ValueError(
            f"feature_grad {tuple(feature_grad.shape)} and feature_map "
            f"{tuple(feature_map.shape)} do not match: expected both (B, C, h, w)"
        )
    weights = gradcam_weights(feature_grad.detach())
    return torch.einsum("bc,bchw->bhw", weights, feature_map.detach().float()).relu()


def forward_with_feature_map(
    network: nn.Module, module: nn.Module, images: Tensor
) -> tuple[Tensor, Tensor]:
    """``network(images)`` and the output of its submodule ``module`` (the feature map ``A``, with
    its graph), read by a forward hook that lives for this one pass."""
    outputs: list[Any] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        result = network(images)
    finally:
        handle.remove()
    if not outputs:
        raise RuntimeError(f"{type(module).__name__} did not run in the forward pass")
    feature_map = outputs[-1]
    if not isinstance(feature_map, Tensor) or feature_map.dim() != 4:
        raise ValueError(
            f"the watched module {type(module).__name__} must return a B x C x h x w feature "
            f"map, got {type(feature_map).__name__} {getattr(feature_map, 'shape', '')}"
        )
    return result, feature_map


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

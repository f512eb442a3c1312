"""A small upsampling conv decoder from pooled features back to an image at the crop size."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo_fgsynth.validation import check_choice, check_int

MIN_BASE, MAX_BASE = 4, 7


def decoder_plan(crop_size: int) -> tuple[int, int]:
    """``(base, doublings)`` with ``base * 2**doublings == crop_size``; ValueError otherwise.

    Supported sizes are ``b * 2**n`` with ``b`` in 4..7 and ``n >= 2``: 16, 20, ..., 32, 64,
    96, 224 and so on.
    """
    if isinstance(crop_size, int) and not isinstance(crop_size, bool) and crop_size > 0:
        base, doublings = crop_size, 0
        while base % 2 == 0 and base > MAX_BASE:
            base //= 2
            doublings += 1
        if MIN_BASE <= base <= MAX_BASE and doublings >= 2:
            return base, doublings
    raise ValueError(
        f"crop_size={crop_size!r} is not supported by the decoder: allowed are b * 2**n with "
        f"b in {MIN_BASE}..{MAX_BASE} and n >= 2 (e.g. 32, 64, 96, 224)"
    )


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm keeps each decoded image independent of the rest of the batch.
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)


class FeatureDecoder(nn.Module):
    """``D: z -> image``: a linear map to a ``base x base`` grid, then upsample-conv stages.

    The output is unbounded, in the normalized input space of the views it reconstructs.
    """

    def __init__(
        self, feature_dim: int, crop_size: int, width: int = 64, out_channels: int = 3
    ) -> None:
        super().__init__()
        self.base, doublings = decoder_plan(crop_size)
        self.crop_size = crop_size
        channels = [max(width, width * 4 // 2**stage) for stage in range(doublings + 1)]
        self.project = nn.Linear(feature_dim, channels[0] * self.base * self.base)
        self.stem = nn.Sequential(_norm(channels[0]), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            stages += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                _norm(c_out),
                nn.ReLU(inplace=True),
            ]
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)
        self.channels = channels

    def forward(self, features: Tensor) -> Tensor:
        grid = self.project(features).view(-1, self.channels[0], self.base, self.base)
        return self.head(self.stages(self.stem(grid)))


def reconstruction_loss(decoded: Tensor, target: Tensor) -> Tensor:
    """``L_R``: mean squared error between decoded images and the (normalized) views."""
    if decoded.shape != target.shape:
        raise ValueError(
            f"decoded images {tuple(decoded.shape)} and targets {tuple(target.shape)} differ: "
            "the decoder's crop_size must match the views it reconstructs"
        )
    return F.mse_loss(decoded, target)


DECODER_SCHEDULES = ("constant", "cosine")


class DecoderOptimizer:
    """Adam on the decoder alone, linear warm-up, then a constant rate (or a cosine decay to 0).

    The SSL optimizer (LARS at the SSL rate, with ``alpha`` scaling ``L_R``'s gradient) starves
    a decoder, which then outputs the mean image; Adam is invariant to that constant scale, as
    the authors' prototype trains its decoder (Adam 1e-4) apart from the encoder. At a constant
    rate the last steps leave the decoder a noisy snapshot (its output offset wanders by about
    the rate each step, and R² at 8 px pays for every offset); a cosine decay over the run,
    the shape of the encoder's own schedule, settles it (docs/benchmark.md, section 4, says
    what the tuning data chose). ``cosine`` needs ``total_steps`` (:meth:`plan`) before the
    first step. Call :meth:`step` after the ordinary ``backward()``: it reads the decoder's
    gradients, steps, and clears them.
    """

    def __init__(
        self,
        decoder: nn.Module,
        lr: float,
        warmup_steps: int,
        schedule: str = "constant",
        total_steps: int | None = None,
    ) -> None:
        self.schedule = check_choice("schedule", schedule, DECODER_SCHEDULES)
        self.parameters = [p for p in decoder.parameters() if p.requires_grad]
        self.base_lr = float(lr)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.total_steps: int | None = None
        self.steps_taken = 0
        self.optimizer = torch.optim.Adam(self.parameters, lr=self.base_lr)
        if total_steps is not None:
            self.plan(total_steps)
        self._set_rate()

    def plan(self, total_steps: int) -> None:
        """The number of decoder steps in the run: where the cosine reaches 0."""
        self.total_steps = check_int("total_steps", total_steps, 1)
        self._set_rate()

    def _rate(self) -> float:
        """Linear over the first ``warmup_steps + 1`` steps, then the schedule's decay."""
        step = self.steps_taken
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant" or self.total_steps is None:
            return self.base_lr
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _set_rate(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._rate()

    @property
    def lr(self) -> float:
        """The rate of the next step (warm-up included)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def step(self, grad_scale: float = 1.0) -> bool:
        """One Adam step on the current gradients divided by ``grad_scale``; clears them.

        A step without gradients, or with a non-finite one (a mixed-precision overflow), is
        skipped. Returns whether the decoder was updated.
        """
        if self.schedule == "cosine" and self.total_steps is None:
            raise RuntimeError(
                "decoder_schedule 'cosine' needs the run's length: call plan(total_steps) "
                "(FGSynth.plan_decoder) before the first decoder step, or use "
                "decoder_schedule='constant'"
            )
        grads = [p.grad for p in self.parameters if p.grad is not None]
        updated = False
        if grads and all(bool(torch.isfinite(g).all()) for g in grads):
            if grad_scale != 1.0:
                torch._foreach_div_(grads, float(grad_scale))
            self.optimizer.step()
            self.steps_taken += 1
            self._set_rate()
            updated = True
        self.optimizer.zero_grad(set_to_none=True)
        return updated

    def state_dict(self) -> dict[str, Any]:
        """Adam's moments and the schedule's position, for checkpoints."""
        return {"optimizer": self.optimizer.state_dict(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the rate follows the restored position."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_taken = int(state["steps_taken"])
        self._set_rate()

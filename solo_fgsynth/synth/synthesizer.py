"""FGSynth: the criteria, selection, perturbation and decoder tied together for a training loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo_fgsynth.synth.config import FGSynthConfig
from solo_fgsynth.synth.decoder import DecoderOptimizer, FeatureDecoder, reconstruction_loss
from solo_fgsynth.synth.gradcam import FeatureMapTap
from solo_fgsynth.synth.perturb import perturb_features
from solo_fgsynth.synth.quality import (
    POOLED_SIZE,
    pair_diff_ratio,
    pair_feature_ratio,
    recon_r2,
)
from solo_fgsynth.synth.selection import Selection, select_dimensions
from solo_fgsynth.synth.stats import DimensionStatistics

LOSS_TERMS = ("L_C", "L_R", "L_Cp")


@dataclass(frozen=True)
class SynthOutput:
    """What one :meth:`FGSynth.forward` produced.

    ``pair`` is ``(D(z), D(z'))`` for the synthesized subset, or None while synthesis is
    off (before ``synth_start_epoch``, before the statistics exist, or with
    ``synth_fraction`` 0). When it exists, ``selection`` is the chosen dimension set,
    ``subset`` the rows of ``features`` that got a pair and ``perturbed`` their ``z'``.
    """

    recon_loss: Tensor
    reconstruction: Tensor
    pair: tuple[Tensor, Tensor] | None
    selection: Selection | None
    features: Tensor
    subset: Tensor | None = None
    perturbed: Tensor | None = None

    def metrics(self, views: Tensor | None = None) -> dict[str, float]:
        """Scalars worth logging each step: the decoder's R² on ``views`` (the reconstructed
        batch), and with pairs the set size, criteria overlap and the pair's size."""
        metrics: dict[str, float] = {}
        if views is not None and views.shape[0] >= 2:
            metrics["recon_r2"] = recon_r2(self.reconstruction, views)
            metrics["recon_r2_8px"] = recon_r2(self.reconstruction, views, POOLED_SIZE)
        if self.selection is None or self.pair is None or self.perturbed is None:
            return metrics
        metrics["synth_selected_dims"] = float(self.selection.size)
        metrics["synth_criteria_overlap"] = self.selection.overlap
        if self.features.shape[0] >= 2:
            metrics["pair_feature_ratio"] = pair_feature_ratio(
                self.features, self.perturbed, self.subset
            )
            metrics["pair_diff_ratio"] = pair_diff_ratio(
                self.reconstruction, self.pair[1], self.subset
            )
        return metrics


class FGSynth(nn.Module):
    """Synthesized pairs that differ only in non-discriminative dimensions.

    Usage in any loop: ``attach`` the module producing the last feature map, tell
    ``plan_decoder`` the run's number of steps, run the encoder on the views inside
    ``capture()``, call the object on ``(z, views, epoch)``, run the pair through the encoder
    inside :func:`frozen_batchnorm_statistics`, add ``total_loss(...)``, do the ordinary single
    backward, step the encoder's optimizer (which must not hold the decoder's parameters), then
    ``step_decoder()`` and ``update_statistics()``.
    """

    def __init__(self, feature_dim: int, crop_size: int, config: FGSynthConfig | None = None):
        super().__init__()
        self.config = config or FGSynthConfig()
        self.feature_dim = feature_dim
        self.statistics = DimensionStatistics(feature_dim, self.config.ema_momentum)
        self.decoder = FeatureDecoder(feature_dim, crop_size, width=self.config.decoder_width)
        self.decoder_optimizer = DecoderOptimizer(
            self.decoder,
            self.config.decoder_lr,
            self.config.decoder_warmup_steps,
            schedule=self.config.decoder_schedule,
        )
        self._tap = FeatureMapTap(
            self.statistics.observe_features,
            self.statistics.observe_importance,
            branch=self.config.recon_to_encoder,
        )

    def attach(self, feature_module: nn.Module) -> FGSynth:
        """Watch ``feature_module``, whose output is the feature map ``A`` with ``z = GAP(A)``."""
        self._tap.attach(feature_module)
        return self

    @contextmanager
    def capture(self, grad_scale: float = 1.0) -> Iterator[None]:
        """Encoder passes on the real views run inside this block feed both criteria.

        ``grad_scale``: the factor mixed precision's gradient scaler multiplies the loss by
        (1.0 without one), so the Grad-CAM importance is read unscaled.
        """
        with self._tap.capture(grad_scale):
            yield

    def plan_decoder(self, total_steps: int) -> None:
        """The run's number of decoder steps (one per training step), where the decoder's
        cosine schedule ends; needed once before the first :meth:`step_decoder`."""
        self.decoder_optimizer.plan(total_steps)

    def step_decoder(self, grad_scale: float = 1.0) -> bool:
        """The decoder's own Adam step on the gradients of this step's backward; clears them.

        ``grad_scale``: the loss scale of mixed precision's gradient scaler (1.0 without one).
        """
        return self.decoder_optimizer.step(grad_scale)

    @torch.no_grad()
    def update_statistics(self, skip: bool = False) -> bool:
        """Fold this step's captured batch into the EMAs; call after ``backward()``.

        ``skip=True`` (e.g. the optimizer step was skipped by a gradient scaler) discards the
        step; so does a non-finite importance. Returns whether the step was folded in.
        """
        self._tap.take_live_pooled()
        return self.statistics.update(skip=skip)

    def synthesis_active(self, epoch: int) -> bool:
        """Whether pairs are synthesized at ``epoch``."""
        return (
            epoch >= self.config.synth_start_epoch
            and self.config.synth_fraction > 0
            and self.statistics.ready
        )

    def select(self) -> Selection:
        """The current non-discriminative dimensions, from the tracked statistics."""
        return select_dimensions(
            self.statistics.variance,
            self.statistics.cam_scores(self.config.cam_ranking),
            var_fraction=self.config.var_fraction,
            cam_fraction=self.config.cam_fraction,
            criterion=self.config.criterion,
            combine=self.config.combine,
        )

    @property
    def noise_scale(self) -> Tensor:
        """The noise unit of each dimension: its own tracked std (train-mode features)."""
        return self.statistics.std

    def perturb(
        self,
        features: Tensor,
        rows: Tensor | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Selection]:
        """``z'`` for ``rows`` of ``features`` (default: all) and the selection it changed.

        ``mask`` replaces the selected dims (e.g. random dims, a control); the returned
        selection is still the criteria's.
        """
        selection = self.select()
        perturbed = perturb_features(
            features,
            selection.mask if mask is None else mask,
            mode=self.config.perturbation,
            strength=self.config.strength,
            scale=self.noise_scale,
            rows=rows,
            generator=generator,
        )
        return perturbed, selection

    def forward(self, features: Tensor, views: Tensor, epoch: int) -> SynthOutput:
        """Reconstruct ``views`` from ``features`` and, when active, synthesize pairs.

        ``features`` (B x C) are the pooled features of ``views`` (B x 3 x H x W), row by
        row, and the first B rows of the passes made inside ``capture()``. Pairs are always
        synthesized from detached features. ``L_R`` reaches the encoder only with
        ``recon_to_encoder``, and then through an unhooked branch of ``A``, so the
        Grad-CAM gradient stays that of the SSL loss alone.
        """
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features have shape {tuple(features.shape)}: expected (B, {self.feature_dim})"
            )
        if views.shape[0] != features.shape[0]:
            raise ValueError(
                f"{views.shape[0]} views for {features.shape[0]} feature rows: they must match"
            )
        z = features.detach()
        selection, perturbed, subset = None, None, None
        num_synth = round(self.config.synth_fraction * z.shape[0])
        if self.synthesis_active(epoch) and num_synth >= 1 and z.shape[0] >= 2:
            subset = torch.randperm(z.shape[0])[:num_synth].to(z.device)
            perturbed, selection = self.perturb(z, rows=subset)
        decoder_input = self._decoder_input(features)
        decoded = self.decoder(
            decoder_input if perturbed is None else torch.cat([decoder_input, perturbed])
        )
        reconstruction = decoded[: z.shape[0]]
        recon_loss = reconstruction_loss(reconstruction, views)
        pair = None
        if subset is not None:
            pair = (reconstruction[subset], decoded[z.shape[0] :])
            if not self.config.synth_grad_to_decoder:
                pair = (pair[0].detach(), pair[1].detach())
        return SynthOutput(recon_loss, reconstruction, pair, selection, z, subset, perturbed)

    def _decoder_input(self, features: Tensor) -> Tensor:
        """Detached ``z``; with ``recon_to_encoder``, ``z`` whose gradient enters ``A`` unhooked."""
        live = self._tap.take_live_pooled()
        if not self.config.recon_to_encoder:
            return features.detach()
        if not live:
            raise RuntimeError(
                "recon_to_encoder needs the encoder passes on the views inside capture()"
            )
        pooled = torch.cat(live)[: features.shape[0]]
        if pooled.shape != features.shape:
            raise ValueError(
                f"the captured passes pooled to {tuple(pooled.shape)}, fewer rows or other "
                f"dimensions than the features {tuple(features.shape)}"
            )
        # The value of z, with the gradient of GAP(A) on the unhooked tensor A.
        return features.detach() + (pooled - pooled.detach()).to(features.dtype)

    def total_loss(
        self,
        ssl_loss: Tensor,
        recon_loss: Tensor,
        pair_loss: Tensor | None,
        step: int | None = None,
    ) -> Tensor:
        """``L = L_C + alpha * L_R + nu * L_Cp`` (``L_Cp`` absent while synthesis is off).

        A non-finite term raises FloatingPointError naming the term and ``step``: training
        must stop there rather than write NaN weights over good checkpoints.
        """
        terms = [ssl_loss, recon_loss] + ([] if pair_loss is None else [pair_loss])
        finite = torch.isfinite(torch.stack([term.detach().float() for term in terms]))
        if not bool(finite.all()):
            name = LOSS_TERMS[int((~finite).nonzero()[0])]
            value = float(terms[LOSS_TERMS.index(name)].detach())
            where = "" if step is None else f" at step {step}"
            raise FloatingPointError(
                f"non-finite {name} ({value}){where}: training stopped; checkpoints written "
                "before this step are kept"
            )
        total = ssl_loss + self.config.alpha * recon_loss
        if pair_loss is not None:
            total = total + self.config.nu * pair_loss
        return total

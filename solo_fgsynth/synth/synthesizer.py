"""FGSynth: the criteria, selection, perturbation and decoder tied together for a training loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo_fgsynth.synth.config import FGSynthConfig
from solo_fgsynth.synth.decoder import FeatureDecoder, reconstruction_loss
from solo_fgsynth.synth.gradcam import FeatureMapTap
from solo_fgsynth.synth.perturb import perturb_features
from solo_fgsynth.synth.selection import Selection, select_dimensions
from solo_fgsynth.synth.stats import DimensionStatistics


@dataclass(frozen=True)
class SynthOutput:
    """What one :meth:`FGSynth.forward` produced.

    ``pair`` is ``(D(z), D(z'))`` for the synthesized subset, or None while synthesis is
    off (before ``synth_start_epoch``, before the statistics exist, or with
    ``synth_fraction`` 0). ``selection`` is the chosen dimension set when ``pair`` exists.
    """

    recon_loss: Tensor
    reconstruction: Tensor
    pair: tuple[Tensor, Tensor] | None
    selection: Selection | None

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging each step: selected-set size and the criteria overlap."""
        if self.selection is None:
            return {}
        return {
            "synth_selected_dims": float(self.selection.size),
            "synth_criteria_overlap": self.selection.overlap,
        }


class FGSynth(nn.Module):
    """Synthesized pairs that differ only in non-discriminative dimensions.

    Usage in any loop: ``attach`` the module producing the last feature map, run the
    encoder on the views inside ``capture()``, call the object on ``(z, views, epoch)``,
    add ``total_loss(...)``, do the ordinary single backward, then ``update_statistics()``.
    """

    def __init__(self, feature_dim: int, crop_size: int, config: FGSynthConfig | None = None):
        super().__init__()
        self.config = config or FGSynthConfig()
        self.feature_dim = feature_dim
        self.statistics = DimensionStatistics(feature_dim, self.config.ema_momentum)
        self.decoder = FeatureDecoder(feature_dim, crop_size, width=self.config.decoder_width)
        self._tap = FeatureMapTap(
            self.statistics.observe_features, self.statistics.observe_importance
        )

    def attach(self, feature_module: nn.Module) -> FGSynth:
        """Watch ``feature_module``, whose output is the feature map ``A`` with ``z = GAP(A)``."""
        self._tap.attach(feature_module)
        return self

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Encoder passes on the real views run inside this block feed both criteria."""
        with self._tap.capture():
            yield

    @torch.no_grad()
    def update_statistics(self) -> None:
        """Fold this step's captured batch into the EMAs; call after ``backward()``."""
        self.statistics.update()

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
            self.statistics.importance,
            var_fraction=self.config.var_fraction,
            cam_fraction=self.config.cam_fraction,
            criterion=self.config.criterion,
            combine=self.config.combine,
        )

    def forward(self, features: Tensor, views: Tensor, epoch: int) -> SynthOutput:
        """Reconstruct ``views`` from ``features`` and, when active, synthesize pairs.

        ``features`` (B x C) are the pooled features of ``views`` (B x 3 x H x W), row by
        row. The decoder always trains on detached features, so ``L_R`` never reaches the
        encoder and the Grad-CAM gradient stays that of the SSL loss alone.
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
        if self.synthesis_active(epoch) and num_synth >= 1:
            selection = self.select()
            subset = torch.randperm(z.shape[0], device=z.device)[:num_synth]
            perturbed = perturb_features(
                z[subset],
                selection.mask,
                mode=self.config.perturbation,
                strength=self.config.strength,
                std=self.statistics.std,
            )
        decoded = self.decoder(z if perturbed is None else torch.cat([z, perturbed]))
        reconstruction = decoded[: z.shape[0]]
        recon_loss = reconstruction_loss(reconstruction, views)
        pair = None
        if subset is not None:
            pair = (reconstruction[subset], decoded[z.shape[0] :])
            if not self.config.synth_grad_to_decoder:
                pair = (pair[0].detach(), pair[1].detach())
        return SynthOutput(recon_loss, reconstruction, pair, selection)

    def total_loss(self, ssl_loss: Tensor, recon_loss: Tensor, pair_loss: Tensor | None) -> Tensor:
        """``L = L_C + alpha * L_R + nu * L_Cp`` (``L_Cp`` absent while synthesis is off)."""
        total = ssl_loss + self.config.alpha * recon_loss
        if pair_loss is not None:
            total = total + self.config.nu * pair_loss
        return total

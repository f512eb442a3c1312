"""The decoder: output shapes at each supported crop size, errors, and that it learns."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth.synth import FeatureDecoder, decoder_plan, reconstruction_loss


@pytest.mark.parametrize(
    ("crop_size", "plan"), [(16, (4, 2)), (32, (4, 3)), (64, (4, 4)), (96, (6, 4)), (224, (7, 5))]
)
def test_decoder_makes_images_at_each_supported_crop_size(crop_size: int, plan: tuple) -> None:
    assert decoder_plan(crop_size) == plan
    decoder = FeatureDecoder(feature_dim=12, crop_size=crop_size, width=8)
    assert decoder(torch.randn(2, 12)).shape == (2, 3, crop_size, crop_size)


@pytest.mark.parametrize("crop_size", [33, 8, 12, 0, -32, 72 * 3, 2.5])
def test_unsupported_crop_sizes_are_rejected_with_the_rule(crop_size: object) -> None:
    with pytest.raises(ValueError, match=rf"crop_size={crop_size!r} is not supported.*b \* 2\*\*n"):
        decoder_plan(crop_size)  # type: ignore[arg-type]


def test_reconstruction_loss_decreases_on_a_fixed_batch() -> None:
    features, images = torch.randn(8, 16), torch.randn(8, 3, 16, 16)
    decoder = FeatureDecoder(feature_dim=16, crop_size=16, width=8)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = reconstruction_loss(decoder(features), images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_reconstruction_loss_is_mse_and_checks_shapes() -> None:
    decoded, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 2.0)
    assert reconstruction_loss(decoded, target).item() == 4.0
    with pytest.raises(ValueError, match="crop_size must match"):
        reconstruction_loss(decoded, torch.zeros(1, 3, 8, 8))

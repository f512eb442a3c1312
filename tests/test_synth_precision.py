"""Mixed precision: importance read unscaled and in fp32; bad steps never reach the EMAs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solo_fgsynth.synth import DimensionStatistics, FeatureMapTap, FGSynth, FGSynthConfig


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.stem(x)).mean(dim=(2, 3))


def _importance(encoder: TinyEncoder, images: torch.Tensor, factor: float) -> torch.Tensor:
    recorded: list[torch.Tensor] = []
    tap = FeatureMapTap(lambda _: None, recorded.append)
    tap.attach(encoder.layer4)
    with tap.capture(grad_scale=factor):
        loss = encoder(images).square().sum()
    (loss * factor).backward()
    tap.detach()
    return recorded[0]


def test_importance_of_a_loss_scaled_by_2_16_equals_the_unscaled_importance() -> None:
    encoder, images = TinyEncoder(), torch.randn(4, 3, 8, 8)
    unscaled = _importance(encoder, images, 1.0)
    scaled = _importance(encoder, images, 2.0**16)
    assert torch.allclose(scaled, unscaled, rtol=1e-6, atol=0)
    assert unscaled.abs().sum() > 0


def test_fp16_feature_and_gradient_give_a_finite_fp32_importance() -> None:
    # fp16 overflows at 65504: a gradient of 3000 times a feature of 30 is 90000.
    layer = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(layer.weight, 30.0)
    recorded: list[torch.Tensor] = []
    tap = FeatureMapTap(lambda _: None, recorded.append)
    tap.attach(layer)
    with torch.autocast("cpu", dtype=torch.float16), tap.capture():
        feature_map = layer(torch.ones(1, 1, 1, 1))
        loss = -3000.0 * feature_map.float().sum()
    assert feature_map.dtype == torch.float16
    loss.backward()
    assert recorded[0].dtype == torch.float32
    assert recorded[0].item() == 90000.0


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_step_with_non_finite_importance_leaves_the_emas_unchanged(bad: float) -> None:
    stats = DimensionStatistics(num_dims=3, momentum=0.9)
    stats.observe_features(torch.randn(4, 3))
    stats.observe_importance(torch.randn(4, 3))
    assert stats.update()
    before = {name: tensor.clone() for name, tensor in stats.state_dict().items()}
    stats.observe_features(torch.randn(4, 3))
    importance = torch.randn(4, 3)
    importance[1, 2] = bad
    stats.observe_importance(importance)
    assert not stats.update()
    for name, tensor in stats.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert stats.discarded_steps == 1


def test_a_skipped_optimizer_step_leaves_the_emas_unchanged() -> None:
    stats = DimensionStatistics(num_dims=3, momentum=0.9)
    stats.observe_features(torch.randn(4, 3))
    stats.observe_importance(torch.randn(4, 3))
    assert not stats.update(skip=True)
    assert not stats.ready and stats.variance.abs().sum() == 0
    stats.observe_features(torch.randn(4, 3))
    stats.observe_importance(torch.randn(4, 3))
    assert stats.update()  # the discarded batch is gone, the next one counts alone
    assert int(stats.variance_updates) == 1


class Planted(nn.Module):
    """A 1x1 conv 'layer4' with a diagonal weight: channel k has a planted spread."""

    def __init__(self, scales: torch.Tensor) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(len(scales), len(scales), 1, bias=False)
        with torch.no_grad():
            self.layer4.weight.copy_(torch.diag(scales)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def _selection_after_steps(autocast: bool) -> torch.Tensor:
    channels = 16
    generator = torch.Generator().manual_seed(0)
    spread = 2.0 ** torch.arange(channels, dtype=torch.float32) / 64  # well separated variance
    weights = 2.0 ** torch.randperm(channels, generator=generator).float()  # and importance
    encoder = Planted(spread)
    synth = FGSynth(channels, 16, FGSynthConfig(decoder_width=8)).attach(encoder.layer4)
    for _ in range(3):
        images = 1.0 + torch.rand(32, channels, 4, 4, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), synth.capture():
            z = encoder(images)
            loss = -(z.float() * weights).sum(1).mean()
        loss.backward()
        synth.update_statistics()
    return synth.select().mask


def test_bf16_autocast_on_separated_scores_gives_the_fp32_selection() -> None:
    reference = _selection_after_steps(autocast=False)
    assert 0 < int(reference.sum()) < 16
    assert torch.equal(_selection_after_steps(autocast=True), reference)

"""Pair quality: exact values of R², selectivity and re-encoding correlation; a decoder that
reconstructs layout-carrying features; the decoder's own Adam; the headroom measurement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_fgsynth.data.fgmarks import FGMarksConfig, generate
from solo_fgsynth.synth import (
    DecoderOptimizer,
    FeatureDecoder,
    decoder_headroom,
    pair_selectivity,
    random_mask_like,
    recon_r2,
    reconstruction_loss,
    reencode_correlation,
)


def test_recon_r2_is_one_for_a_copy_zero_for_the_mean_image_and_exact_in_between() -> None:
    images = torch.tensor([0.0, 2.0, 4.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    assert recon_r2(images, images) == 1.0
    assert recon_r2(torch.full_like(images, 2.0), images) == 0.0
    # errors of 1 everywhere against a baseline MSE of (4 + 0 + 4) / 3
    assert recon_r2(images + 1.0, images) == pytest.approx(1 - 1 / (8 / 3))


def test_recon_r2_at_8px_compares_average_pooled_images() -> None:
    images = torch.randn(4, 3, 16, 16)
    checker = torch.ones(16, 16)
    checker[::2, ::2] = checker[1::2, 1::2] = -1.0  # averages to 0 over every 2x2 block
    assert recon_r2(images + checker, images, pooled_size=8) == pytest.approx(1.0, abs=1e-6)
    assert recon_r2(images + checker, images) < 0.5


def test_recon_r2_rejects_mismatched_shapes_and_a_single_image() -> None:
    with pytest.raises(ValueError, match="one shape"):
        recon_r2(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 images"):
        recon_r2(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_pair_selectivity_on_constructed_changes() -> None:
    encoded = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 4.0, 2.0, 4.0]])
    # stds over the two images: sqrt(2) and 2 sqrt(2); changes of 1 on dims 0, 2 and 4 on 1, 3
    perturbed = encoded + torch.tensor([1.0, 4.0, 1.0, 4.0])
    selected = torch.tensor([False, True, False, False])
    # selected: 4 / (2 sqrt 2); kept: mean(1 / sqrt 2, 1 / sqrt 2, 4 / (2 sqrt 2))
    kept = (2 / 2**0.5 + 4 / (2 * 2**0.5)) / 3
    expected = (4 / (2 * 2**0.5)) / kept
    assert pair_selectivity(encoded, perturbed, selected) == pytest.approx(expected)
    only_selected = encoded + torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert pair_selectivity(encoded, only_selected + 1e-9, selected) > 1e6


def test_pair_selectivity_is_one_when_the_change_spreads_evenly_in_each_dims_spread() -> None:
    encoded = torch.randn(50, 6) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 5.0])
    perturbed = encoded + 0.2 * encoded.std(dim=0)
    selected = torch.tensor([True, True, False, False, False, False])
    assert pair_selectivity(encoded, perturbed, selected) == pytest.approx(1.0, rel=1e-5)


def test_pair_selectivity_leaves_out_dims_constant_over_the_images() -> None:
    encoded = torch.tensor([[0.0, 0.0, 5.0, 0.0], [2.0, 4.0, 5.0 + 1e-9, 0.0]])
    perturbed = encoded + torch.tensor([1.0, 4.0, 1e-6, 0.0])
    with_dead = torch.tensor([False, True, True, False])  # dims 2 (near-constant), 3 (dead)
    expected = pair_selectivity(encoded[:, :2], perturbed[:, :2], torch.tensor([False, True]))
    assert pair_selectivity(encoded, perturbed, with_dead) == pytest.approx(expected)
    only_dead = torch.tensor([False, False, True, True])
    assert math.isnan(pair_selectivity(encoded, perturbed, only_dead))


def test_pair_selectivity_needs_selected_and_kept_dims() -> None:
    encoded = torch.randn(4, 3)
    with pytest.raises(ValueError, match="both selected and kept"):
        pair_selectivity(encoded, encoded, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean mask of shape"):
        pair_selectivity(encoded, encoded, torch.ones(2, dtype=torch.bool))


def test_reencode_correlation_is_the_mean_per_dim_pearson_correlation() -> None:
    features = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0], [2.0, 2.0, 5.0]])
    encoded = torch.stack([3 * features[:, 0] + 1, -features[:, 1], features[:, 2]], dim=1)
    # dim 0: +1, dim 1: -1, dim 2 constant (left out)
    assert reencode_correlation(encoded, features) == pytest.approx(0.0)
    assert reencode_correlation(features, features) == pytest.approx(1.0)


def test_random_mask_like_keeps_the_count_and_varies_the_place() -> None:
    mask = torch.tensor([True, True, True, False, False, False, False, False])
    draws = {
        tuple(random_mask_like(mask, torch.Generator().manual_seed(s)).tolist()) for s in range(8)
    }
    assert all(sum(draw) == 3 for draw in draws) and len(draws) > 1


def _layout_data() -> tuple[torch.Tensor, ...]:
    """fgmarks images (normalised) and features that carry their 4x4 layout, train and held out."""
    config = FGMarksConfig(
        num_classes=12,
        image_size=32,
        detail_size=0.3,
        nuisance=0.5,
        train_per_class=40,
        val_per_class=10,
    )

    def prepare(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(generate(config, split)[0]).permute(0, 3, 1, 2).float()
        images = (images / 255 - 0.5) / 0.25
        features = F.pad(F.adaptive_avg_pool2d(images, 4).flatten(1), (0, 64 - 48))
        return features, images

    return (*prepare("train"), *prepare("val"))


def test_decoder_reconstructs_layout_carrying_features_r2_above_half_at_full_resolution() -> None:
    train_features, train_images, val_features, val_images = _layout_data()
    torch.manual_seed(0)
    decoder = FeatureDecoder(64, 32, width=16)
    optimizer = DecoderOptimizer(decoder, lr=1e-3, warmup_steps=0, schedule="constant")
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        rows = torch.randint(0, len(train_features), (64,), generator=generator)
        reconstruction_loss(decoder(train_features[rows]), train_images[rows]).backward()
        assert optimizer.step()
    with torch.no_grad():
        decoded = decoder(val_features)
    assert recon_r2(decoded, val_images) >= 0.5
    # the mean image of the training set, the output of a starved decoder, scores about 0
    mean_image = train_images.mean(0, keepdim=True).expand_as(val_images)
    assert recon_r2(mean_image, val_images) < 0.05


def test_headroom_of_layout_carrying_features_is_high_and_of_noise_is_about_zero() -> None:
    train_features, train_images, val_features, val_images = _layout_data()
    kwargs = {"width": 16, "steps": 150}
    assert decoder_headroom(train_features, train_images, val_features, val_images, **kwargs) > 0.6
    noise = decoder_headroom(
        torch.randn_like(train_features),
        train_images,
        torch.randn_like(val_features),
        val_images,
        **kwargs,
    )
    assert noise < 0.1


def test_decoder_optimizer_is_adam_with_a_linear_warm_up_on_unscaled_gradients() -> None:
    torch.manual_seed(0)
    decoder = torch.nn.Linear(3, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(decoder.state_dict())
    optimizer = DecoderOptimizer(decoder, lr=0.1, warmup_steps=3, schedule="constant")
    adam = torch.optim.Adam(reference.parameters(), lr=0.1)
    x = torch.randn(5, 3)
    for step in range(5):
        assert optimizer.lr == pytest.approx(0.1 * min(1.0, (step + 1) / 4))
        for group in adam.param_groups:
            group["lr"] = 0.1 * min(1.0, (step + 1) / 4)
        (1024.0 * decoder(x).square().sum()).backward()  # a scaled loss, as under a GradScaler
        optimizer.step(grad_scale=1024.0)
        adam.zero_grad()
        reference(x).square().sum().backward()
        adam.step()
        assert all(p.grad is None for p in decoder.parameters())
        for ours, theirs in zip(decoder.parameters(), reference.parameters(), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-6)


def test_decoder_cosine_schedule_warms_up_then_decays_to_zero_at_the_planned_step() -> None:
    decoder = torch.nn.Linear(2, 1)
    optimizer = DecoderOptimizer(decoder, 1.0, warmup_steps=2, schedule="cosine", total_steps=6)
    # written out: warm-up (t + 1) / 3, then 0.5 * (1 + cos(pi * (t - 2) / 4)), then 0
    expected = [1 / 3, 2 / 3, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5]
    expected += [0.5 + 0.5 * math.cos(3 * math.pi / 4), 0.0, 0.0]
    for rate in expected:
        assert optimizer.lr == pytest.approx(rate)
        decoder(torch.ones(1, 2)).sum().backward()
        assert optimizer.step()
    resumed = DecoderOptimizer(torch.nn.Linear(2, 1), 1.0, 2, schedule="cosine", total_steps=6)
    resumed.load_state_dict(DecoderOptimizer(decoder, 1.0, 2, "cosine", 6).state_dict())
    assert resumed.lr == pytest.approx(1 / 3)  # a fresh state restarts the schedule
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.steps_taken == 8 and resumed.lr == 0.0


def test_decoder_cosine_schedule_without_the_run_length_refuses_to_step() -> None:
    decoder = torch.nn.Linear(2, 1)
    optimizer = DecoderOptimizer(decoder, lr=0.1, warmup_steps=0, schedule="cosine")
    decoder(torch.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match=r"call plan\(total_steps\) \(FGSynth.plan_decoder\)"):
        optimizer.step()
    with pytest.raises(ValueError, match=r"total_steps=0 is out of range: allowed is an integer"):
        optimizer.plan(0)
    unknown = r"schedule='linear' is not supported: allowed are constant, cosine"
    with pytest.raises(ValueError, match=unknown):
        DecoderOptimizer(decoder, lr=0.1, warmup_steps=0, schedule="linear")


def test_decoder_optimizer_skips_non_finite_gradients_and_steps_without_any() -> None:
    decoder = torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in decoder.parameters()]
    optimizer = DecoderOptimizer(decoder, lr=0.1, warmup_steps=0, total_steps=4)
    assert not optimizer.step()
    (decoder(torch.ones(1, 2)) * float("inf")).sum().backward()
    assert not optimizer.step()
    assert all(p.grad is None for p in decoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, decoder.parameters(), strict=True))

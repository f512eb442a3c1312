"""Synthesized pairs: their rows, their size, how they are measured and pictured, the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from solo_fgsynth.synth import (
    FGSynth,
    FGSynthConfig,
    frozen_batchnorm_statistics,
    measure_pairs,
    pair_diff_ratio,
    pair_feature_ratio,
    pair_selectivity,
    pairs_grid,
    recon_r2,
    save_pairs_png,
)

DIMS = 8


def _ready_synth(variance: torch.Tensor, importance: torch.Tensor, **knobs: object) -> FGSynth:
    """An FGSynth whose tracked statistics are exactly ``variance`` and ``importance``."""
    config = FGSynthConfig(synth_start_epoch=0, decoder_width=8, **knobs)
    synth = FGSynth(DIMS, 16, config)
    synth.statistics.variance.copy_(variance)
    synth.statistics.importance.copy_(importance)
    synth.statistics.importance_magnitude.copy_(importance.abs())
    synth.statistics.variance_updates.fill_(1)
    synth.statistics.importance_updates.fill_(1)
    return synth


VARIANCE = torch.tensor([1e-6, 1.0, 1e-6, 4.0, 1.0, 9.0, 1.0, 1.0])
IMPORTANCE = torch.tensor([5.0, 0.0, 6.0, 7.0, 8.0, 9.0, 3.0, 4.0])


def test_forward_pairs_are_decoded_z_of_the_subset_and_decoded_z_prime() -> None:
    synth = _ready_synth(VARIANCE, IMPORTANCE, synth_fraction=0.5, var_fraction=0.25)
    z, views = torch.randn(6, DIMS), torch.randn(6, 3, 16, 16)
    out = synth(z, views, epoch=0)
    assert out.pair is not None and out.subset is not None and out.perturbed is not None
    assert out.subset.shape == (3,) and len(set(out.subset.tolist())) == 3
    mask = out.selection.mask
    assert mask.nonzero().flatten().tolist() == [0, 1, 2, 6]  # variance {0, 2}, |CAM| {1, 6}
    assert torch.equal(out.perturbed[:, ~mask], z[out.subset][:, ~mask])
    assert (out.perturbed[:, mask] != z[out.subset][:, mask]).all()
    for row, source in enumerate(out.subset.tolist()):
        alone = synth.decoder(z[source : source + 1])[0]
        assert torch.allclose(out.pair[0][row], alone, atol=1e-5)
        decoded_alone = synth.decoder(out.perturbed[row : row + 1])[0]
        assert torch.allclose(out.pair[1][row], decoded_alone, atol=1e-5)


def test_noise_is_sized_by_each_selected_dims_own_tracked_std() -> None:
    variance = torch.tensor([0.25, 1.0, 4.0, 4.5, 2.0, 9.0, 3.0, 5.0])
    synth = _ready_synth(
        variance,
        IMPORTANCE,
        synth_fraction=1.0,
        var_fraction=0.25,
        cam_fraction=0.0,
        perturbation="noise",
        strength=0.5,
    )
    z = torch.zeros(20000, DIMS)
    perturbed, selection = synth.perturb(z)
    assert selection.mask.nonzero().flatten().tolist() == [0, 1]  # the two lowest variances
    assert synth.noise_scale.tolist() == pytest.approx(variance.sqrt().tolist())
    # strength 0.5 x own std (0.5 and 1.0): 0.25 and 0.5
    assert perturbed[:, [0, 1]].std(dim=0).tolist() == pytest.approx([0.25, 0.5], rel=0.03)
    assert torch.equal(perturbed[:, 2:], z[:, 2:])


def test_interpolate_is_the_default_at_strength_one() -> None:
    assert FGSynthConfig().perturbation == "interpolate" and FGSynthConfig().strength == 1.0


def test_shuffle_takes_the_selected_values_of_another_sample() -> None:
    synth = _ready_synth(
        VARIANCE, IMPORTANCE, var_fraction=0.25, cam_fraction=0.0, perturbation="shuffle"
    )
    z = torch.arange(5 * DIMS, dtype=torch.float32).view(5, DIMS)
    perturbed, selection = synth.perturb(z, generator=torch.Generator().manual_seed(0))
    mask = selection.mask
    for row in range(5):
        sources = [other for other in range(5) if torch.equal(perturbed[row, mask], z[other, mask])]
        assert sources and sources[0] != row  # a real sample's own values, not this row's
    assert torch.equal(perturbed[:, ~mask], z[:, ~mask])


def test_a_single_synthesized_row_with_shuffle_works() -> None:
    synth = _ready_synth(VARIANCE, IMPORTANCE, synth_fraction=0.2, perturbation="shuffle")
    out = synth(torch.randn(4, DIMS), torch.randn(4, 3, 16, 16), epoch=0)
    assert out.pair is not None and out.pair[0].shape == (1, 3, 16, 16)


def test_pair_ratios_on_constructed_values() -> None:
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    # distances between rows: 5, 0, 5 (each twice): mean over the 6 ordered pairs = 20 / 6
    perturbed = torch.tensor([[0.0, 1.0]])
    ratio = pair_feature_ratio(features, perturbed, rows=torch.tensor([0]))
    assert ratio == pytest.approx(1.0 / (20 / 6))
    images = torch.zeros(2, 1, 1, 2)
    images[1] = 2.0
    # mean |D(z_0) - D(z_1)| = 2; the pair differs by 0.5 in one of two pixels: 0.25
    shifted = torch.tensor([[[[0.5, 0.0]]]])
    assert pair_diff_ratio(images, shifted, rows=torch.tensor([0])) == pytest.approx(0.125)


def test_measure_pairs_matches_the_quality_functions_on_one_encoding() -> None:
    torch.manual_seed(0)
    synth = _ready_synth(VARIANCE, IMPORTANCE, var_fraction=0.25)
    encoder = nn.Sequential(nn.Conv2d(3, DIMS, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.randn(10, 3, 16, 16)
    measured = measure_pairs(synth, encoder, images, generator=torch.Generator().manual_seed(1))
    z = encoder(images)
    generator = torch.Generator().manual_seed(1)
    perturbed, selection = synth.perturb(z, generator=generator)
    decoded, decoded_perturbed = synth.decoder(z), synth.decoder(perturbed)
    assert measured.pair_feature_ratio == pytest.approx(pair_feature_ratio(z, perturbed))
    assert measured.pair_diff_ratio == pytest.approx(pair_diff_ratio(decoded, decoded_perturbed))
    assert measured.recon_r2 == pytest.approx(recon_r2(decoded, images))
    assert measured.recon_r2_8px == pytest.approx(recon_r2(decoded, images, 8))
    expected = pair_selectivity(encoder(decoded), encoder(decoded_perturbed), selection.mask)
    assert measured.pair_selectivity == pytest.approx(expected, rel=1e-5)
    assert measured.selected_dims == int(selection.mask.sum())
    assert measured.decoded_perturbed.shape == (10, 3, 16, 16)
    assert set(measured.numbers()) == {
        "pair_feature_ratio",
        "pair_diff_ratio",
        "recon_r2",
        "recon_r2_8px",
        "pair_selectivity",
        "pair_selectivity_control",
        "reencode_correlation",
        "selected_dims",
    }


def test_pairs_png_has_one_row_per_image_and_four_columns(tmp_path: Path) -> None:
    images, decoded = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    grid = pairs_grid(images, decoded, decoded + 0.1, mean=[0.5] * 3, std=[0.25] * 3)
    path = tmp_path / "pairs.png"
    save_pairs_png(grid, path)
    with Image.open(path) as picture:
        assert picture.size == (4 * 18 + 2, 8 * 18 + 2)
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.png"]  # no temp file left
    assert float(grid.max()) <= 1.0 and float(grid.min()) >= 0.0


def test_pairs_png_with_a_reference_has_a_fifth_column_of_those_images() -> None:
    images, decoded = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    reference = torch.full((2, 3, 8, 8), 2.0)  # 2 * std 0.25 + mean 0.5 = 1.0 in pixels
    grid = pairs_grid(images, decoded, decoded, [0.5] * 3, [0.25] * 3, reference=reference)
    assert tuple(grid.shape) == (3, 2 * 10 + 2, 5 * 10 + 2)
    fifth = grid[:, 2:10, 4 * 10 + 2 : 5 * 10]
    assert torch.equal(fifth, torch.ones_like(fifth))
    fourth = grid[:, 2:10, 3 * 10 + 2 : 4 * 10]  # D(z) == D(z'): no difference
    assert torch.equal(fourth, torch.zeros_like(fourth))


def test_each_pairs_row_scales_its_own_difference_so_a_small_one_still_shows_white() -> None:
    images, decoded = torch.zeros(3, 3, 8, 8), torch.zeros(3, 3, 8, 8)
    perturbed = decoded.clone()
    perturbed[0, :, 0, 0] = 10.0  # a large difference in the first row's corner
    perturbed[1, :, 7, 7] = 0.01  # a 1000x smaller one in the second row's opposite corner
    perturbed[1, :, 0, 0] = 0.005  # half of it
    perturbed[2, :, 3, 3] = 1e-7  # round-off in the third row
    grid = pairs_grid(images, decoded, perturbed, [0.5] * 3, [0.25] * 3)
    first, second, third = (grid[0, 2 + 10 * row : 10 + 10 * row, 32:40] for row in range(3))
    assert first[0, 0] == 1.0 and first.sum() == 1.0
    assert second[7, 7] == 1.0 and second[0, 0] == pytest.approx(0.5)
    assert second.sum() == pytest.approx(1.5)
    assert third.max() == pytest.approx(1e-3)  # under the floor: black, not white


def test_pairs_grid_names_a_reference_of_another_shape() -> None:
    images = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"and the reference \(2, 3, 4, 4\) must have one shape"):
        pairs_grid(images, images, images, [0.5] * 3, [0.25] * 3, reference=images[..., :4, :4])


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(
            nn.Conv2d(3, DIMS, 3, padding=1, stride=2), nn.BatchNorm2d(DIMS), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def _loss_terms(encoder: Encoder, synth: FGSynth, x1, x2, use_pairs: bool):
    with synth.capture():
        z1, z2 = encoder(x1), encoder(x2)
    ssl = (z1 - z2).square().sum(1).mean()
    out = synth(z1, x1, epoch=0)
    pair_loss = None
    if use_pairs:
        with frozen_batchnorm_statistics(encoder):
            pair_loss = (encoder(out.pair[0]) - encoder(out.pair[1])).square().sum(1).mean()
    return ssl, out.recon_loss, pair_loss


def test_total_loss_is_exactly_the_weighted_sum_and_the_pair_term_reaches_the_encoder() -> None:
    encoder = Encoder()
    synth = _ready_synth(VARIANCE, IMPORTANCE, alpha=0.3, nu=2.5, synth_fraction=0.5)
    synth.attach(encoder.layer4)
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    grads = {}
    for use_pairs in (True, False):
        torch.manual_seed(3)
        encoder.zero_grad()
        ssl, recon, pair = _loss_terms(encoder, synth, x1, x2, use_pairs)
        total = synth.total_loss(ssl, recon, pair)
        expected = ssl + 0.3 * recon + (2.5 * pair if use_pairs else 0.0)
        assert total.item() == expected.item()
        total.backward()
        synth.statistics.update(skip=True)  # keep the planted statistics for the second run
        grads[use_pairs] = encoder.layer4[0].weight.grad.clone()
    assert not torch.allclose(grads[True], grads[False])


@pytest.mark.parametrize(("position", "name"), [(0, "L_C"), (1, "L_R"), (2, "L_Cp")])
def test_a_non_finite_term_is_named_with_the_step(position: int, name: str) -> None:
    synth = _ready_synth(VARIANCE, IMPORTANCE)
    terms = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)]
    terms[position] = torch.tensor(float("nan"))
    with pytest.raises(FloatingPointError, match=rf"non-finite {name} \(nan\) at step 7"):
        synth.total_loss(*terms, step=7)

"""Selection of non-discriminative dims and their perturbation; knob validation."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth.synth import (
    FGSynthConfig,
    lowest_fraction_mask,
    partner_indices,
    perturb_features,
    ranking_scores,
    select_dimensions,
)

VARIANCE = torch.tensor([0.1, 5.0, 0.2, 4.0, 3.0, 0.3, 2.0, 1.0])
IMPORTANCE = torch.tensor([9.0, -1.0, 8.0, -2.0, 7.0, 6.0, 5.0, 0.0])


def test_lowest_fraction_mask_picks_the_lowest_scores() -> None:
    assert lowest_fraction_mask(VARIANCE, 0.25).nonzero().flatten().tolist() == [0, 2]
    assert int(lowest_fraction_mask(VARIANCE, 0.0).sum()) == 0
    assert int(lowest_fraction_mask(VARIANCE, 1.0).sum()) == 8


@pytest.mark.parametrize(
    ("criterion", "combine", "expected"),
    [
        ("variance", "union", [0, 2, 5]),
        ("gradcam", "union", [1, 3, 7]),
        ("both", "union", [0, 1, 2, 3, 5, 7]),
        ("both", "intersection", []),
    ],
)
def test_criteria_and_combination(criterion: str, combine: str, expected: list[int]) -> None:
    selection = select_dimensions(
        VARIANCE,
        IMPORTANCE,
        var_fraction=0.375,
        cam_fraction=0.375,
        criterion=criterion,
        combine=combine,
    )
    assert selection.mask.nonzero().flatten().tolist() == expected
    assert selection.size == len(expected)
    assert selection.overlap == 0.0


def test_overlap_is_the_jaccard_index_of_the_two_proposals() -> None:
    importance = -VARIANCE  # lowest importance = highest variance: disjoint proposals
    importance[0] = -100.0  # dim 0 is now proposed by both
    selection = select_dimensions(VARIANCE, importance, var_fraction=0.25, cam_fraction=0.25)
    # variance proposes {0, 2}; Grad-CAM proposes {0, 1}: |{0}| / |{0, 1, 2}|
    assert selection.overlap == pytest.approx(1 / 3)


def test_random_selection_has_the_size_of_the_criteria_selection() -> None:
    generator = torch.Generator().manual_seed(3)
    for combine in ("union", "intersection"):
        reference = select_dimensions(
            VARIANCE, IMPORTANCE, var_fraction=0.5, cam_fraction=0.5, combine=combine
        )
        control = select_dimensions(
            VARIANCE,
            IMPORTANCE,
            var_fraction=0.5,
            cam_fraction=0.5,
            combine=combine,
            criterion="random",
            generator=generator,
        )
        assert control.size == reference.size


@pytest.mark.parametrize(
    ("ranking", "expected"),
    [("magnitude", [4, 5]), ("signed", [1, 2]), ("positive", [1, 2])],
)
def test_cam_ranking_decides_which_importances_count_as_least(
    ranking: str, expected: list[int]
) -> None:
    signed = torch.tensor([0.01, -5.0, -3.0, 0.02, 4.0, 6.0, 7.0, 8.0])
    # per-sample magnitudes: dims 0 and 3 have near-zero means of large, mixed-sign values
    magnitude = torch.tensor([9.0, 5.0, 3.0, 9.0, 0.5, 0.6, 7.0, 8.0])
    selection = select_dimensions(
        VARIANCE,
        ranking_scores(signed, magnitude, ranking),
        var_fraction=0.0,
        cam_fraction=0.25,
        criterion="gradcam",
    )
    assert selection.mask.nonzero().flatten().tolist() == expected


def test_intersection_keeps_the_dims_both_criteria_propose() -> None:
    importance = torch.tensor([0.0, 9.0, 0.1, 8.0, 7.0, 0.2, 6.0, 5.0])
    selection = select_dimensions(
        VARIANCE, importance, var_fraction=0.375, cam_fraction=0.5, combine="intersection"
    )
    # variance proposes {0, 2, 5}; Grad-CAM (magnitude) proposes {0, 2, 5, 7}
    assert selection.mask.nonzero().flatten().tolist() == [0, 2, 5]
    assert selection.overlap == pytest.approx(3 / 4)


def test_random_selection_is_not_the_criteria_mask_and_is_uniform_over_dims() -> None:
    generator = torch.Generator().manual_seed(5)
    reference = select_dimensions(VARIANCE, IMPORTANCE, var_fraction=0.25, cam_fraction=0.25)
    counts = torch.zeros(8)
    draws = 4000
    differs = 0
    for _ in range(draws):
        control = select_dimensions(
            VARIANCE,
            IMPORTANCE,
            var_fraction=0.25,
            cam_fraction=0.25,
            criterion="random",
            generator=generator,
        )
        counts += control.mask.float()
        differs += int(not torch.equal(control.mask, reference.mask))
    assert differs > draws * 0.9  # 1 in C(8, 4) = 70 draws equals it by chance
    expected = draws * reference.size / 8
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 24.32  # 7 degrees of freedom, p = 0.001


def test_perturbation_keeps_unselected_dims_bit_identical_and_changes_selected_ones() -> None:
    features = torch.randn(6, 8)
    mask = torch.tensor([True, False, True, False, False, True, False, False])
    for mode, strength in (("noise", 1.0), ("shuffle", 1.0), ("interpolate", 0.8)):
        perturbed = perturb_features(features, mask, mode=mode, strength=strength, scale=1.0)
        assert torch.equal(perturbed[:, ~mask], features[:, ~mask]), mode
        assert (perturbed[:, mask] != features[:, mask]).all(), mode


def test_shuffle_takes_the_values_of_another_sample() -> None:
    features = torch.arange(12.0).reshape(4, 3)
    mask = torch.tensor([False, True, False])
    perturbed = perturb_features(features, mask, mode="shuffle", strength=1.0)
    for row in range(4):
        others = [features[other, 1] for other in range(4) if other != row]
        assert perturbed[row, 1] in others


@pytest.mark.parametrize("mode", ["shuffle", "interpolate"])
def test_a_one_row_subset_mixes_with_a_partner_from_the_whole_batch(mode: str) -> None:
    features = torch.arange(12.0).reshape(4, 3)
    mask = torch.tensor([True, True, False])
    rows = torch.tensor([2])
    perturbed = perturb_features(features, mask, mode=mode, strength=1.0, rows=rows)
    assert perturbed.shape == (1, 3)
    assert torch.equal(perturbed[:, 2], features[rows, 2])
    if mode == "shuffle":
        assert perturbed[0, 0] in features[[0, 1, 3], 0]


def test_noise_has_one_std_on_every_selected_dim_strength_times_scale() -> None:
    features = torch.zeros(20000, 3)
    mask = torch.tensor([True, True, False])
    perturbed = perturb_features(features, mask, mode="noise", strength=0.5, scale=4.0)
    assert perturbed.std(dim=0).tolist() == pytest.approx([2.0, 2.0, 0.0], rel=0.03, abs=1e-9)


def test_noise_with_a_per_dim_scale_gives_each_selected_dim_its_own_std() -> None:
    features = torch.zeros(20000, 3)
    mask = torch.tensor([True, True, False])
    scale = torch.tensor([1.0, 4.0, 9.0])
    perturbed = perturb_features(features, mask, mode="noise", strength=0.5, scale=scale)
    assert perturbed.std(dim=0).tolist() == pytest.approx([0.5, 2.0, 0.0], rel=0.03, abs=1e-9)


@pytest.mark.parametrize("scale", [None, torch.ones(2)])
def test_noise_without_a_fitting_scale_is_rejected(scale: torch.Tensor | None) -> None:
    with pytest.raises(ValueError, match=r"needs a scale: one number or one per dimension \(3,\)"):
        perturb_features(
            torch.randn(2, 3),
            torch.ones(3, dtype=torch.bool),
            mode="noise",
            strength=1,
            scale=scale,
        )


def test_partners_are_never_the_row_itself_and_uniform_over_the_others() -> None:
    generator = torch.Generator().manual_seed(0)
    partners = partner_indices(5, torch.zeros(8000, dtype=torch.long), generator)
    counts = torch.bincount(partners, minlength=5)
    assert counts[0] == 0
    expected = 8000 / 4
    chi_square = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi_square < 16.27  # 3 degrees of freedom, p = 0.001
    with pytest.raises(ValueError, match="batch_size=1"):
        partner_indices(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"var_fraction": 1.5},
            r"var_fraction=1\.5 is out of range: allowed is a number in \[0, 1\]",
        ),
        ({"cam_fraction": -0.1}, r"cam_fraction=-0\.1 is out of range"),
        ({"synth_fraction": 2}, r"synth_fraction=2 is out of range"),
        ({"criterion": "entropy"}, r"criterion='entropy' is not supported: allowed are both, "),
        ({"combine": "xor"}, r"combine='xor' is not supported: allowed are union, intersection"),
        ({"perturbation": "blur"}, r"perturbation='blur' is not supported"),
        (
            {"perturbation": "noise", "strength": 0.0},
            r"strength=0\.0 is out of range: allowed is a finite number > 0 "
            r"\(for perturbation 'noise'",
        ),
        ({"decoder_lr": 0}, r"decoder_lr=0 is out of range: allowed is a finite number > 0"),
        ({"decoder_warmup_steps": -1}, r"decoder_warmup_steps=-1 is out of range"),
        (
            {"perturbation": "shuffle", "strength": 1.5},
            r"allowed is a number in \(0, 1\] \(for perturbation 'shuffle': the weight",
        ),
        ({"alpha": -1.0}, r"alpha=-1\.0 is out of range"),
        (
            {"ema_momentum": 1.0},
            r"ema_momentum=1\.0 is out of range: allowed is a number in \[0, 1\)",
        ),
        ({"synth_start_epoch": -1}, r"synth_start_epoch=-1 is out of range"),
        ({"decoder_width": 4}, r"decoder_width=4 is out of range: allowed is an integer >= 8"),
        (
            {"synth_grad_to_decoder": "yes"},
            r"synth_grad_to_decoder='yes' is not supported: allowed is true or false",
        ),
        ({"recon_to_encoder": 1}, r"recon_to_encoder=1 is not supported: allowed is true or false"),
        (
            {"cam_ranking": "abs"},
            r"cam_ranking='abs' is not supported: allowed are magnitude, signed, positive",
        ),
    ],
)
def test_bad_knobs_raise_value_errors_naming_value_and_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FGSynthConfig(**kwargs)


def test_unknown_perturbation_mode_in_the_function_is_rejected() -> None:
    with pytest.raises(ValueError, match="perturbation='swap'"):
        perturb_features(
            torch.randn(2, 3), torch.ones(3, dtype=torch.bool), mode="swap", strength=1
        )

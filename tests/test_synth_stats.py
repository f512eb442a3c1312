"""Variance/importance statistics: exact EMA math, planted dimensions, DDP equality, state_dict."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from solo_fgsynth.synth import DimensionStatistics, FGSynthConfig, lowest_fraction_mask


def test_first_update_sets_and_later_updates_follow_the_ema_formula() -> None:
    stats = DimensionStatistics(num_dims=2, momentum=0.9)
    first = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    second = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    stats.observe_features(first)
    stats.observe_importance(torch.tensor([[1.0, -1.0], [3.0, -3.0]]))
    stats.update()
    # unbiased variances of the columns of `first`: [4, 3]
    assert torch.allclose(stats.variance, torch.tensor([4.0, 3.0]))
    assert torch.allclose(stats.importance, torch.tensor([2.0, -2.0]))
    assert torch.allclose(stats.importance_magnitude, torch.tensor([2.0, 2.0]))
    stats.observe_features(second)
    stats.observe_importance(torch.tensor([[0.0, 4.0]]))
    stats.update()
    # second batch variances [2, 0]; EMA: 0.9 * old + 0.1 * new
    assert torch.allclose(stats.variance, torch.tensor([0.9 * 4 + 0.1 * 2, 0.9 * 3 + 0.1 * 0]))
    assert torch.allclose(stats.importance, torch.tensor([0.9 * 2 + 0.0, 0.9 * -2 + 0.4]))
    assert torch.allclose(stats.importance_magnitude, torch.tensor([0.9 * 2, 0.9 * 2 + 0.4]))
    assert int(stats.variance_updates) == 2 and int(stats.importance_updates) == 2


def test_variance_criterion_picks_exactly_the_planted_low_variance_dims() -> None:
    generator = torch.Generator().manual_seed(1)
    planted = torch.tensor([3, 7, 11, 12])
    stats = DimensionStatistics(num_dims=16, momentum=0.5)
    for _ in range(5):
        z = torch.randn(64, 16, generator=generator) * 3.0
        z[:, planted] = 0.01 * torch.randn(64, 4, generator=generator) + 5.0
        stats.observe_features(z)
        stats.update()
    selected = lowest_fraction_mask(stats.variance, 4 / 16).nonzero().flatten()
    assert selected.tolist() == planted.tolist()


def test_update_with_nothing_observed_changes_nothing() -> None:
    stats = DimensionStatistics(num_dims=3, momentum=0.9)
    stats.update()
    assert not stats.ready
    assert int(stats.variance_updates) == 0 and stats.variance.abs().sum() == 0


def test_state_dict_round_trip_restores_statistics_exactly() -> None:
    stats = DimensionStatistics(num_dims=5, momentum=0.8)
    for _ in range(3):
        stats.observe_features(torch.randn(10, 5))
        stats.observe_importance(torch.randn(10, 5))
        stats.update()
    restored = DimensionStatistics(num_dims=5, momentum=0.8)
    restored.load_state_dict(stats.state_dict())
    for name in ("variance", "importance", "variance_updates", "importance_updates"):
        assert torch.equal(getattr(restored, name), getattr(stats, name)), name
    assert restored.ready
    assert "_pending" not in stats.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_dims": 0, "momentum": 0.9}, "num_dims=0"),
        ({"num_dims": 4, "momentum": 1.0}, "momentum=1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DimensionStatistics(**kwargs)


def test_wrong_feature_width_is_an_error() -> None:
    stats = DimensionStatistics(num_dims=4, momentum=0.9)
    with pytest.raises(ValueError, match=r"expected \(batch, 4\)"):
        stats.observe_features(torch.randn(3, 5))


def _batches() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(3, 12, 6, generator=generator), torch.randn(3, 12, 6, generator=generator)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    features, importances = _batches()
    stats = DimensionStatistics(num_dims=6, momentum=0.7)
    shard = slice(rank * 6, (rank + 1) * 6)
    for step in range(features.shape[0]):
        stats.observe_features(features[step, shard])
        stats.observe_importance(importances[step, shard])
        stats.update()
    # one rank's optimizer step was skipped: every rank discards the step
    stats.observe_features(features[0, shard] * 100)
    stats.observe_importance(importances[0, shard] * 100)
    stats.update(skip=rank == 1)
    torch.save(stats.state_dict(), f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_ddp_reduction_equals_the_single_process_result_and_skips_agree() -> None:
    features, importances = _batches()
    single = DimensionStatistics(num_dims=6, momentum=0.7)
    for step in range(features.shape[0]):
        single.observe_features(features[step])
        single.observe_importance(importances[step])
        single.update()
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "stats")
        mp.spawn(_ddp_worker, args=(2, init_file, out_file), nprocs=2, join=True)
        per_rank = [torch.load(f"{out_file}.{rank}") for rank in range(2)]
    for state in per_rank:
        assert torch.allclose(state["variance"], single.variance, atol=1e-6)
        assert torch.allclose(state["importance"], single.importance, atol=1e-6)
    assert torch.equal(per_rank[0]["variance"], per_rank[1]["variance"])
    assert torch.equal(per_rank[0]["importance"], per_rank[1]["importance"])


def test_config_momentum_reaches_the_statistics() -> None:
    from solo_fgsynth.synth import FGSynth

    synth = FGSynth(feature_dim=8, crop_size=16, config=FGSynthConfig(ema_momentum=0.5))
    assert synth.statistics.momentum == 0.5


def test_per_sample_magnitude_is_tracked_where_the_signed_mean_cancels() -> None:
    stats = DimensionStatistics(num_dims=2, momentum=0.5)
    stats.observe_importance(torch.tensor([[5.0, 0.1], [-5.0, 0.1]]))
    stats.update()
    assert stats.importance.tolist() == pytest.approx([0.0, 0.1])
    assert stats.importance_magnitude.tolist() == pytest.approx([5.0, 0.1])
    assert stats.cam_scores("magnitude").tolist() == pytest.approx([5.0, 0.1])
    assert stats.cam_scores("signed").tolist() == pytest.approx([0.0, 0.1])


def test_a_state_without_the_magnitude_loads_and_restarts_the_gradcam_emas() -> None:
    old = DimensionStatistics(num_dims=3, momentum=0.5)
    old.observe_features(torch.randn(4, 3))
    old.observe_importance(torch.randn(4, 3))
    old.update()
    state = old.state_dict()
    del state["importance_magnitude"]
    stats = DimensionStatistics(num_dims=3, momentum=0.5)
    stats.load_state_dict(state)
    assert torch.equal(stats.variance, old.variance) and int(stats.variance_updates) == 1
    assert int(stats.importance_updates) == 0 and not stats.ready
    stats.observe_importance(torch.tensor([[1.0, -2.0, 3.0]]))
    stats.update()
    assert stats.importance.tolist() == [1.0, -2.0, 3.0]  # set afresh, not blended
    assert stats.importance_magnitude.tolist() == [1.0, 2.0, 3.0]

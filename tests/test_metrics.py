"""Evaluation metrics against hand-computed values on toy inputs."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth.metrics import knn_top1, linear_probe_top1, retrieval_metrics


def test_retrieval_metrics_match_a_hand_computation() -> None:
    # Angles on the unit circle: 0, 10, 100, 110 degrees with labels a, b, a, b.
    angles = torch.tensor([0.0, 10.0, 100.0, 110.0]).deg2rad()
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 1, 0, 1])
    # Rankings (nearest first): q0: 1, 2, 3 -> relevant at rank 2; q1: 0, 2, 3 -> rank 3;
    # q2: 3, 1, 0 -> rank 3; q3: 2, 1, 0 -> rank 2.
    metrics = retrieval_metrics(features, labels, ks=(1, 2))
    assert metrics["retrieval_top1"] == 0.0
    assert metrics["retrieval_top2"] == 50.0
    assert metrics["retrieval_map"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4)


def test_perfectly_clustered_features_score_100() -> None:
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    metrics = retrieval_metrics(features, labels)
    assert metrics == {"retrieval_top1": 100.0, "retrieval_top5": 100.0, "retrieval_map": 100.0}


def test_knn_weights_votes_by_similarity() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    train_labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.05]])
    # k=3: one very similar vote for class 0 outweighs two orthogonal votes for class 1.
    assert knn_top1(train, train_labels, test, torch.tensor([0]), k=3) == 100.0
    # With a high temperature the votes are nearly equal, and the majority wins.
    assert knn_top1(train, train_labels, test, torch.tensor([0]), k=3, temperature=100.0) == 0.0


def test_linear_probe_separates_linearly_separable_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    labels = torch.arange(3).repeat_interleave(30)
    features = centers[labels] + 0.3 * torch.randn(90, 2, generator=generator)
    assert linear_probe_top1(features, labels, features, labels) == 100.0


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        retrieval_metrics(torch.randn(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="k=0"):
        knn_top1(
            torch.randn(3, 2),
            torch.zeros(3, dtype=torch.long),
            torch.randn(1, 2),
            torch.zeros(1, dtype=torch.long),
            k=0,
        )

"""Evaluation metrics against hand computations and scikit-learn on constructed inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from solo_fgsynth.metrics import (
    fit_linear_probe,
    knn_top1,
    linear_probe_top1,
    retrieval_metrics,
    weighted_knn,
)


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


def _cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    normalized = torch.nn.functional.normalize(features.double(), dim=1)
    return normalized @ normalized.T


@pytest.mark.parametrize("seed", range(12))
def test_retrieval_map_equals_scikit_learns_average_precision_with_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    samples = 8 + 4 * (seed % 4)
    # few distinct vectors, so many queries see items of exactly equal similarity
    features = torch.randint(0, 3, (samples, 3), generator=generator).double() + 0.5
    labels = torch.randint(0, 3, (samples,), generator=generator)
    similarity = _cosine_similarity(features)
    expected = []
    for query in range(samples):
        others = [i for i in range(samples) if i != query]
        relevant = (labels[others] == labels[query]).numpy()
        if relevant.any():
            scores = similarity[query, others].numpy()
            expected.append(average_precision_score(relevant, scores))
    assert retrieval_metrics(features, labels)["retrieval_map"] == pytest.approx(
        100.0 * float(np.mean(expected)), abs=1e-9
    )


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_top_k_equals_a_brute_force_count_without_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(30, 5, generator=generator)
    labels = torch.randint(0, 4, (30,), generator=generator)
    similarity = _cosine_similarity(features).tolist()
    metrics = retrieval_metrics(features, labels, ks=(1, 3, 10))
    for k in (1, 3, 10):
        hits = 0
        for query in range(30):
            others = sorted(
                (i for i in range(30) if i != query), key=lambda i: -similarity[query][i]
            )
            hits += any(labels[i] == labels[query] for i in others[:k])
        assert metrics[f"retrieval_top{k}"] == pytest.approx(100.0 * hits / 30)


def test_the_linear_probe_agrees_with_scikit_learns_logistic_regression() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(40)
    centers = torch.randn(4, 6, generator=generator)
    features = centers[labels] + 1.5 * torch.randn(160, 6, generator=generator)
    weight_decay = 1e-2
    probe = fit_linear_probe(features, labels, weight_decay=weight_decay)
    mean, std = features.mean(0), features.std(0)
    # ours: mean cross-entropy + wd * |W|^2; scikit-learn's: C * sum cross-entropy + |W|^2 / 2
    reference = LogisticRegression(C=1.0 / (2 * weight_decay * len(labels)), tol=1e-10)
    reference.fit(((features - mean) / std).double().numpy(), labels.numpy())
    assert torch.allclose(
        probe.linear.weight.detach(), torch.from_numpy(reference.coef_).float(), atol=1e-3
    )
    assert torch.allclose(
        probe.linear.bias.detach(), torch.from_numpy(reference.intercept_).float(), atol=1e-3
    )


def test_weighted_knn_votes_by_inverse_distance_and_counts_top5() -> None:
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    train_labels = torch.tensor([0, 1, 2, 2])
    test = torch.tensor([[0.4, 0.0]])
    # euclidean votes 1/(d + eps): class 0 by 1/0.4 = 2.5 against class 1 by 1/0.6 = 1.67
    top1, top5 = weighted_knn(
        train, train_labels, test, torch.tensor([1]), k=2, distance="euclidean"
    )
    assert (top1, top5) == (0.0, 100.0)  # second by vote, so within the top min(5, k)
    top1, top5 = weighted_knn(
        train, train_labels, test, torch.tensor([2]), k=2, distance="euclidean"
    )
    assert (top1, top5) == (0.0, 0.0)  # class 2 is not among the k=2 neighbours
    with pytest.raises(ValueError, match="distance='manhattan' is not valid"):
        weighted_knn(train, train_labels, test, torch.tensor([2]), distance="manhattan")


@pytest.mark.solo
@pytest.mark.parametrize(
    ("distance", "k", "temperature"),
    [("cosine", 5, 0.07), ("cosine", 30, 0.5), ("euclidean", 10, None)],
)
def test_weighted_knn_equals_solo_learns_classifier(
    distance: str, k: int, temperature: float | None
) -> None:
    from solo.utils.knn import WeightedKNNClassifier
    from torchmetrics import Metric

    class Reference(WeightedKNNClassifier):
        def __init__(self) -> None:  # its own __init__ passes torchmetrics 0.x's compute_on_step
            Metric.__init__(self)
            self.k, self.T, self.distance_fx = k, temperature, distance
            self.max_distance_matrix_size, self.epsilon = int(5e6), 1e-5
            for state in ("train_features", "train_targets", "test_features", "test_targets"):
                self.add_state(state, default=[], persistent=False)

    generator = torch.Generator().manual_seed(k)
    centers = torch.randn(8, 16, generator=generator)
    train_labels = torch.arange(8).repeat_interleave(25)
    test_labels = torch.arange(8).repeat(10)
    train = centers[train_labels] + 1.2 * torch.randn(200, 16, generator=generator)
    test = centers[test_labels] + 1.2 * torch.randn(80, 16, generator=generator)
    reference = Reference()
    reference(
        train_features=train,
        train_targets=train_labels,
        test_features=test,
        test_targets=test_labels,
    )
    expected = reference.compute()
    ours = weighted_knn(
        train,
        train_labels,
        test,
        test_labels,
        k=k,
        temperature=temperature or 1.0,
        distance=distance,
    )
    assert ours == pytest.approx(expected)

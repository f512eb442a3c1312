"""Frozen-feature evaluation: linear probe, weighted kNN, and leave-one-out retrieval (LCR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(features: Tensor, labels: Tensor) -> None:
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match: "
            "expected (N, D) and (N,)"
        )


def retrieval_metrics(features: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Leave-one-out retrieval with cosine similarity: top-k hit rates and mAP, in percent.

    Every sample queries all the others; top-k counts a query as a hit when one of its
    ``k`` nearest has the query's label; mAP averages, over queries with at least one
    relevant item, the average precision as scikit-learn's ``average_precision_score``
    defines it: items of equal similarity share one threshold, so ties never depend on the
    sort order.
    """
    _check_pair(features, labels)
    if features.shape[0] < 2:
        raise ValueError("retrieval needs at least 2 samples")
    normalized = F.normalize(features.double(), dim=1)
    similarity = normalized @ normalized.T
    similarity.fill_diagonal_(float("-inf"))
    sorted_similarity, order = similarity.sort(dim=1, descending=True)
    sorted_similarity, order = sorted_similarity[:, :-1], order[:, :-1]  # drop the query itself
    relevant = (labels[order] == labels[:, None]).double()
    result = {f"retrieval_top{k}": 100.0 * relevant[:, :k].amax(dim=1).mean().item() for k in ks}
    hits = relevant.cumsum(dim=1)
    positions = torch.arange(relevant.shape[1])
    last_of_tie = torch.ones_like(relevant, dtype=torch.bool)
    last_of_tie[:, :-1] = sorted_similarity[:, :-1] != sorted_similarity[:, 1:]
    # each position's tie group ends at the next position that is last of its group
    tie_end = torch.where(last_of_tie, positions, relevant.shape[1]).flip(1).cummin(1).values
    tie_end = tie_end.flip(1)
    precision_at_tie_end = hits.gather(1, tie_end) / (tie_end + 1).double()
    num_relevant = relevant.sum(dim=1)
    has_relevant = num_relevant > 0
    average_precision = (relevant * precision_at_tie_end).sum(dim=1)[has_relevant]
    result["retrieval_map"] = 100.0 * (average_precision / num_relevant[has_relevant]).mean().item()
    return result


KNN_DISTANCES = ("cosine", "euclidean")
_MAX_DISTANCES = 5_000_000


def weighted_knn(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    distance: str = "cosine",
    epsilon: float = 1e-5,
) -> tuple[float, float]:
    """Top-1 and top-5 (percent) of a weighted kNN, as solo-learn's WeightedKNNClassifier.

    The ``k`` nearest training features vote for their label: with ``cosine`` by
    ``exp(similarity / temperature)``, with ``euclidean`` by ``1 / (distance + epsilon)``.
    Top-5 counts the first ``min(5, k, classes)`` labels by vote.
    """
    _check_pair(train_features, train_labels)
    _check_pair(test_features, test_labels)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} is out of range: allowed is an integer >= 1")
    if distance not in KNN_DISTANCES:
        raise ValueError(f"distance={distance!r} is not valid: use {' or '.join(KNN_DISTANCES)}")
    k = min(k, train_features.shape[0])
    if distance == "cosine":
        train_features, test_features = F.normalize(train_features), F.normalize(test_features)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    top5_width = min(5, k, num_classes)
    # at most ~5M distances at once, as solo-learn, so a large test set fits in memory
    chunk = max(1, _MAX_DISTANCES // train_features.shape[0])
    hits1 = hits5 = 0
    for start in range(0, test_features.shape[0], chunk):
        queries, labels = test_features[start : start + chunk], test_labels[start : start + chunk]
        if distance == "cosine":
            similarity = queries @ train_features.T
        else:
            similarity = 1 / (torch.cdist(queries, train_features) + epsilon)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp() if distance == "cosine" else top_similarity
        votes = torch.zeros(queries.shape[0], num_classes, dtype=similarity.dtype)
        votes.scatter_add_(1, train_labels[top_index], weights)
        correct = votes.argsort(dim=1, descending=True, stable=True) == labels[:, None]
        hits1 += int(correct[:, 0].sum())
        hits5 += int(correct[:, :top5_width].any(dim=1).sum())
    total = test_features.shape[0]
    return 100.0 * hits1 / total, 100.0 * hits5 / total


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 (percent) of the cosine :func:`weighted_knn`: the benchmark's kNN column."""
    return weighted_knn(train_features, train_labels, test_features, test_labels, k, temperature)[0]


class LinearProbe(torch.nn.Module):
    """A softmax classifier on standardized frozen features (the statistics are the train set's)."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = torch.nn.Linear(mean.numel(), num_classes)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


def fit_linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    epochs: int = 200,
    weight_decay: float = 1e-4,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` by full-batch L-BFGS: deterministic and seconds on CPU."""
    _check_pair(features, labels)
    num_classes = num_classes or int(labels.max()) + 1
    probe = LinearProbe(features.mean(0), features.std(0).clamp_min(1e-6), num_classes)
    optimizer = torch.optim.LBFGS(
        probe.linear.parameters(), max_iter=epochs, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features), labels)
        loss = loss + weight_decay * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def probe_top1(probe: LinearProbe, features: Tensor, labels: Tensor) -> float:
    """Top-1 (percent) of a fitted probe on ``features``."""
    _check_pair(features, labels)
    with torch.no_grad():
        predictions = probe(features).argmax(dim=1)
    return 100.0 * (predictions == labels).double().mean().item()


def linear_probe_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 200,
    weight_decay: float = 1e-4,
) -> float:
    """Top-1 (percent) on the test features of a :class:`LinearProbe` fit on the train ones."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = fit_linear_probe(train_features, train_labels, num_classes, epochs, weight_decay)
    return probe_top1(probe, test_features, test_labels)

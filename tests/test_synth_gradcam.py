"""Grad-CAM importance from the ordinary backward: equals autograd, matches pytorch-grad-cam."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import GradCAM
from torch import nn

from solo_fgsynth.synth import DimensionStatistics, FeatureMapTap, gradcam_importance


class TinyEncoder(nn.Module):
    """conv -> 'layer4' feature map -> GAP -> linear embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def per_sample_loss(embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (embedding - targets).square().sum(dim=1)


def _recording_tap(encoder: TinyEncoder) -> tuple[FeatureMapTap, list, list]:
    pooled, importances = [], []
    tap = FeatureMapTap(pooled.append, importances.append)
    tap.attach(encoder.layer4)
    return tap, pooled, importances


def test_hook_importance_equals_autograd_grad_of_the_same_loss() -> None:
    encoder = TinyEncoder()
    images, targets = torch.randn(5, 3, 8, 8), torch.randn(5, 4)
    tap, pooled, importances = _recording_tap(encoder)
    with tap.capture():
        loss = per_sample_loss(encoder(images), targets).mean()
    loss.backward()

    feature_map = encoder.layer4(encoder.stem(images))
    reference_loss = per_sample_loss(encoder.head(feature_map.mean(dim=(2, 3))), targets).mean()
    (grad,) = torch.autograd.grad(reference_loss, feature_map)
    expected = -grad.mean(dim=(2, 3)) * feature_map.mean(dim=(2, 3))

    assert len(importances) == 1
    assert torch.allclose(importances[0], expected, atol=1e-7)
    assert torch.allclose(pooled[0], feature_map.mean(dim=(2, 3)).detach())


def test_importance_ranking_agrees_with_pytorch_grad_cam_weights() -> None:
    encoder = TinyEncoder()
    images, targets = torch.randn(4, 3, 8, 8), torch.randn(4, 4)
    tap, _, importances = _recording_tap(encoder)
    with tap.capture():
        per_sample_loss(encoder(images), targets).sum().backward()

    # The same scalar objective as a pytorch-grad-cam custom target: the score is -loss.
    cam_targets = [(lambda output, t=target: -(output - t).square().sum()) for target in targets]
    with GradCAM(model=encoder, target_layers=[encoder.layer4]) as cam:
        cam(input_tensor=images, targets=cam_targets)
        activations = torch.as_tensor(cam.activations_and_grads.activations[0])
        grads = torch.as_tensor(cam.activations_and_grads.gradients[0])
        weights = cam.get_cam_weights(
            images, encoder.layer4, cam_targets, activations.numpy(), grads.numpy()
        )
    library_importance = torch.as_tensor(weights) * activations.mean(dim=(2, 3))
    ours = importances[0]
    assert torch.allclose(ours, library_importance.to(ours.dtype), atol=1e-6)
    assert torch.equal(ours.argsort(dim=1), library_importance.argsort(dim=1))


def test_only_passes_inside_capture_are_recorded() -> None:
    encoder = TinyEncoder()
    tap, pooled, importances = _recording_tap(encoder)
    encoder(torch.randn(2, 3, 8, 8)).sum().backward()
    assert pooled == [] and importances == []
    with tap.capture():
        out = encoder(torch.randn(2, 3, 8, 8))
    encoder(torch.randn(2, 3, 8, 8)).sum().backward()  # another graph: no hook on it
    assert len(pooled) == 1 and importances == []
    out.sum().backward()
    assert len(importances) == 1


def test_capture_without_attach_is_an_error() -> None:
    tap = FeatureMapTap(lambda _: None, lambda _: None)
    with pytest.raises(RuntimeError, match="attach"), tap.capture():
        pass


def test_non_spatial_output_is_a_clear_error() -> None:
    linear = nn.Linear(3, 3)
    tap = FeatureMapTap(lambda _: None, lambda _: None)
    tap.attach(linear)
    with pytest.raises(ValueError, match="B x C x h x w"), tap.capture():
        linear(torch.randn(2, 3))


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        gradcam_importance(torch.randn(2, 3, 4, 4), torch.randn(2, 4))


def test_statistics_receive_the_batch_mean_importance() -> None:
    encoder = TinyEncoder()
    stats = DimensionStatistics(num_dims=6, momentum=0.9)
    tap = FeatureMapTap(stats.observe_features, stats.observe_importance)
    tap.attach(encoder.layer4)
    images, targets = torch.randn(3, 3, 8, 8), torch.randn(3, 4)
    with tap.capture():
        loss = per_sample_loss(encoder(images), targets).mean()
    feature_map = encoder.layer4(encoder.stem(images))
    (grad,) = torch.autograd.grad(
        per_sample_loss(encoder.head(feature_map.mean(dim=(2, 3))), targets).mean(), feature_map
    )
    loss.backward()
    stats.update()
    expected = (-grad.mean(dim=(2, 3)) * feature_map.mean(dim=(2, 3))).mean(0)
    assert torch.allclose(stats.importance, expected.detach(), atol=1e-7)


def test_magnitude_ranking_reads_per_sample_magnitudes_where_the_batch_mean_cancels() -> None:
    # A = the input (1x1 identity conv), z = GAP(A), embedding = z: dL/dz_k = 2 (z_k - t_k).
    layer4 = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        layer4.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    encoder = nn.Sequential(layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.ones(2, 3, 4, 4)
    # dim 0: the two samples' contributions are equal and opposite (batch mean 0) and large;
    # dims 1 and 2: small contributions of one sign.
    targets = torch.tensor([[3.0, 0.9, 0.8], [-1.0, 0.9, 0.8]])
    stats = DimensionStatistics(num_dims=3, momentum=0.9)
    tap = FeatureMapTap(stats.observe_features, stats.observe_importance)
    tap.attach(layer4)
    with tap.capture():
        per_sample_loss(encoder(images), targets).sum().backward()
    stats.update()

    per_image = []
    for image, target in zip(images, targets, strict=True):
        cam_target = [lambda output, t=target: -(output - t).square().sum()]
        with GradCAM(model=encoder, target_layers=[layer4]) as cam:
            cam(input_tensor=image[None], targets=cam_target)
            activations = torch.as_tensor(cam.activations_and_grads.activations[0])
            grads = torch.as_tensor(cam.activations_and_grads.gradients[0])
            weights = cam.get_cam_weights(
                image[None], layer4, cam_target, activations.numpy(), grads.numpy()
            )
        per_image.append(torch.as_tensor(weights)[0] * activations.mean(dim=(2, 3))[0])
    library = torch.stack(per_image)

    assert float(stats.importance[0]) == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(stats.importance, library.mean(0).float(), atol=1e-6)
    assert torch.allclose(stats.importance_magnitude, library.abs().mean(0).float(), atol=1e-6)
    assert int(stats.importance_magnitude.argmax()) == 0
    # by magnitude dim 0 is the most important; |batch mean| would call it the least
    assert int(stats.cam_scores("magnitude").argmin()) != 0
    assert int(stats.importance.abs().argmin()) == 0

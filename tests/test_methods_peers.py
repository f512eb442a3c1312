"""The peers ``lcr``, ``directpred`` and ``ssole``: each loss against a written-out computation,
the methods' wiring, their knob errors, and DirectPred's and SSOLE's statistics under DDP."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_method_cfg
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

STEPS = 3
BATCH = 8
CROP = 16


class RandomViews(Dataset):
    """solo-learn's pretraining batch ``(index, [views...], label)`` of tiny random crops."""

    def __init__(self, large: int = 2, small: int = 0) -> None:
        self.large, self.small = large, small

    def __len__(self) -> int:
        return STEPS * BATCH

    def __getitem__(self, index: int) -> tuple:
        generator = torch.Generator().manual_seed(index)
        sizes = [CROP] * self.large + [CROP // 2] * self.small
        return index, [torch.randn(3, s, s, generator=generator) for s in sizes], index % 4


KNOBS = {
    "lcr": {"proj_hidden_dim": 32, "proj_output_dim": 16, "temperature": 0.2, "queue_size": 32},
    "directpred": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "ssole": {"proj_hidden_dim": 32, "proj_output_dim": 16},
}


def make_cfg(method: str, small_crops: int = 0, **method_kwargs: object) -> DictConfig:
    """A parsed solo-learn config: resnet10_small of width 8 (a 2x2 ``layer4`` at 16 px)."""
    augmentations = [{"crop_size": CROP, "num_crops": 2}]
    if small_crops:
        augmentations.append({"crop_size": CROP // 2, "num_crops": small_crops})
    backbone = {"name": "resnet10_small", "kwargs": {"width": 8}}
    kwargs = KNOBS[method] | method_kwargs
    return tiny_method_cfg(method, kwargs, backbone, augmentations, BATCH, max_epochs=1)


def build(cfg: DictConfig) -> LightningModule:
    from solo.methods import METHODS

    import solo_fgsynth  # noqa: F401  (registers the methods and resnet10_small)

    return METHODS[cfg.method](copy.deepcopy(cfg))


def fit(model: LightningModule, views: RandomViews | None = None, **kwargs) -> Trainer:
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=kwargs.pop("devices", 1),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(model, DataLoader(views or RandomViews(), batch_size=BATCH))
    return trainer


# ---------------------------------------------------------------- LCR: Grad-CAM, KL, pooling


def _reference_kl(logits: np.ndarray, cam: np.ndarray) -> float:
    """mean_b sum_hw P log(P / Q), P = cam / sum cam, Q = softmax(logits), written out."""
    total = 0.0
    for b in range(logits.shape[0]):
        a, g = logits[b].ravel().astype(np.float64), cam[b].ravel().astype(np.float64)
        q = np.exp(a - a.max())
        q /= q.sum()
        if g.sum() == 0:
            continue  # a map that is zero everywhere adds nothing
        p = g / g.sum()
        for j in range(p.size):
            if p[j] > 0:
                total += p[j] * np.log(p[j] / q[j])
    return total / logits.shape[0]


@pytest.mark.solo
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (3, 4, 4), (5, 1, 6)])
def test_lcr_rationale_loss_is_the_kl_from_the_normalised_gradcam_map(shape: tuple) -> None:
    from solo_fgsynth.methods.lcr import lcr_rationale_loss

    logits = torch.randn(*shape) * 2
    cam = torch.rand(*shape) * (torch.rand(*shape) > 0.3)
    cam[0] = 0  # a sample whose map the ReLU zeroed everywhere
    ours = lcr_rationale_loss(logits, cam)
    assert ours.item() == pytest.approx(_reference_kl(logits.numpy(), cam.numpy()), abs=1e-6)
    # the map's scale does not matter (only its shape); one channel of B x 1 x h x w is accepted
    scaled = lcr_rationale_loss(logits.unsqueeze(1), 1e-4 * cam.unsqueeze(1))
    assert scaled.item() == pytest.approx(ours.item(), abs=1e-6)


@pytest.mark.solo
def test_lcr_rationale_loss_moves_the_attention_only_and_is_zero_at_the_map() -> None:
    from solo_fgsynth.methods.lcr import lcr_rationale_loss

    cam = torch.rand(2, 3, 3, requires_grad=True)
    logits = torch.randn(2, 3, 3, requires_grad=True)
    lcr_rationale_loss(logits, cam).backward()
    assert cam.grad is None and logits.grad is not None and logits.grad.abs().sum() > 0
    fitted = cam.detach().log()  # softmax(log P) = P: nothing left to fit
    assert lcr_rationale_loss(fitted, cam).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 2, 2), (3, 5, 4, 3)])
def test_gradcam_map_is_relu_of_the_mean_gradient_weighted_channels(shape: tuple) -> None:
    from solo_fgsynth.synth import gradcam_map

    grad, feature_map = torch.randn(*shape), torch.randn(*shape)
    g, a = grad.numpy().astype(np.float64), feature_map.numpy().astype(np.float64)
    batch, channels, height, width = shape
    expected = np.zeros((batch, height, width))
    for b in range(batch):
        for c in range(channels):
            alpha = -g[b, c].mean()  # the score is -L
            expected[b] += alpha * a[b, c]
    expected = np.maximum(expected, 0)
    assert np.allclose(gradcam_map(grad, feature_map).numpy(), expected, atol=1e-6)


def test_gradcam_map_matches_pytorch_grad_cam_on_the_negated_loss() -> None:
    from pytorch_grad_cam import GradCAM
    from torch import nn

    from solo_fgsynth.synth import forward_with_feature_map, gradcam_map

    layer4 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
    encoder = nn.Sequential(layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    images, targets = torch.randn(3, 3, 5, 5), torch.randn(3, 4)
    embedding, feature_map = forward_with_feature_map(encoder, layer4, images)
    loss = (embedding - targets).square().sum()  # per-sample losses, summed
    (grad,) = torch.autograd.grad(loss, feature_map)
    ours = gradcam_map(grad, feature_map)

    cam_targets = [(lambda output, t=t: -(output - t).square().sum()) for t in targets]
    with GradCAM(model=encoder, target_layers=[layer4]) as cam:
        cam(input_tensor=images, targets=cam_targets)
        activations = torch.as_tensor(cam.activations_and_grads.activations[0]).numpy()
        grads = torch.as_tensor(cam.activations_and_grads.gradients[0]).numpy()
        library = cam.get_cam_image(images, layer4, cam_targets, activations, grads)
    assert np.allclose(ours.numpy(), np.maximum(library, 0), atol=1e-6)


@pytest.mark.solo
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 4, 2, 3)])
def test_attention_pool_is_the_softmax_weighted_mean_of_the_map(shape: tuple) -> None:
    from solo_fgsynth.methods.lcr import attention_pool

    feature_map, logits = torch.randn(*shape), torch.randn(shape[0], shape[2] * shape[3])
    a, w = feature_map.numpy().astype(np.float64), logits.numpy().astype(np.float64)
    expected = np.zeros(shape[:2])
    for b in range(shape[0]):
        weights = np.exp(w[b]) / np.exp(w[b]).sum()
        for c in range(shape[1]):
            expected[b, c] = (a[b, c].ravel() * weights).sum()
    assert np.allclose(attention_pool(feature_map, logits).numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------- DirectPred: predictor, EMA


def _orthogonal(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


@pytest.mark.solo
@pytest.mark.parametrize(
    ("eigenvalues", "eps", "mapping", "power"),
    [
        ([4.0, 1.0, 0.25, 0.0], 0.1, "sqrt", None),
        ([9.0, 9.0, 1.0], 0.0, "sqrt", None),  # a repeated eigenvalue: W_p is still unique
        ([2.0, -0.5, 0.5, 1.0, 0.0], 0.3, "sqrt", None),  # a negative one counts as 0
        ([4.0, 1.0, 0.25, 0.0], 0.1, "power", 1.0),
        ([8.0, 2.0, 1.0], 0.05, "power", 2.0),
    ],
)
def test_directpred_predictor_from_a_correlation_of_known_eigenvectors(
    eigenvalues: list[float], eps: float, mapping: str, power: float | None
) -> None:
    from solo_fgsynth.methods.directpred import directpred_predictor

    s = np.array(eigenvalues)
    q = _orthogonal(len(s), seed=len(s))
    corr = q @ np.diag(s) @ q.T
    clamped = np.maximum(s, 0)
    p = np.sqrt(clamped) / np.sqrt(clamped).max() if mapping == "sqrt" else clamped
    if mapping == "power":
        p = (clamped / clamped.max()) ** power
    expected = q @ np.diag(p + eps) @ q.T
    kwargs = {} if power is None else {"power": power}
    ours = directpred_predictor(torch.tensor(corr, dtype=torch.float32), eps, mapping, **kwargs)
    assert np.allclose(ours.numpy(), expected, atol=1e-5)


@pytest.mark.solo
def test_directpred_predictor_of_a_diagonal_matrix_and_of_zero() -> None:
    from solo_fgsynth.methods.directpred import directpred_predictor

    diagonal = directpred_predictor(torch.diag(torch.tensor([16.0, 4.0, 1.0, 0.0])), eps=0.1)
    assert torch.allclose(diagonal, torch.diag(torch.tensor([1.1, 0.6, 0.35, 0.1])), atol=1e-6)
    assert torch.allclose(directpred_predictor(torch.zeros(3, 3), eps=0.2), 0.2 * torch.eye(3))
    same = directpred_predictor(torch.diag(torch.tensor([4.0, 1.0])), 0.1, "power", power=0.5)
    assert torch.allclose(same, directpred_predictor(torch.diag(torch.tensor([4.0, 1.0])), 0.1))


def _reference_ema(batches: list[np.ndarray], rho: float) -> np.ndarray:
    """F <- rho F + (1 - rho) (1/n) sum_i z_i z_i^T from F = 0, written out."""
    f = np.zeros((batches[0].shape[1],) * 2)
    for z in batches:
        corr = np.zeros_like(f)
        for row in z.astype(np.float64):
            corr += np.outer(row, row)
        f = rho * f + (1 - rho) * corr / len(z)
    return f


@pytest.mark.solo
@pytest.mark.parametrize(("freq", "refreshed_at"), [(1, 3), (2, 3), (3, 1)])
def test_directpred_predictor_module_tracks_the_ema_and_refreshes_every_freq_updates(
    freq: int, refreshed_at: int
) -> None:
    from solo_fgsynth.methods.directpred import DirectPredictor, directpred_predictor

    predictor = DirectPredictor(4, rho=0.3, eps=0.1, freq=freq, mapping="sqrt", power=1.0)
    assert torch.equal(predictor(torch.eye(4)), torch.eye(4))  # W_p = I before any statistics
    batches = [torch.randn(n, 4) for n in (5, 3, 6)]
    for z in batches:
        predictor.update(z)
    f = _reference_ema([z.numpy() for z in batches], rho=0.3)
    assert np.allclose(predictor.correlation.numpy(), f, atol=1e-6)
    refreshed = _reference_ema([z.numpy() for z in batches[:refreshed_at]], rho=0.3)
    expected = directpred_predictor(torch.tensor(refreshed, dtype=torch.float32), eps=0.1)
    assert torch.allclose(predictor.weight, expected, atol=1e-6)
    assert int(predictor.updates) == 3


# ---------------------------------------------------------------- SSOLE


def _nuclear(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


def _reference_ssole(z: np.ndarray, lambda_low: float, lambda_high: float) -> float:
    """SSOLE's loss written out with loops: per sample over its views, per view over the batch."""
    views, samples, dims = z.shape
    z = z.astype(np.float64)
    for v in range(views):
        for i in range(samples):
            z[v, i] /= np.linalg.norm(z[v, i])
    low = 0.0
    for i in range(samples):
        own = np.stack([z[v, i] for v in range(views)])
        low += _nuclear(own - own.mean(axis=0)) / np.sqrt(views * min(views - 1, dims))
    high = 0.0
    for v in range(views):
        batch = z[v]
        high += _nuclear(batch - batch.mean(axis=0)) / np.sqrt(samples * min(samples - 1, dims))
    return lambda_low * low / samples - lambda_high * high / views


@pytest.mark.solo
@pytest.mark.parametrize(
    ("shape", "lambdas"),
    [
        ((2, 2, 3), (1.0, 1.0)),
        ((2, 6, 4), (1.0, 0.6)),
        ((3, 5, 8), (0.5, 2.0)),
        ((4, 7, 2), (1.0, 1.0)),  # D below both N - 1 and V - 1
        ((5, 3, 16), (2.0, 0.0)),
    ],
)
def test_ssole_loss_equals_the_written_out_nuclear_norms(shape: tuple, lambdas: tuple) -> None:
    from solo_fgsynth.methods.ssole import ssole_loss_func

    z = torch.randn(*shape) * 3
    ours = ssole_loss_func(z, *lambdas)
    assert ours.item() == pytest.approx(_reference_ssole(z.numpy(), *lambdas), abs=1e-5)


@pytest.mark.solo
def test_ssole_terms_reach_their_bounds() -> None:
    from solo_fgsynth.methods.ssole import ssole_loss_func

    basis = torch.eye(4)
    same_views = torch.stack([basis, basis])  # views agree, samples orthogonal
    # low term 0; each view's centred batch is I - 11^T/4: singular values 1, 1, 1, 0
    expected = -3 / np.sqrt(4 * 3)
    assert ssole_loss_func(same_views, 1.0, 1.0).item() == pytest.approx(expected, abs=1e-6)
    collapsed = torch.ones(2, 4, 4)  # one point for everything: both terms 0
    assert ssole_loss_func(collapsed, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    opposite = torch.stack([basis, -basis])  # each sample's views opposite: low term 1
    assert ssole_loss_func(opposite, 1.0, 0.0).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="V >= 2 views of N >= 2 samples"):
        ssole_loss_func(torch.randn(2, 1, 4), 1.0, 1.0)


# ---------------------------------------------------------------- the methods in training


@pytest.mark.solo
def test_the_peers_are_registered_on_their_solo_learn_bases() -> None:
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod, BaseMomentumMethod
    from solo.methods.byol import BYOL
    from solo.methods.mocov2plus import MoCoV2Plus

    import solo_fgsynth  # noqa: F401

    assert issubclass(METHODS["lcr"], MoCoV2Plus)
    assert issubclass(METHODS["directpred"], BYOL)
    assert issubclass(METHODS["ssole"], BaseMethod)
    assert not issubclass(METHODS["ssole"], BaseMomentumMethod)  # no momentum encoder


class Grads(Callback):
    """Which modules received a non-zero gradient in the last backward."""

    def __init__(self, *names: str) -> None:
        self.names, self.grads = names, {}

    def on_after_backward(self, trainer: Trainer, module: LightningModule) -> None:
        for name in self.names:
            self.grads[name] = any(
                p.grad is not None and p.grad.abs().sum() > 0
                for p in module.get_submodule(name).parameters()
            )


@pytest.mark.solo
@pytest.mark.parametrize("kl_weight", [0.01, 0.0])
def test_lcr_trains_and_only_its_kl_term_trains_the_rationale_branch(kl_weight: float) -> None:
    model = build(make_cfg("lcr", kl_weight=kl_weight))
    probe = Grads("rationale", "backbone", "projector")
    trainer = fit(model, callbacks=[probe])
    metrics = trainer.callback_metrics
    for name in ("train_nce_loss", "train_rationale_kl", "train_class_loss"):
        assert torch.isfinite(metrics[name]), name
    assert metrics["train_rationale_kl"] > 0
    assert probe.grads == {"rationale": kl_weight > 0, "backbone": True, "projector": True}


@pytest.mark.solo
def test_lcr_features_are_pooled_with_the_rationale_attention() -> None:
    from solo_fgsynth.methods.lcr import attention_pool

    model = build(make_cfg("lcr")).eval()
    images = torch.randn(3, 3, CROP, CROP)
    with torch.no_grad():
        out = model(images)
        feature_map = model.backbone.forward_features(images)  # timm: the layer4 output
        attention = model.rationale(feature_map).flatten(1)
    assert feature_map.shape[2:] == (2, 2)
    assert torch.allclose(out["feats"], attention_pool(feature_map, attention), atol=1e-5)
    assert torch.allclose(out["logits"], model.classifier(out["feats"]), atol=1e-5)
    gap = feature_map.mean(dim=(2, 3))
    assert not torch.allclose(out["feats"], gap, atol=1e-4)  # not the backbone's average
    assert torch.allclose(out["z"], torch.nn.functional.normalize(model.projector(gap)), atol=1e-5)
    assert not any(name.startswith("layer4") for name, _ in model.named_children())


@pytest.mark.solo
def test_lcr_kl_reaches_the_branch_and_the_backbone_but_not_the_projector() -> None:
    from solo_fgsynth.methods.lcr import lcr_rationale_loss

    model = build(make_cfg("lcr"))
    out = model(torch.randn(4, 3, CROP, CROP))
    lcr_rationale_loss(out["attention"], torch.rand(4, 2, 2)).backward()
    assert all(p.grad is not None for p in model.rationale.parameters())
    layer4 = model.backbone.layer4.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer4)
    assert all(p.grad is None for p in model.projector.parameters())


def _moco_reference_loss(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE written out: -log of the key's share among the key and the queue."""
    positive = (query * key).sum(dim=1, keepdim=True) / temperature
    logits = torch.cat([positive, query @ queue / temperature], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive.squeeze(1)).mean()


@pytest.mark.solo
def test_lcr_fits_the_gradcam_map_of_the_moco_loss_of_each_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import solo_fgsynth.methods.lcr as module
    from solo_fgsynth.synth import gradcam_map

    cfg = make_cfg("lcr")
    model = build(cfg)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = module.lcr_rationale_loss

    def recording(attention: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        seen.append((attention.detach(), cam.detach()))
        return real(attention, cam)

    before: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            before.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    monkeypatch.setattr(module, "lcr_rationale_loss", recording)
    fit(model, callbacks=[Snapshot()], max_steps=1)

    fresh = build(cfg)
    fresh.load_state_dict(before)
    _, views, _ = next(iter(DataLoader(RandomViews(), batch_size=BATCH)))
    outs = [fresh(view) for view in views]
    keys = [fresh.momentum_forward(view)["z"] for view in views]
    queue = before["queue"]
    moco = (
        _moco_reference_loss(outs[0]["z"], keys[1], queue[1], 0.2)
        + _moco_reference_loss(outs[1]["z"], keys[0], queue[0], 0.2)
    ) / 2
    grads = torch.autograd.grad(moco, [out["feature_map"] for out in outs])
    assert len(seen) == 2
    for (attention, cam), out, grad in zip(seen, outs, grads, strict=True):
        assert torch.allclose(cam, gradcam_map(grad, out["feature_map"]), atol=1e-6)
        assert torch.allclose(attention, out["attention"].detach(), atol=1e-6)


@pytest.mark.solo
def test_directpred_trains_with_a_predictor_set_from_the_correlation_not_learned() -> None:
    from solo_fgsynth.methods.directpred import directpred_predictor

    model = build(make_cfg("directpred"))
    trainer = fit(model)
    assert torch.isfinite(trainer.callback_metrics["train_neg_cos_sim"])
    predictor = model.predictor
    assert int(predictor.updates) == STEPS and not list(predictor.parameters())
    assert torch.allclose(predictor.weight, directpred_predictor(predictor.correlation, 0.1))
    assert not torch.allclose(predictor.weight, torch.eye(16), atol=1e-3)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in model.projector.parameters()} <= optimized
    state = model.state_dict()  # checkpoints carry F, W_p and the count
    assert {"predictor.weight", "predictor.correlation", "predictor.updates"} <= set(state)


@pytest.mark.solo
@pytest.mark.parametrize("small_crops", [0, 2])
def test_ssole_trains_on_every_crop(small_crops: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import solo_fgsynth.methods.ssole as module
    from solo_fgsynth.methods.ssole import ssole_loss_func

    model = build(make_cfg("ssole", small_crops=small_crops))
    seen: list[torch.Tensor] = []

    def recording(z: torch.Tensor, lambda_low: float, lambda_high: float) -> torch.Tensor:
        seen.append(z.detach())
        return ssole_loss_func(z, lambda_low, lambda_high)

    monkeypatch.setattr(module, "ssole_loss_func", recording)
    trainer = fit(model, RandomViews(small=small_crops))
    assert torch.isfinite(trainer.callback_metrics["train_ssole_loss"])
    assert len(seen) == STEPS and seen[0].shape == (2 + small_crops, BATCH, 16)


# ---------------------------------------------------------------- knob errors


@pytest.mark.solo
@pytest.mark.parametrize(
    ("method", "knob", "message"),
    [
        ("lcr", {"kl_weight": -1}, r"method_kwargs\.kl_weight=-1 is out of range: allowed is a"),
        ("lcr", {"attention_hidden_dim": 0}, r"method_kwargs\.attention_hidden_dim=0 is out"),
        ("lcr", {"feature_module": 4}, r"method_kwargs\.feature_module=4 is not valid"),
        ("lcr", {"feature_module": "layer5"}, r"feature_module='layer5'.*did you mean 'layer4'"),
        ("lcr", {"kl_wieght": 0.1}, r"kl_wieght is not a knob of lcr.*did you mean 'kl_weight'"),
        ("directpred", {"rho": 1.0}, r"method_kwargs\.rho=1\.0 is out of range: .*\[0, 1\)"),
        ("directpred", {"eps": -0.1}, r"method_kwargs\.eps=-0\.1 is out of range"),
        ("directpred", {"freq": 0}, r"method_kwargs\.freq=0 is out of range: allowed is an int"),
        ("directpred", {"mapping": "cube"}, r"mapping='cube' is not supported: .* sqrt, power"),
        ("directpred", {"mapping": "power", "power": 0}, r"method_kwargs\.power=0 is out of"),
        ("directpred", {"power": 2.0}, r"power=2\.0 is not used with mapping='sqrt'"),
        ("directpred", {"pred_hidden_dim": 64}, r"pred_hidden_dim is not a knob of directpred"),
        ("ssole", {"lambda_low": -1.0}, r"method_kwargs\.lambda_low=-1\.0 is out of range"),
        ("ssole", {"lambda_high": "x"}, r"method_kwargs\.lambda_high='x' is out of range"),
        ("ssole", {"proj_output_dim": 0}, r"method_kwargs\.proj_output_dim=0 is out of range"),
        ("ssole", {"temperature": 0.1}, r"temperature is not a knob of ssole"),
    ],
)
def test_each_bad_knob_gives_one_line_naming_it(method: str, knob: dict, message: str) -> None:
    from solo_fgsynth.errors import ConfigValueError

    cfg = make_cfg(method)
    cfg.method_kwargs.update(knob)
    with pytest.raises(ConfigValueError, match=message) as error:
        build(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.solo
@pytest.mark.parametrize(
    ("config", "knob", "expected"),
    [
        ("lcr", "method_kwargs.kl_weight=-0.5", "method_kwargs.kl_weight=-0.5 is out of range"),
        ("directpred", "method_kwargs.rho=1.5", "method_kwargs.rho=1.5 is out of range"),
        ("ssole", "+method_kwargs.lambda_hi=1", "method_kwargs.lambda_hi is not a knob of ssole"),
    ],
)
def test_the_command_line_reports_a_bad_knob_in_one_line(
    config: str,
    knob: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from solo_fgsynth.cli import main

    monkeypatch.setenv("SOLO_FGSYNTH_DATA_DIR", str(tmp_path / "data"))
    fgmarks = Path(__file__).resolve().parents[1] / "scripts" / "pretrain" / "fgmarks"
    tiny = ["data.fgmarks.num_classes=2", "data.fgmarks.train_per_class=2"]
    tiny += ["data.fgmarks.val_per_class=1", "data.fgmarks.image_size=32"]
    argv = ["pretrain", "-cp", str(fgmarks), "-cn", config, "accelerator=cpu", *tiny, knob]
    code = main([*argv, f"checkpoint.dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"solo-fgsynth pretrain: error: {expected}")


@pytest.mark.solo
def test_defaults_are_filled_into_the_config() -> None:
    from solo.methods import METHODS

    import solo_fgsynth  # noqa: F401

    lcr = METHODS["lcr"].add_and_assert_specific_cfg(make_cfg("lcr")).method_kwargs
    assert (lcr.kl_weight, lcr.attention_hidden_dim, lcr.feature_module) == (0.01, 32, "layer4")
    dp = METHODS["directpred"].add_and_assert_specific_cfg(make_cfg("directpred")).method_kwargs
    assert (dp.rho, dp.eps, dp.freq, dp.mapping, "power" in dp) == (0.3, 0.1, 1, "sqrt", False)
    ssole = METHODS["ssole"].add_and_assert_specific_cfg(make_cfg("ssole")).method_kwargs
    assert (ssole.lambda_low, ssole.lambda_high) == (1.0, 1.0)


# ---------------------------------------------------------------- DDP


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from solo.utils.misc import gather

    from solo_fgsynth.methods.directpred import DirectPredictor
    from solo_fgsynth.methods.ssole import ssole_loss_func

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    batches, views = _ddp_data()
    predictor = DirectPredictor(5, rho=0.3, eps=0.1, freq=1, mapping="sqrt", power=1.0)
    for step in batches:
        predictor.update(step[rank])
    own = views[rank].clone().requires_grad_(True)
    loss = ssole_loss_func(gather(own, dim=1), 1.0, 0.6)
    loss.backward()
    torch.save(
        {
            "correlation": predictor.correlation,
            "weight": predictor.weight,
            "loss": loss.detach(),
            "grad": own.grad,
        },
        f"{out_dir}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def _ddp_data() -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Per step, each rank's projections (unequal row counts); each rank's SSOLE views."""
    generator = torch.Generator().manual_seed(3)
    batches = [[torch.randn(n, 5, generator=generator) for n in (4, 2)] for _ in range(2)]
    views = [torch.randn(2, 3, 6, generator=generator) for _ in range(2)]
    return batches, views


@pytest.mark.solo
def test_two_process_ddp_statistics_equal_one_process_on_the_concatenated_batch(
    tmp_path: Path,
) -> None:
    import torch.multiprocessing as mp

    from solo_fgsynth.methods.directpred import DirectPredictor
    from solo_fgsynth.methods.ssole import ssole_loss_func

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    batches, views = _ddp_data()
    single = DirectPredictor(5, rho=0.3, eps=0.1, freq=1, mapping="sqrt", power=1.0)
    for step in batches:
        single.update(torch.cat(step))
    everything = torch.cat(views, dim=1).requires_grad_(True)
    loss = ssole_loss_func(everything, 1.0, 0.6)
    loss.backward()
    for rank, result in enumerate(ranks):
        assert torch.allclose(result["correlation"], single.correlation, atol=1e-6)
        assert torch.allclose(result["weight"], single.weight, atol=1e-5)
        assert result["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
        # the gather's backward sums both processes' gradients; DDP's mean then halves them
        own = everything.grad[:, rank * 3 : (rank + 1) * 3]
        assert torch.allclose(result["grad"] / 2, own, atol=1e-6)

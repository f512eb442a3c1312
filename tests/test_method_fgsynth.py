"""The registered solo-learn ``fgsynth`` method: config checks, training, resume, DDP."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

pytestmark = pytest.mark.solo

STEPS_PER_EPOCH = 3
BATCH = 8


class RandomViews(Dataset):
    """solo-learn's pretraining batch layout ``(index, [view1, view2], label)``, deterministic."""

    def __len__(self) -> int:
        return STEPS_PER_EPOCH * BATCH

    def __getitem__(self, index: int) -> tuple:
        generator = torch.Generator().manual_seed(index)
        views = [torch.randn(3, 32, 32, generator=generator) for _ in range(2)]
        return index, views, index % 4


def make_cfg(base: str, **method_kwargs: object) -> DictConfig:
    """A minimal, already-parsed solo-learn config for ``method: fgsynth``."""
    kwargs: dict = {"base": base, "proj_hidden_dim": 64, "proj_output_dim": 32}
    kwargs |= {"pred_hidden_dim": 64} if base == "byol" else {"temperature": 0.2}
    kwargs |= {"synth_start_epoch": 0, "decoder_width": 8} | method_kwargs
    cfg = OmegaConf.create(
        {
            "name": "test",
            "method": "fgsynth",
            "backbone": {"name": "resnet18"},
            "data": {
                "dataset": "custom",
                "num_large_crops": 2,
                "num_small_crops": 0,
                "num_classes": 4,
            },
            "augmentations": [{"crop_size": 32, "num_crops": 2}],
            "optimizer": {
                "name": "sgd",
                "batch_size": BATCH,
                "lr": 0.05,
                "classifier_lr": 0.05,
                "weight_decay": 1e-5,
                "kwargs": {"momentum": 0.9},
            },
            "scheduler": {"name": "none"},
            "momentum": {"base_tau": 0.99, "final_tau": 0.99},
            "max_epochs": 2,
            "method_kwargs": kwargs,
        }
    )
    OmegaConf.set_struct(cfg, False)
    return cfg


def build(cfg: DictConfig):
    from solo.methods import METHODS

    import solo_fgsynth  # noqa: F401  (registers fgsynth)

    return METHODS["fgsynth"](copy.deepcopy(cfg))


def make_trainer(max_epochs: int, callbacks: list | None = None, **kwargs) -> Trainer:
    kwargs.setdefault("devices", 1)
    return Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
        **kwargs,
    )


def loader() -> DataLoader:
    return DataLoader(RandomViews(), batch_size=BATCH, shuffle=False)


def test_fgsynth_is_registered_and_builds_the_requested_base() -> None:
    from solo.methods import METHODS
    from solo.methods.byol import BYOL
    from solo.methods.simclr import SimCLR

    import solo_fgsynth  # noqa: F401

    assert "fgsynth" in METHODS
    assert isinstance(build(make_cfg("byol")), BYOL)
    assert isinstance(build(make_cfg("simclr")), SimCLR)


def test_defaults_are_filled_into_the_config() -> None:
    from solo_fgsynth.methods.fgsynth import FGSynthMethod

    cfg = make_cfg("byol")
    cfg = FGSynthMethod.add_and_assert_specific_cfg(cfg)
    assert cfg.method_kwargs.var_fraction == 0.25
    assert cfg.method_kwargs.combine == "union"
    assert cfg.method_kwargs.decoder_lr is None


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        (
            {"base": "moco"},
            r"method_kwargs\.base='moco' is not supported: allowed are byol, simclr",
        ),
        ({"var_fraction": 2.0}, r"method_kwargs\.var_fraction=2\.0 is out of range"),
        ({"cam_fraction": "half"}, r"method_kwargs\.cam_fraction='half' is out of range"),
        ({"combine": "xor"}, r"method_kwargs\.combine='xor' is not supported"),
        ({"criterion": "entropy"}, r"method_kwargs\.criterion='entropy'"),
        ({"perturbation": "blur"}, r"method_kwargs\.perturbation='blur'"),
        ({"strength": -1.0}, r"method_kwargs\.strength=-1\.0 is out of range"),
        ({"alpha": -0.1}, r"method_kwargs\.alpha=-0\.1"),
        ({"nu": float("inf")}, r"method_kwargs\.nu=inf"),
        ({"synth_fraction": 1.5}, r"method_kwargs\.synth_fraction=1\.5"),
        ({"synth_start_epoch": -2}, r"method_kwargs\.synth_start_epoch=-2"),
        ({"decoder_width": 2}, r"method_kwargs\.decoder_width=2"),
        ({"decoder_lr": 0}, r"method_kwargs\.decoder_lr=0 is out of range"),
        ({"ema_momentum": 1.2}, r"method_kwargs\.ema_momentum=1\.2"),
        ({"synth_grad_to_decoder": "no"}, r"method_kwargs\.synth_grad_to_decoder='no'"),
        (
            {"var_fracton": 0.2},
            r"method_kwargs\.var_fracton is not a knob.*did you mean 'var_fraction'",
        ),
    ],
)
def test_each_invalid_knob_gives_its_message(knob: dict, message: str) -> None:
    cfg = make_cfg("byol")
    for key, value in knob.items():
        cfg.method_kwargs[key] = value
    with pytest.raises(ValueError, match=message):
        build(cfg)


def test_a_backbone_without_a_feature_map_is_rejected() -> None:
    cfg = make_cfg("simclr")
    cfg.backbone.name = "vit_tiny"
    with pytest.raises(ValueError, match="ResNet-style backbone with a 'layer4'"):
        build(cfg)


class GradientProbe(Callback):
    """Records, after each backward, which parameter groups received gradients."""

    def __init__(self) -> None:
        self.grads: dict[str, bool] = {}

    def on_after_backward(self, trainer: Trainer, module: LightningModule) -> None:
        def has_grad(parameters) -> bool:
            return any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)

        self.grads = {
            "backbone": has_grad(module.backbone.parameters()),
            "decoder": has_grad(module.fgsynth.decoder.parameters()),
        }
        if hasattr(module, "momentum_backbone"):
            self.grads["momentum_backbone"] = any(
                p.grad is not None for p in module.momentum_backbone.parameters()
            )


@pytest.mark.parametrize(
    ("base", "base_loss"), [("byol", "train_neg_cos_sim"), ("simclr", "train_nce_loss")]
)
def test_training_logs_all_terms_and_trains_encoder_and_decoder(base: str, base_loss: str) -> None:
    model = build(make_cfg(base))
    momentum_before = (
        [p.detach().clone() for p in model.momentum_backbone.parameters()]
        if base == "byol"
        else None
    )
    probe = GradientProbe()
    trainer = make_trainer(max_epochs=1, callbacks=[probe])
    trainer.fit(model, loader())
    metrics = trainer.callback_metrics
    for name in (
        base_loss,
        "train_recon_loss",
        "train_synth_pair_loss",
        "train_synth_selected_dims",
        "train_synth_criteria_overlap",
    ):
        assert name in metrics, name
        assert torch.isfinite(metrics[name]), name
    assert metrics["train_synth_selected_dims"] > 0
    assert probe.grads["backbone"] and probe.grads["decoder"]
    if momentum_before is not None:
        assert probe.grads["momentum_backbone"] is False
        after = list(model.momentum_backbone.parameters())
        assert any(not torch.equal(b, a) for b, a in zip(momentum_before, after, strict=True))
    assert int(model.fgsynth.statistics.variance_updates) == STEPS_PER_EPOCH


class LossRecorder(Callback):
    """Seeds each step from its global step (so resumed runs draw the same noise); keeps losses."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_start(self, trainer: Trainer, module, batch, batch_idx) -> None:
        torch.manual_seed(trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


def test_resume_gives_the_same_next_step_loss(tmp_path: Path) -> None:
    cfg = make_cfg("byol")
    torch.manual_seed(0)
    uninterrupted = LossRecorder()
    make_trainer(2, [uninterrupted]).fit(build(cfg), loader())

    torch.manual_seed(0)
    first = LossRecorder()
    trainer = make_trainer(1, [first])
    model = build(cfg)
    trainer.fit(model, loader())
    checkpoint = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert (
        torch.load(checkpoint, weights_only=False)["state_dict"][
            "fgsynth.statistics.variance_updates"
        ]
        == STEPS_PER_EPOCH
    )

    resumed = LossRecorder()
    make_trainer(2, [resumed]).fit(build(cfg), loader(), ckpt_path=checkpoint)
    next_step = STEPS_PER_EPOCH + 1
    assert first.losses == {k: v for k, v in uninterrupted.losses.items() if k < next_step}
    assert resumed.losses[next_step] == pytest.approx(uninterrupted.losses[next_step], rel=1e-5)


class StatisticsDump(Callback):
    """Saves each rank's tracked statistics when training ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        stats = module.fgsynth.statistics
        torch.save(
            {"variance": stats.variance.cpu(), "importance": stats.importance.cpu()},
            self.directory / f"rank{trainer.global_rank}.pt",
        )


def test_two_process_ddp_keeps_statistics_identical_across_ranks(tmp_path: Path) -> None:
    model = build(make_cfg("simclr"))
    trainer = make_trainer(
        1,
        [StatisticsDump(tmp_path)],
        strategy="ddp_spawn",  # two CPU processes with the gloo backend
        devices=2,
        max_steps=2,
    )
    trainer.fit(model, loader())
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert torch.equal(ranks[0]["variance"], ranks[1]["variance"])
    assert torch.equal(ranks[0]["importance"], ranks[1]["importance"])
    assert ranks[0]["variance"].abs().sum() > 0

"""The registered solo-learn ``fgsynth`` method: config checks, training, resume, DDP."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import tiny_method_cfg
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig
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
    kwargs |= {"queue_size": 4 * BATCH} if base == "mocov2plus" else {}
    kwargs |= {"synth_start_epoch": 0, "decoder_width": 8} | method_kwargs
    augmentations = [{"crop_size": 32, "num_crops": 2}]
    backbone = {"name": "resnet18"}
    return tiny_method_cfg("fgsynth", kwargs, backbone, augmentations, BATCH, max_epochs=2)


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
    from solo.methods.mocov2plus import MoCoV2Plus
    from solo.methods.simclr import SimCLR

    import solo_fgsynth  # noqa: F401

    assert "fgsynth" in METHODS
    assert isinstance(build(make_cfg("byol")), BYOL)
    assert isinstance(build(make_cfg("simclr")), SimCLR)
    assert isinstance(build(make_cfg("mocov2plus")), MoCoV2Plus)


def test_defaults_are_filled_into_the_config() -> None:
    from solo_fgsynth.methods.fgsynth import fgsynth_method

    cfg = make_cfg("byol")
    cfg = fgsynth_method.add_and_assert_specific_cfg(cfg)
    assert cfg.method_kwargs.var_fraction == 0.25
    assert cfg.method_kwargs.combine == "union"
    assert cfg.method_kwargs.decoder_lr == 1e-3
    assert cfg.method_kwargs.perturbation == "interpolate"


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        (
            {"base": "moco"},
            r"method_kwargs\.base='moco' is not supported: allowed are byol, simclr, mocov2plus",
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
        ({"cam_ranking": "abs"}, r"method_kwargs\.cam_ranking='abs' is not supported"),
        ({"recon_to_encoder": "yes"}, r"method_kwargs\.recon_to_encoder='yes'"),
        ({"feature_module": 4}, r"method_kwargs\.feature_module=4 is not valid"),
        ({"log_pairs_every_n_epochs": -1}, r"method_kwargs\.log_pairs_every_n_epochs=-1"),
        ({"fgsynth_version": 1}, r"method_kwargs\.fgsynth_version=1 is not this"),
        ({"pair_negatives": True}, r"pair_negatives is not a knob of fgsynth with base 'byol'"),
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


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny"])
def test_vision_transformers_are_refused_as_not_supported_yet(name: str) -> None:
    cfg = make_cfg("simclr")
    cfg.backbone.name = name
    with pytest.raises(
        ValueError, match=rf"backbone '{name}' is a vision transformer.*not support"
    ):
        build(cfg)


def test_an_unknown_feature_module_lists_the_backbone_modules() -> None:
    cfg = make_cfg("simclr", feature_module="layer5")
    with pytest.raises(ValueError, match=r"feature_module='layer5'.*did you mean 'layer4'.*layer1"):
        build(cfg)


@pytest.mark.parametrize(
    ("backbone", "path", "dims"),
    [("wide_resnet28w2", "relu", 128), ("convnext_tiny", "stages.3", 768)],
)
def test_default_feature_module_of_other_convolutional_backbones(
    backbone: str, path: str, dims: int
) -> None:
    from solo_fgsynth.methods.fgsynth import fgsynth_method

    cfg = make_cfg("simclr")
    cfg.backbone.name = backbone
    cfg = fgsynth_method.add_and_assert_specific_cfg(cfg)
    assert cfg.method_kwargs.feature_module == path
    model = build(cfg)
    assert model.knobs["feature_module"] == path
    x = torch.randn(4, 3, 32, 32)
    with model.fgsynth.capture():
        out = model.base_training_step(x, torch.zeros(4, dtype=torch.long))
    out["z"].sum().backward()
    model.fgsynth.update_statistics()
    assert model.fgsynth.statistics.ready and model.fgsynth.statistics.variance.shape == (dims,)


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
    ("base", "base_loss"),
    [
        ("byol", "train_neg_cos_sim"),
        ("simclr", "train_nce_loss"),
        ("mocov2plus", "train_nce_loss"),
    ],
)
def test_training_logs_all_terms_and_trains_encoder_and_decoder(base: str, base_loss: str) -> None:
    model = build(make_cfg(base))
    momentum_before = (
        [p.detach().clone() for p in model.momentum_backbone.parameters()]
        if hasattr(model, "momentum_backbone")
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
        "train_pair_feature_ratio",
        "train_pair_diff_ratio",
        "train_recon_r2",
        "train_recon_r2_8px",
        "train_pair_selectivity",
        "train_pair_selectivity_control",
        "train_reencode_correlation",
    ):
        assert name in metrics, name
        assert torch.isfinite(metrics[name]), name
    assert metrics["train_synth_selected_dims"] > 0
    assert probe.grads["backbone"] and probe.grads["decoder"]
    if momentum_before is not None:
        assert probe.grads["momentum_backbone"] is False  # (no parameter there takes a grad)
        after = list(model.momentum_backbone.parameters())
        assert any(not torch.equal(b, a) for b, a in zip(momentum_before, after, strict=True))
    assert int(model.fgsynth.statistics.variance_updates) == STEPS_PER_EPOCH


@pytest.mark.parametrize(("base", "schedule"), [("byol", "cosine"), ("simclr", "constant")])
def test_the_decoder_is_stepped_by_its_own_adam_never_by_the_ssl_optimizer(
    base: str, schedule: str
) -> None:
    cfg = make_cfg(base, decoder_lr=0.01, decoder_warmup_steps=1, decoder_schedule=schedule)
    model = build(cfg)
    before = [p.detach().clone() for p in model.fgsynth.decoder.parameters()]
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, loader())
    ssl_parameters = {
        id(p)
        for optimizer in trainer.optimizers
        for g in optimizer.param_groups
        for p in g["params"]
    }
    decoder_parameters = list(model.fgsynth.decoder.parameters())
    assert not ssl_parameters & {id(p) for p in decoder_parameters}
    adam = model.fgsynth.decoder_optimizer.optimizer
    assert all(int(adam.state[p]["step"]) == STEPS_PER_EPOCH for p in decoder_parameters)
    schedule_of = model.fgsynth.decoder_optimizer
    assert schedule_of.total_steps == trainer.estimated_stepping_batches == STEPS_PER_EPOCH
    # past its 1-step warm-up: constant stays at 0.01, the cosine has reached 0 with the run
    assert schedule_of.lr == pytest.approx(0.01 if schedule == "constant" else 0.0, abs=1e-12)
    assert any(not torch.equal(b, a) for b, a in zip(before, decoder_parameters, strict=True))
    assert all(p.grad is None for p in decoder_parameters)


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


def _batchnorm_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: tensor.detach().clone()
        for name, tensor in module.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


@pytest.mark.parametrize("base", ["byol", "mocov2plus"])
def test_the_pair_forward_leaves_every_backbone_batchnorm_statistic_untouched(base: str) -> None:
    model = build(make_cfg(base))
    backbones = {"online": model.backbone, "momentum": model.momentum_backbone}
    around_pairs: list[int] = []
    real_pair_loss = model.pair_loss

    def checked_pair_loss(view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        before = {key: _batchnorm_buffers(net) for key, net in backbones.items()}
        loss = real_pair_loss(view_a, view_b)
        for key, net in backbones.items():
            after = _batchnorm_buffers(net)
            for name, tensor in before[key].items():
                assert torch.equal(after[name], tensor), f"{key} {name}"
        around_pairs.append(model.trainer.global_step)
        return loss

    model.pair_loss = checked_pair_loss
    make_trainer(2, max_steps=4).fit(model, loader())
    assert around_pairs and min(around_pairs) >= 1  # pairs exist from the second step on
    for key, net in backbones.items():
        counts = {int(b.num_batches_tracked) for b in net.modules() if hasattr(b, "running_var")}
        assert counts == {2 * 4}, key  # two real views per step, as stock BYOL: no pair forward


def _moco_reference_loss(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE written out: -log of the key's share among the key and the queue."""
    positive = (query * key).sum(dim=1, keepdim=True) / temperature
    negatives = query @ queue / temperature
    logits = torch.cat([positive, negatives], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive.squeeze(1)).mean()


def test_mocov2plus_pairs_meet_the_queue_of_before_the_step_and_never_enter_it() -> None:
    model = build(make_cfg("mocov2plus"))
    seen: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real_pair_loss = model.pair_loss

    def checked_pair_loss(view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        loss = real_pair_loss(view_a, view_b)
        both = torch.cat([view_a, view_b])
        keys = model.momentum_forward(both)["z"]
        assert loss.requires_grad and not keys.requires_grad  # no gradient into the keys
        with torch.no_grad():
            query_a, query_b = model(both)["z"].chunk(2)
        key_a, key_b = keys.chunk(2)
        queue, temperature = model._pair_queue, model.temperature
        # stock MoCo v2+: a query of the first view meets keys of the second view, and the
        # queue half that holds second-view keys (index 1); the other way round, index 0
        expected = (
            _moco_reference_loss(query_a, key_b, queue[1], temperature)
            + _moco_reference_loss(query_b, key_a, queue[0], temperature)
        ) / 2
        seen.append((model.trainer.global_step, loss.detach(), expected, queue.clone()))
        return loss

    started: dict[int, torch.Tensor] = {}
    ended: dict[int, tuple[torch.Tensor, int]] = {}

    class QueueProbe(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            started[trainer.global_step] = module.queue.detach().clone()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step - 1  # the optimizer step has been counted
            ended[step] = (module.queue.detach().clone(), int(module.queue_ptr))

    model.pair_loss = checked_pair_loss
    make_trainer(2, max_steps=3, callbacks=[QueueProbe()]).fit(model, loader())
    assert [step for step, *_ in seen] == [1, 2]  # pairs exist from the second step on
    for step, loss, expected, queue in seen:
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(queue, started[step])  # the queue this step started with,
        assert not torch.equal(queue, ended[step][0])  # not the one its real keys made
    # only real keys entered the queue: one batch a step, not one more pair key
    assert [ended[step][1] for step in range(3)] == [BATCH, 2 * BATCH, 3 * BATCH]
    assert model._pair_queue is None  # the step's copy is dropped when the step ends


def _simclr_ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = build(make_cfg("simclr", pair_negatives=True))
    generator = torch.Generator().manual_seed(10 + rank)
    view_a = torch.randn(3, 3, 32, 32, generator=generator)
    view_b = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.no_grad():
        loss = model.pair_loss(view_a, view_b)
        z = model(torch.cat([view_a, view_b]))["z"]
    torch.save({"loss": loss, "z": z}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_simclr_pair_loss_under_two_process_ddp_is_nt_xent_over_the_gathered_pairs(
    tmp_path: Path,
) -> None:
    import torch.multiprocessing as mp
    import torch.nn.functional as F

    mp.spawn(_simclr_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    z = F.normalize(torch.cat([r["z"] for r in ranks]), dim=1)  # rows: a0 b0 a1 b1, 3 each
    n, temperature = 3, 0.2
    partner = torch.cat([torch.arange(n) + n, torch.arange(n)])
    partner = torch.cat([partner, partner + 2 * n])
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    per_row = F.cross_entropy(logits, partner, reduction="none")
    for rank, result in enumerate(ranks):
        expected = per_row[rank * 2 * n : (rank + 1) * 2 * n].mean()
        assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


class SaveEachEpoch(Callback):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        trainer.save_checkpoint(self.directory / f"epoch{trainer.current_epoch}.ckpt")


class BreakDecoderAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.fgsynth.decoder.head.bias.fill_(float("nan"))


def test_a_non_finite_loss_stops_training_naming_step_and_term_and_keeps_checkpoints(
    tmp_path: Path,
) -> None:
    model = build(make_cfg("byol"))
    callbacks = [SaveEachEpoch(tmp_path), BreakDecoderAtStep(STEPS_PER_EPOCH + 1)]
    with pytest.raises(FloatingPointError, match=r"non-finite L_R \(nan\) at step 4"):
        make_trainer(3, callbacks).fit(model, loader())
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["epoch0.ckpt"]
    state = torch.load(tmp_path / "epoch0.ckpt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_checkpoints_record_the_version_and_effective_knobs_and_old_ones_are_handled(
    tmp_path: Path,
) -> None:
    from solo_fgsynth.methods.fgsynth import fgsynth_method

    cfg = fgsynth_method.add_and_assert_specific_cfg(make_cfg("byol", strength=0.3))
    assert cfg.method_kwargs.fgsynth_version == 5  # in the config, hence in args.json
    trainer = make_trainer(1, max_steps=1)
    trainer.fit(build(cfg), loader())
    path = tmp_path / "v5.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["fgsynth"]["version"] == 5
    knobs = checkpoint["fgsynth"]["knobs"]
    assert knobs["strength"] == 0.3 and knobs["cam_ranking"] == "magnitude"
    assert knobs["feature_module"] == "layer4" and knobs["recon_to_encoder"] is False
    assert checkpoint["fgsynth"]["decoder_optimizer"]["steps_taken"] == 1

    resumed = build(cfg)
    make_trainer(3, max_steps=2).fit(resumed, loader(), ckpt_path=path)
    assert resumed.fgsynth.decoder_optimizer.steps_taken == 2  # Adam resumed, not restarted

    # a version 2 checkpoint: no decoder optimizer state, no per-sample magnitude
    old = dict(checkpoint, fgsynth={"version": 2, "knobs": knobs})
    old["state_dict"] = {
        name: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if not name.endswith("importance_magnitude")
    }
    torch.save(old, tmp_path / "v2.ckpt")
    loaded = fgsynth_method.load_from_checkpoint(str(tmp_path / "v2.ckpt"), cfg=cfg)
    for name, tensor in loaded.state_dict().items():
        if "statistics.importance" not in name:
            assert torch.equal(tensor, checkpoint["state_dict"][name]), name
    assert int(loaded.fgsynth.statistics.importance_updates) == 0  # Grad-CAM EMAs restart
    with pytest.warns(UserWarning, match="resuming an fgsynth version 2 checkpoint"):
        make_trainer(1, max_steps=2).fit(build(cfg), loader(), ckpt_path=tmp_path / "v2.ckpt")

    newer = dict(checkpoint, fgsynth={"version": 6, "knobs": knobs})
    torch.save(newer, tmp_path / "v6.ckpt")
    from solo_fgsynth.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"written by fgsynth version 6.*upgrade"):
        fgsynth_method.load_from_checkpoint(str(tmp_path / "v6.ckpt"), cfg=cfg)


def test_the_pair_grid_reaches_a_csv_logger_folder(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="run")
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(build(make_cfg("simclr", log_pairs_every_n_epochs=1)), loader())
    # epoch 0's first step has no statistics yet, so its grid comes from its first step with
    # pairs (the second); one grid an epoch
    names = sorted(p.name for p in Path(logger.log_dir, "pairs").iterdir())
    assert names == ["epoch=0.png", "epoch=1.png"]


def test_overflowing_mixed_precision_steps_never_reach_the_statistics() -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    model = build(make_cfg("simclr"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # every step overflows in fp16
    precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    make_trainer(1, plugins=[precision], max_steps=2).fit(model, loader())
    statistics = model.fgsynth.statistics
    assert int(statistics.variance_updates) == 0 and statistics.discarded_steps == 2
    assert scaler.get_scale() == 2.0**38


def test_bf16_mixed_training_keeps_finite_statistics() -> None:
    model = build(make_cfg("byol"))
    make_trainer(1, precision="bf16-mixed").fit(model, loader())
    statistics = model.fgsynth.statistics
    assert int(statistics.importance_updates) == STEPS_PER_EPOCH
    assert torch.isfinite(statistics.importance).all() and torch.isfinite(statistics.variance).all()


def _stock_cfg(fgsynth_cfg: DictConfig) -> DictConfig:
    """The same config for the stock base: its method name, and only the base's own keys."""
    from solo_fgsynth.methods.fgsynth import BASE_METHOD_KEYS

    cfg = copy.deepcopy(fgsynth_cfg)
    cfg.method = cfg.method_kwargs.base
    cfg.method_kwargs = {key: cfg.method_kwargs[key] for key in BASE_METHOD_KEYS[cfg.method]}
    return cfg


@pytest.mark.parametrize("base", ["byol", "simclr"])
def test_without_pairs_the_backbone_trains_exactly_as_its_stock_base(base: str) -> None:
    from solo.methods import METHODS

    cfg = make_cfg(base, synth_fraction=0.0)
    torch.manual_seed(0)
    with_decoder = build(cfg)
    torch.manual_seed(0)
    stock = METHODS[base](_stock_cfg(cfg))
    for model in (with_decoder, stock):
        make_trainer(2, max_steps=4).fit(model, loader())
    trained = dict(stock.backbone.named_parameters())
    for name, tensor in with_decoder.backbone.named_parameters():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=1e-6, msg=name)


class BackboneGradients(Callback):
    """Keeps the backbone's gradients of the last backward."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_after_backward(self, trainer: Trainer, module: LightningModule) -> None:
        self.grads = {
            name: p.grad.detach().clone()
            for name, p in module.backbone.named_parameters()
            if p.grad is not None
        }


@pytest.mark.parametrize(
    ("base", "pair_knobs"),
    [("byol", {}), ("simclr", {}), ("simclr", {"pair_negatives": True})],
    ids=["byol", "simclr", "simclr-with-negatives"],
)
def test_pairs_change_the_backbone_gradient_by_exactly_nu_times_the_pair_loss_gradient(
    base: str, pair_knobs: dict
) -> None:
    """Step 1 warms the statistics (no pairs yet); at step 2 the run with pairs differs from
    the run without by ``nu * dL_Cp/dtheta``, computed from the very pair loss it used."""
    nu = 1.7
    recorded: dict[str, torch.Tensor] = {}
    runs = {}
    for fraction in (0.5, 0.0):
        torch.manual_seed(0)
        model = build(make_cfg(base, synth_fraction=fraction, nu=nu, **pair_knobs))
        if fraction:
            stock_pair_loss = model.pair_loss

            def pair_loss(view_a, view_b, model=model, stock=stock_pair_loss):
                loss = stock(view_a, view_b)
                parameters = dict(model.backbone.named_parameters())
                grads = torch.autograd.grad(
                    nu * loss, list(parameters.values()), retain_graph=True, allow_unused=True
                )
                recorded.update(
                    {n: g for n, g in zip(parameters, grads, strict=True) if g is not None}
                )
                return loss

            model.pair_loss = pair_loss
        probe = BackboneGradients()
        torch.manual_seed(1)
        make_trainer(1, callbacks=[probe], max_steps=2).fit(model, loader())
        runs[fraction] = probe.grads
    assert recorded, "the run with pairs computed no pair loss"
    for name, with_pairs in runs[0.5].items():
        expected = runs[0.0][name] + recorded.get(name, torch.zeros_like(with_pairs))
        torch.testing.assert_close(with_pairs, expected, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in recorded.values())


def _byol_reference_pair_loss(model, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
    """BYOL written out: the online prediction of each view against the other's momentum target."""

    def online(x: torch.Tensor) -> torch.Tensor:
        return model.predictor(model.projector(model.backbone(x)))

    def target(x: torch.Tensor) -> torch.Tensor:
        return model.momentum_projector(model.momentum_backbone(x))

    def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p, z = torch.nn.functional.normalize(p, dim=1), torch.nn.functional.normalize(z, dim=1)
        return (2 - 2 * (p * z).sum(dim=1)).mean()

    return negative_cosine(online(view_a), target(view_b)) + negative_cosine(
        online(view_b), target(view_a)
    )


def test_the_changes_told_on_resume_are_those_after_the_checkpoints_version_for_its_base() -> None:
    from solo_fgsynth.methods.fgsynth import VERSION_CHANGES, WITHDRAWN_VERSIONS, changes_since
    from solo_fgsynth.synth import FGSYNTH_VERSION

    assert changes_since(FGSYNTH_VERSION, "simclr") == []
    assert changes_since(3, "byol") == []  # nothing a byol run does changed since 3
    assert changes_since(3, "simclr") == [VERSION_CHANGES[5][1]]
    assert changes_since(4, "byol") == [WITHDRAWN_VERSIONS[4]]
    assert changes_since(2, "mocov2plus") == [VERSION_CHANGES[3][1]]


def test_a_checkpoint_of_an_older_fgsynth_version_evaluates_and_a_newer_one_is_refused(
    tmp_path: Path,
) -> None:
    from solo_fgsynth.launch.knn_eval import trained_model
    from solo_fgsynth.methods.fgsynth import OLDEST_EVALUABLE_VERSION, fgsynth_method
    from solo_fgsynth.synth import FGSYNTH_VERSION

    cfg = fgsynth_method.add_and_assert_specific_cfg(make_cfg("simclr"))
    torch.manual_seed(0)
    trained = build(cfg)
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": trained.state_dict()}, path)
    older = copy.deepcopy(cfg)  # as the oldest evaluable version wrote it: no pair_negatives
    older.method_kwargs.fgsynth_version = OLDEST_EVALUABLE_VERSION
    del older.method_kwargs["pair_negatives"]
    model = trained_model(older, path, "the checkpoint")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained.state_dict()[name]), name
    assert older.method_kwargs.fgsynth_version == OLDEST_EVALUABLE_VERSION  # recipe not edited
    for version in (OLDEST_EVALUABLE_VERSION - 1, FGSYNTH_VERSION + 1):
        refused = copy.deepcopy(cfg)
        refused.method_kwargs.fgsynth_version = version
        with pytest.raises(ValueError, match=rf"fgsynth_version={version} is not this"):
            trained_model(refused, path, "the checkpoint")


def test_simclr_pair_negatives_must_be_true_or_false() -> None:
    cfg = make_cfg("simclr", pair_negatives="no")
    with pytest.raises(ValueError, match=r"method_kwargs\.pair_negatives='no' is not supported"):
        build(cfg)


def test_simclr_pair_negatives_default_to_false_among_the_effective_knobs() -> None:
    from solo_fgsynth.methods.fgsynth import effective_knobs

    assert effective_knobs(make_cfg("simclr"))["pair_negatives"] is False
    assert effective_knobs(make_cfg("simclr", pair_negatives=True))["pair_negatives"] is True
    assert "pair_negatives" not in effective_knobs(make_cfg("byol"))


def test_simclr_pair_loss_without_negatives_is_each_pairs_cosine_gap_over_temperature() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build(make_cfg("simclr")).eval()  # no negatives by default
    view_a, view_b = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = model.pair_loss(view_a, view_b)
        z_a, z_b = model(view_a)["z"], model(view_b)["z"]
        one_by_one = [model.pair_loss(view_a[i : i + 1], view_b[i : i + 1]) for i in range(3)]
    by_hand = [(1 - F.cosine_similarity(z_a[i], z_b[i], dim=0)) / 0.2 for i in range(3)]
    torch.testing.assert_close(ours, torch.stack(by_hand).mean(), rtol=1e-5, atol=1e-6)
    # no pair meets another: the loss of the batch is the mean of each pair's own
    torch.testing.assert_close(ours, torch.stack(one_by_one).mean(), rtol=1e-5, atol=1e-6)
    # with negatives a lone pair has nothing to be contrasted with (NT-Xent 0), a batch has
    with_negatives = build(make_cfg("simclr", pair_negatives=True)).eval()
    with_negatives.load_state_dict(model.state_dict())
    with torch.no_grad():
        contrastive = with_negatives.pair_loss(view_a, view_b)
        alone = [with_negatives.pair_loss(view_a[i : i + 1], view_b[i : i + 1]) for i in range(3)]
    assert all(float(loss) == pytest.approx(0.0, abs=1e-6) for loss in alone)
    assert float(contrastive) > 0.1


def test_byol_pair_loss_equals_the_written_out_loss_and_crosses_the_views() -> None:
    torch.manual_seed(0)
    model = build(make_cfg("byol")).eval()  # eval: each image normalised on its own
    with torch.no_grad():  # momentum networks differ from the online ones, as after training
        for p in model.momentum_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    view_a, view_b = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    ours = model.pair_loss(view_a, view_b)
    reference = _byol_reference_pair_loss(model, view_a, view_b)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    uncrossed = (
        _byol_reference_pair_loss(model, view_a, view_a) / 2
        + _byol_reference_pair_loss(model, view_b, view_b) / 2
    )
    assert not torch.allclose(ours, uncrossed, atol=1e-4)

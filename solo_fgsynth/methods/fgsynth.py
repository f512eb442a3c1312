"""``method: fgsynth`` for solo-learn: stock BYOL, SimCLR or MoCo v2+ plus the synthesized pairs.

The algorithm lives in :mod:`solo_fgsynth.synth`; this module only wires it into
solo-learn's training step, optimizer groups, config checks and logging.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
from lightning.pytorch.utilities import rank_zero_warn
from solo.losses.byol import byol_loss_func
from solo.losses.mocov2plus import mocov2plus_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.methods.byol import BYOL
from solo.methods.mocov2plus import MoCoV2Plus
from solo.methods.simclr import SimCLR
from solo.utils.misc import get_rank
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from solo_fgsynth.checkpoints import CheckpointError
from solo_fgsynth.errors import ConfigValueError
from solo_fgsynth.methods.knobs import check_known_keys
from solo_fgsynth.methods.pair_images import log_pair_grid
from solo_fgsynth.synth import (
    FGSYNTH_VERSION,
    FGSynth,
    FGSynthConfig,
    frozen_batchnorm_statistics,
    measure_pairs,
)
from solo_fgsynth.synth.config import check_knobs
from solo_fgsynth.validation import check_bool, check_choice, check_int

BASES = ("byol", "simclr", "mocov2plus")
BASE_METHOD_KEYS = {
    "byol": ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim"),
    "simclr": ("proj_hidden_dim", "proj_output_dim", "temperature"),
    "mocov2plus": ("proj_hidden_dim", "proj_output_dim", "temperature", "queue_size"),
}
ADAPTER_KEYS = (
    "base",
    "feature_module",
    "log_pairs_every_n_epochs",
    "fgsynth_version",
)
# Knobs of one base's pair loss, with their defaults.
BASE_PAIR_KNOBS: dict[str, dict[str, Any]] = {"simclr": {"pair_negatives": False}}
# What changed at each version, told when a run resumes from an older one: (the bases it
# concerns, None for all; the change).
VERSION_CHANGES: dict[int, tuple[tuple[str, ...] | None, str]] = {
    3: (
        None,
        "Grad-CAM ranked by the mean per-sample magnitude, noise scaled per dimension, the "
        "decoder trained by its own Adam at decoder_lr",
    ),
    5: (("simclr",), "SimCLR's pairs without negatives unless pair_negatives is set"),
}
# Versions withdrawn since, with what a checkpoint of theirs meets now.
WITHDRAWN_VERSIONS = {4: "the decoder's schedule defaults to constant again (4 made it cosine)"}
# The oldest version whose checkpoints hold every tensor this version's method has.
OLDEST_EVALUABLE_VERSION = 3
# Backbones whose last feature map is not ``layer4``: solo-learn's wide_resnet pools the
# output of its final LeakyReLU (after ``bn1``); timm's ConvNeXt pools its last stage.
DEFAULT_FEATURE_MODULES = {"wide_resnet": "relu", "convnext": "stages.3"}
TOKEN_BACKBONES = ("vit", "swin")
DEFAULT_LOG_PAIRS_EVERY_N_EPOCHS = 1


def default_feature_module(backbone_name: str) -> str:
    """The watched module's dotted path for a solo-learn backbone name (``layer4`` for ResNets)."""
    for prefix, path in DEFAULT_FEATURE_MODULES.items():
        if backbone_name.startswith(prefix):
            return path
    return "layer4"


def checked_feature_module(cfg: omegaconf.DictConfig) -> str:
    """``method_kwargs.feature_module``, checked; null or unset gives the backbone's default."""
    feature_module = cfg.method_kwargs.get("feature_module")
    if feature_module is not None and (not isinstance(feature_module, str) or not feature_module):
        raise ConfigValueError(
            f"method_kwargs.feature_module={feature_module!r} is not valid: allowed is null "
            "(the backbone's default) or a dotted module path such as 'layer4' or 'stages.3'"
        )
    return feature_module or default_feature_module(str(cfg.backbone.name))


def feature_map_module(
    backbone: nn.Module, path: str, backbone_name: str = "", method: str = "fgsynth"
) -> nn.Module:
    """The module at dotted ``path`` whose output is the last spatial feature map ``A``.

    Vision transformers (token maps, not B x C x h x w) are refused, naming ``method``; an
    unknown path lists the backbone's modules.
    """
    if backbone_name.startswith(TOKEN_BACKBONES):
        raise ConfigValueError(
            f"backbone {backbone_name!r} is a vision transformer (token maps, not a B x C x h x w "
            f"feature map): {method} does not support it yet; use a convolutional backbone "
            "(resnet18, resnet50, wide_resnet28w2, convnext_tiny, ...)"
        )
    names = [name for name, _ in backbone.named_modules() if name and name.count(".") < 2]
    try:
        module = backbone.get_submodule(path)
    except AttributeError:
        close = difflib.get_close_matches(path, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigValueError(
            f"method_kwargs.feature_module={path!r} is not a module of the backbone "
            f"{type(backbone).__name__}{hint}; its modules are: {', '.join(names)}"
        ) from None
    return module


def loss_scale(trainer: Any) -> float:
    """The loss scale of the trainer's mixed precision gradient scaler now (1.0 without one)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


def pair_alignment_loss(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """``mean_i (1 - cos(z_a_i, z_b_i)) / temperature``: NT-Xent's positive term alone.

    Its gradient pulls each pair together about as NT-Xent's positive term does, but no pair
    is pushed away from another: decoded images differ mostly in colour and layout, not class,
    so telling them apart would teach the encoder those.
    """
    cosine = torch.nn.functional.cosine_similarity(z_a, z_b, dim=1)
    return (1 - cosine).mean() / temperature


def synthesized_pair_indexes(num_pairs: int, rank: int, device: torch.device) -> Tensor:
    """SimCLR indexes for ``[views_a; views_b]``: pair i of rank r is ``r * num_pairs + i``.

    Unique across ranks, since solo-learn's loss gathers indexes: equal ones are positives.
    """
    return (rank * num_pairs + torch.arange(num_pairs, device=device)).repeat(2)


def add_fgsynth_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Validate ``method_kwargs`` of an fgsynth config and fill the documented defaults; a
    config written for another fgsynth version is refused."""
    _fill_knobs(cfg)
    kwargs = cfg.method_kwargs
    version = kwargs.get("fgsynth_version", FGSYNTH_VERSION)
    if version != FGSYNTH_VERSION:
        raise ConfigValueError(
            f"method_kwargs.fgsynth_version={version!r} is not this solo-fgsynth's: it "
            f"implements version {FGSYNTH_VERSION} only (leave the key out)"
        )
    kwargs.fgsynth_version = FGSYNTH_VERSION
    return cfg


def changes_since(version: int, base: str) -> list[str]:
    """What changed for ``base`` after ``version``, oldest first (empty: nothing did)."""
    withdrawn = [WITHDRAWN_VERSIONS[version]] if version in WITHDRAWN_VERSIONS else []
    return withdrawn + [
        change
        for number, (bases, change) in sorted(VERSION_CHANGES.items())
        if number > version and (bases is None or base in bases)
    ]


def evaluable_recipe(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """A copy of a trained run's config that builds this version's method, to evaluate it.

    An older ``fgsynth_version`` from :data:`OLDEST_EVALUABLE_VERSION` on is dropped:
    evaluation reads the weights only, whose fit is checked key by key when they load, never the
    knobs whose meaning changed. Any other version stays, to be refused by name.
    """
    cfg = copy.deepcopy(cfg)
    version = cfg.method_kwargs.get("fgsynth_version", FGSYNTH_VERSION)
    evaluable = range(OLDEST_EVALUABLE_VERSION, FGSYNTH_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version in evaluable:
        del cfg.method_kwargs["fgsynth_version"]
    return cfg


def _fill_knobs(cfg: omegaconf.DictConfig) -> None:
    """Check every knob of ``method_kwargs`` and write the defaults of the unset ones: the one
    place fgsynth's defaults enter a config."""
    kwargs = cfg.method_kwargs
    base = kwargs.get("base", "byol")
    check_choice("method_kwargs.base", base, BASES)
    allowed = set(FGSynthConfig.__dataclass_fields__) | set(ADAPTER_KEYS)
    allowed |= set(BASE_METHOD_KEYS[base]) | set(BASE_PAIR_KNOBS.get(base, {}))
    check_known_keys(kwargs, allowed, f"fgsynth with base {base!r}")
    knobs = FGSynthConfig().to_dict()
    knobs.update((key, kwargs[key]) for key in knobs if key in kwargs)
    check_knobs(knobs, prefix="method_kwargs.")
    kwargs.base = base
    for key, value in FGSynthConfig(**knobs).to_dict().items():
        kwargs[key] = value
    kwargs.feature_module = checked_feature_module(cfg)
    every = kwargs.get("log_pairs_every_n_epochs", DEFAULT_LOG_PAIRS_EVERY_N_EPOCHS)
    check_int("method_kwargs.log_pairs_every_n_epochs", every, 0, why="0 turns the pair grid off")
    kwargs.log_pairs_every_n_epochs = every
    for key, default in BASE_PAIR_KNOBS.get(base, {}).items():
        value = kwargs.get(key, default)
        check_bool(f"method_kwargs.{key}", value)
        kwargs[key] = value


def effective_knobs(cfg: omegaconf.DictConfig) -> dict[str, Any]:
    """Every fgsynth knob the run uses, defaults included, as saved in checkpoints.

    The defaults are the ones :func:`add_fgsynth_cfg` writes, applied to a copy of ``cfg``
    (whichever version wrote it: a knob an older config lacks gets today's default).
    """
    cfg = copy.deepcopy(cfg)
    _fill_knobs(cfg)
    kwargs = cfg.method_kwargs
    adapter = [key for key in ADAPTER_KEYS if key != "fgsynth_version"]
    adapter += list(BASE_PAIR_KNOBS.get(kwargs.base, {}))
    return {key: kwargs[key] for key in [*FGSynthConfig.__dataclass_fields__, *adapter]}


class FGSynthMixin:
    """What fgsynth adds to a stock solo-learn method; combined with each base method below.

    Each combination supplies ``pair_loss(view_a, view_b)``: its base method's own loss on a
    synthesized positive pair (for simclr, by default, only that loss's positive term).
    """

    backbone: nn.Module

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)  # type: ignore[call-arg]
        view = cfg.augmentations[0]
        self.fgsynth = FGSynth(
            self.features_dim,  # type: ignore[attr-defined]
            int(view.crop_size),
            FGSynthConfig.from_mapping(dict(cfg.method_kwargs)),
        )
        self.knobs = effective_knobs(cfg)
        backbone_name = str(cfg.backbone.name)
        self.fgsynth.attach(
            feature_map_module(self.backbone, self.knobs["feature_module"], backbone_name)
        )
        self.image_mean = list(view.get("mean", IMAGENET_DEFAULT_MEAN))
        self.image_std = list(view.get("std", IMAGENET_DEFAULT_STD))
        self._first_view: tuple[Tensor, Tensor] | None = None
        self._step_grad_scale = 1.0
        self._pairs_logged_epoch: int | None = None

    def _grad_scale(self) -> float:
        """The loss scale of mixed precision's gradient scaler this step (1.0 without one)."""
        return loss_scale(self.trainer)  # type: ignore[attr-defined]

    def base_training_step(self, X: Tensor, targets: Tensor) -> dict[str, Any]:
        """The stock forward of one large crop, with both criteria watching the backbone."""
        with self.fgsynth.capture(grad_scale=self._step_grad_scale):
            out = super().base_training_step(X, targets)  # type: ignore[misc]
        if self._first_view is None:
            self._first_view = (X, out["feats"])
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """Stock loss, plus ``alpha * L_R`` and ``nu * L_Cp`` on synthesized pairs.

        Both large crops feed the criteria; the decoder and the pairs use the first one only,
        which halves the decoder's cost at no loss of pairs (``synth_fraction`` is of the batch).
        The pair forward leaves every BatchNorm running statistic untouched (it still
        normalises with the pair's own batch statistics, as the real views are normalised).
        """
        self._first_view = None
        self._step_grad_scale = self._grad_scale()
        base_loss = super().training_step(batch, batch_idx)  # type: ignore[misc]
        if self._first_view is None:
            raise RuntimeError("the base training step ran no large crop through the backbone")
        views, feats = self._first_view
        self._first_view = None
        epoch = self.current_epoch  # type: ignore[attr-defined]
        out = self.fgsynth(feats, views, epoch=epoch)
        pair_loss = None
        if out.pair is not None:
            with frozen_batchnorm_statistics(self):  # type: ignore[arg-type]
                pair_loss = self.pair_loss(*out.pair)  # type: ignore[attr-defined]
        metrics = {"train_recon_loss": out.recon_loss.detach()}
        metrics.update({f"train_{name}": value for name, value in out.metrics(views).items()})
        if pair_loss is not None:
            metrics["train_synth_pair_loss"] = pair_loss.detach()
        every = self.knobs["log_pairs_every_n_epochs"]
        first_pairs_of_epoch = out.subset is not None and self._pairs_logged_epoch != epoch
        if first_pairs_of_epoch and every > 0 and epoch % every == 0:
            self._pairs_logged_epoch = epoch
            log_pair_grid(self, views[out.subset], *out.pair, self.image_mean, self.image_std)  # type: ignore[misc, arg-type]
            metrics.update(self._pair_selectivity(views))
        self.log_dict(metrics, on_step=True, on_epoch=True, sync_dist=True)  # type: ignore[attr-defined]
        step = self.global_step  # type: ignore[attr-defined]
        return self.fgsynth.total_loss(base_loss, out.recon_loss, pair_loss, step=step)

    def _pair_selectivity(self, views: Tensor) -> dict[str, float]:
        """Selectivity of this batch's pairs and its random-dims control, re-encoded as trained.

        Train-mode backbone with its BatchNorm statistics left alone; measured on the first
        step with pairs of each epoch that logs a pair grid (one extra encoder pass over the
        batch and three over decodes).
        """
        # its own random stream, so logging never changes the training's draws
        generator = torch.Generator().manual_seed(int(self.global_step))  # type: ignore[attr-defined]
        with frozen_batchnorm_statistics(self.backbone):  # type: ignore[arg-type]
            measured = measure_pairs(self.fgsynth, self.backbone, views.detach(), generator)
        return {
            f"train_{name}": measured.numbers()[name]
            for name in ("pair_selectivity", "pair_selectivity_control", "reencode_correlation")
        }

    def on_train_start(self) -> None:
        """The stock hook, then the run's length for the decoder's schedule: one decoder step
        per training batch (``estimated_stepping_batches`` counts optimizer steps)."""
        super().on_train_start()  # type: ignore[misc]
        trainer = self.trainer  # type: ignore[attr-defined]
        batches = int(trainer.estimated_stepping_batches) * int(trainer.accumulate_grad_batches)
        self.fgsynth.plan_decoder(max(batches, 1))

    def on_train_batch_end(self, outputs: Any, batch: Sequence[Any], batch_idx: int) -> None:
        """After the optimizer step: the stock hook, the decoder's own step, the statistics.

        The SSL optimizer does not hold the decoder (solo-learn builds it from the base
        method's ``learnable_params``); the decoder steps here on the gradients of the same
        backward. A step whose optimizer step the gradient scaler skipped (its scale went
        down) is discarded, as is one with a non-finite importance.
        """
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]
        self.fgsynth.step_decoder(grad_scale=self._step_grad_scale)
        self.log("train_decoder_lr", self.fgsynth.decoder_optimizer.lr, on_step=True)  # type: ignore[attr-defined]
        skipped = self._grad_scale() < self._step_grad_scale
        self.fgsynth.update_statistics(skip=skipped)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the method version, the effective knobs and the decoder's optimizer state."""
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["fgsynth"] = {
            "version": FGSYNTH_VERSION,
            "knobs": dict(self.knobs),
            "decoder_optimizer": self.fgsynth.decoder_optimizer.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a newer version; warn when resuming training from an older one.

        The decoder's optimizer state is restored when the checkpoint has one.
        """
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        saved = checkpoint.get("fgsynth", {})
        version = saved.get("version", 1)
        if version > FGSYNTH_VERSION:
            raise CheckpointError(
                f"this checkpoint was written by fgsynth version {version}; this solo-fgsynth "
                f"implements version {FGSYNTH_VERSION}: upgrade solo-fgsynth to load it"
            )
        changes = changes_since(version, self.knobs["base"])
        if changes and self._trainer is not None:  # type: ignore[attr-defined]
            rank_zero_warn(
                f"resuming an fgsynth version {version} checkpoint with version "
                f"{FGSYNTH_VERSION}: the weights and statistics load, but the knobs now mean "
                f"something else ({'; '.join(changes)}); the rest of the run is not the run "
                "that was started"
            )
        if "decoder_optimizer" in saved:
            self.fgsynth.decoder_optimizer.load_state_dict(saved["decoder_optimizer"])


class FGSynthBYOL(FGSynthMixin, BYOL):
    """fgsynth on top of stock BYOL (online predictor against the momentum target)."""

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock BYOL checks, then the fgsynth knobs."""
        return add_fgsynth_cfg(BYOL.add_and_assert_specific_cfg(cfg))

    def pair_loss(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """Symmetric BYOL loss between the two synthesized views."""
        both = torch.cat([view_a, view_b])
        online_a, online_b = self(both)["p"].chunk(2)
        target_a, target_b = self.momentum_forward(both)["z"].chunk(2)
        return byol_loss_func(online_a, target_b) + byol_loss_func(online_b, target_a)


class FGSynthSimCLR(FGSynthMixin, SimCLR):
    """fgsynth on top of stock SimCLR: each synthesized pair's alignment, or with
    ``pair_negatives: true`` NT-Xent over the synthesized pairs."""

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock SimCLR checks, then the fgsynth knobs."""
        return add_fgsynth_cfg(SimCLR.add_and_assert_specific_cfg(cfg))

    def pair_loss(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """SimCLR's NT-Xent with each synthesized pair as the positives and the other pairs
        as negatives; without negatives, :func:`pair_alignment_loss`."""
        z = self(torch.cat([view_a, view_b]))["z"]
        if not self.knobs["pair_negatives"]:
            return pair_alignment_loss(*z.chunk(2), temperature=self.temperature)
        indexes = synthesized_pair_indexes(view_a.shape[0], get_rank(), z.device)
        return simclr_loss_func(z, indexes=indexes, temperature=self.temperature)


class FGSynthMoCoV2Plus(FGSynthMixin, MoCoV2Plus):
    """fgsynth on top of stock MoCo v2+ (queries against momentum keys and the key queue).

    The pairs are contrasted with the queue as it was before this step's real keys entered
    it, as stock MoCo contrasts the real views, so no pair meets the key this step computes
    for its own source image as a negative; the pairs' own keys never enter the queue (it
    holds real images only, as in stock MoCo).
    """

    _pair_queue: Tensor | None = None

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Stock MoCo v2+ checks, then the fgsynth knobs."""
        return add_fgsynth_cfg(MoCoV2Plus.add_and_assert_specific_cfg(cfg))

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """Keep the queue the stock step contrasts with, then run the fgsynth step.

        The copy is taken only on steps that can have pairs and dropped when the step ends.
        """
        if self.fgsynth.synthesis_active(self.current_epoch):
            self._pair_queue = self.queue.clone().detach()
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._pair_queue = None

    def pair_loss(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """Symmetric MoCo loss between the two synthesized views, stock MoCo's queue halves.

        Within a training step the queue is the one of before the step; outside one, the
        current queue.
        """
        both = torch.cat([view_a, view_b])
        query_a, query_b = self(both)["z"].chunk(2)
        key_a, key_b = self.momentum_forward(both)["z"].chunk(2)
        queue = self.queue if self._pair_queue is None else self._pair_queue
        return (
            mocov2plus_loss_func(query_a, key_b, queue[1], self.temperature)
            + mocov2plus_loss_func(query_b, key_a, queue[0], self.temperature)
        ) / 2


VARIANTS: dict[str, type[FGSynthMixin]] = {
    "byol": FGSynthBYOL,
    "simclr": FGSynthSimCLR,
    "mocov2plus": FGSynthMoCoV2Plus,
}


def variant_for(cfg: omegaconf.DictConfig) -> type[FGSynthMixin]:
    """The fgsynth class for ``cfg.method_kwargs.base`` (default byol)."""
    base = omegaconf.OmegaConf.select(cfg, "method_kwargs.base", default="byol")
    check_choice("method_kwargs.base", base, BASES)
    return VARIANTS[base]


class FGSynthFactory:
    """What ``METHODS['fgsynth']`` holds: a documented factory, not a class.

    ``method: fgsynth`` names a family, one class per stock base: calling the factory with a
    config builds the class ``method_kwargs.base`` names (:data:`VARIANTS`), and the two class
    methods solo-learn's scripts call on a ``METHODS`` entry (the config check, checkpoint
    loading) are that class's.
    """

    __name__ = "fgsynth"

    def __call__(self, cfg: omegaconf.DictConfig) -> FGSynthMixin:
        return variant_for(cfg)(cfg)  # type: ignore[call-arg]

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Checks and defaults of the variant the config asks for."""
        return variant_for(cfg).add_and_assert_specific_cfg(cfg)  # type: ignore[attr-defined]

    @staticmethod
    def load_from_checkpoint(
        path: str, *args: Any, cfg: omegaconf.DictConfig, **kwargs: Any
    ) -> Any:
        """Load a checkpoint into the variant ``cfg`` names (as solo-learn's kNN script does)."""
        variant = variant_for(cfg)
        return variant.load_from_checkpoint(path, *args, cfg=cfg, **kwargs)  # type: ignore[attr-defined]


fgsynth_method = FGSynthFactory()

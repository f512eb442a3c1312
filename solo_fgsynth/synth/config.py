"""The method's knobs, validated once, with the defaults documented in the README."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from solo_fgsynth.synth.decoder import DECODER_SCHEDULES
from solo_fgsynth.validation import check_bool, check_choice, check_int, check_number

CRITERIA = ("both", "variance", "gradcam", "random")
COMBINE_MODES = ("union", "intersection")
PERTURBATIONS = ("noise", "shuffle", "interpolate")
CAM_RANKINGS = ("magnitude", "signed", "positive")
FGSYNTH_VERSION = 5
"""Version of what the knobs mean; stored in checkpoints so older ones are recognised.

1: noise scaled by each selected dimension's own std, signed Grad-CAM ranking, pair forward
updating BatchNorm statistics. 2: noise in units of the median tracked std, Grad-CAM ranked by
the magnitude of the batch-mean contribution, decoder trained by the SSL optimizer. 3: Grad-CAM
ranked by the mean per-sample magnitude, noise scaled by each dimension's own std, interpolate
by default (chosen by the v2 tuning sweep, docs/benchmark.md section 4), decoder trained by its
own Adam (at a constant rate after warm-up unless ``decoder_schedule`` says cosine), SimCLR's
pairs contrasted with each other. 4: withdrawn (for a few commits it made the cosine decoder
schedule the default; checkpoints of it may exist). 5: the current meaning (see the README's
knobs): as 3, but with base simclr each pair's alignment only unless ``pair_negatives`` is set
(chosen on the tuning data, docs/benchmark.md section 4).
"""


def check_knobs(knobs: Mapping[str, Any], prefix: str = "") -> None:
    """Refuse any knob of a complete knob mapping outside what is allowed, naming it as
    ``prefix`` + its name (``method_kwargs.`` in a solo-learn config)."""
    for name in ("var_fraction", "cam_fraction", "synth_fraction"):
        check_number(f"{prefix}{name}", knobs[name], 0, 1)
    check_choice(f"{prefix}criterion", knobs["criterion"], CRITERIA)
    check_choice(f"{prefix}combine", knobs["combine"], COMBINE_MODES)
    check_choice(f"{prefix}perturbation", knobs["perturbation"], PERTURBATIONS)
    check_choice(f"{prefix}cam_ranking", knobs["cam_ranking"], CAM_RANKINGS)
    check_number(f"{prefix}alpha", knobs["alpha"], 0)
    check_number(f"{prefix}nu", knobs["nu"], 0)
    if knobs["perturbation"] == "noise":
        check_number(
            f"{prefix}strength",
            knobs["strength"],
            0,
            low_open=True,
            why="for perturbation 'noise': the noise std in units of each dim's tracked std",
        )
    else:
        check_number(
            f"{prefix}strength",
            knobs["strength"],
            0,
            1,
            low_open=True,
            why=f"for perturbation {knobs['perturbation']!r}: the weight of the other sample",
        )
    check_number(f"{prefix}ema_momentum", knobs["ema_momentum"], 0, 1, high_open=True)
    check_int(f"{prefix}synth_start_epoch", knobs["synth_start_epoch"], 0)
    check_int(f"{prefix}decoder_width", knobs["decoder_width"], 8)
    check_int(f"{prefix}decoder_warmup_steps", knobs["decoder_warmup_steps"], 0)
    check_number(
        f"{prefix}decoder_lr",
        knobs["decoder_lr"],
        0,
        low_open=True,
        why="the decoder's own Adam rate",
    )
    check_choice(f"{prefix}decoder_schedule", knobs["decoder_schedule"], DECODER_SCHEDULES)
    check_bool(f"{prefix}synth_grad_to_decoder", knobs["synth_grad_to_decoder"])
    check_bool(f"{prefix}recon_to_encoder", knobs["recon_to_encoder"])


@dataclass(frozen=True)
class FGSynthConfig:
    """Every knob of the method; see the README table for what each one does.

    Defaults follow the authors' prototype where it is known (``alpha=0.05``) and are
    otherwise the values our benchmark uses.
    """

    var_fraction: float = 0.25
    cam_fraction: float = 0.25
    criterion: str = "both"
    combine: str = "union"
    perturbation: str = "interpolate"
    strength: float = 1.0
    cam_ranking: str = "magnitude"
    alpha: float = 0.05
    nu: float = 1.0
    synth_fraction: float = 0.25
    synth_start_epoch: int = 1
    decoder_width: int = 16
    decoder_lr: float = 1e-3
    decoder_warmup_steps: int = 50
    decoder_schedule: str = "constant"
    ema_momentum: float = 0.99
    synth_grad_to_decoder: bool = False
    recon_to_encoder: bool = False

    def __post_init__(self) -> None:
        check_knobs(asdict(self))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> FGSynthConfig:
        """Build from a mapping (e.g. solo-learn's ``method_kwargs``), ignoring unrelated keys."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for logging and for writing back into a config."""
        return asdict(self)

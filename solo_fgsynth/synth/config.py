"""The method's knobs, validated once, with the defaults documented in the README."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

CRITERIA = ("both", "variance", "gradcam", "random")
COMBINE_MODES = ("union", "intersection")
PERTURBATIONS = ("noise", "shuffle", "interpolate")
CAM_RANKINGS = ("magnitude", "signed", "positive")
FGSYNTH_VERSION = 3
"""Version of what the knobs mean; stored in checkpoints so older ones are recognised.

1: noise scaled by each selected dimension's own std, signed Grad-CAM ranking, pair forward
updating BatchNorm statistics. 2: noise in units of the median tracked std, Grad-CAM ranked by
the magnitude of the batch-mean contribution, decoder trained by the SSL optimizer. 3: the
current meaning (see the README's knob table): Grad-CAM ranked by the mean per-sample
magnitude, noise scaled by each dimension's own std, interpolate by default (chosen by the v2
tuning sweep, docs/benchmark.md section 4), decoder trained by its own Adam.
"""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a number in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is out of range: allowed is a number in [0, 1]")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported: allowed are {', '.join(allowed)}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    if not _is_number(value) or not 0.0 <= value < float("inf"):
        raise ValueError(f"{name}={value!r} is out of range: allowed is a finite number >= 0")


def check_int_at_least(name: str, value: int, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is out of range: allowed is an integer >= {minimum}")


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
    ema_momentum: float = 0.99
    synth_grad_to_decoder: bool = False
    recon_to_encoder: bool = False

    def __post_init__(self) -> None:
        check_fraction("var_fraction", self.var_fraction)
        check_fraction("cam_fraction", self.cam_fraction)
        check_fraction("synth_fraction", self.synth_fraction)
        check_choice("criterion", self.criterion, CRITERIA)
        check_choice("combine", self.combine, COMBINE_MODES)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_choice("cam_ranking", self.cam_ranking, CAM_RANKINGS)
        check_non_negative("alpha", self.alpha)
        check_non_negative("nu", self.nu)
        if not _is_number(self.strength):
            raise ValueError(f"strength={self.strength!r} is not a number")
        if self.perturbation == "noise":
            if not 0.0 < self.strength < float("inf"):
                raise ValueError(
                    f"strength={self.strength!r} is out of range for perturbation 'noise': "
                    "allowed is a finite number > 0 (noise std in units of each dim's tracked std)"
                )
        elif not 0.0 < self.strength <= 1.0:
            raise ValueError(
                f"strength={self.strength!r} is out of range for perturbation "
                f"{self.perturbation!r}: allowed is (0, 1] (the weight of the other sample)"
            )
        if not _is_number(self.ema_momentum) or not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(
                f"ema_momentum={self.ema_momentum!r} is out of range: allowed is [0, 1)"
            )
        check_int_at_least("synth_start_epoch", self.synth_start_epoch, 0)
        check_int_at_least("decoder_width", self.decoder_width, 8)
        check_int_at_least("decoder_warmup_steps", self.decoder_warmup_steps, 0)
        if not _is_number(self.decoder_lr) or not 0.0 < self.decoder_lr < float("inf"):
            raise ValueError(
                f"decoder_lr={self.decoder_lr!r} is out of range: allowed is a finite number > 0 "
                "(the decoder's own Adam rate)"
            )
        for name in ("synth_grad_to_decoder", "recon_to_encoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not a boolean")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> FGSynthConfig:
        """Build from a mapping (e.g. solo-learn's ``method_kwargs``), ignoring unrelated keys."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for logging and for writing back into a config."""
        return asdict(self)

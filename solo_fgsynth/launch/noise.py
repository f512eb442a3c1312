"""Third-party messages the launcher silences, each with the reason it is noise here.

Every command that trains or evaluates calls :func:`silence_known_noise` first, so a run's
stderr holds what a user can act on. Each filter matches one message by its start; anything
else from the same source still shows.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    """One third-party message: the logger (or warning) it comes from, its start, and why not."""

    source: str
    starts_with: str
    reason: str


LOGGED_NOISE = (
    Noise(
        "root",
        "Using scheduler_interval=step might generate issues when resuming",
        "solo-learn logs it for every step-scheduled run, resumed or not; Lightning restores the "
        "scheduler's state with the checkpoint, and the launcher's resume test trains exactly "
        "the remaining batches",
    ),
    Noise(
        "lightning.pytorch.utilities.rank_zero",
        "💡 Tip: For seamless cloud",
        "an advertisement for optional Lightning services, printed on every run",
    ),
    Noise(
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
        "`weights_only` was not set",
        "solo-learn's Checkpointer saves full checkpoints on purpose (they resume training); "
        "Lightning says so at every epoch",
    ),
)
WARNED_NOISE = (
    Noise(
        "UserWarning",
        "'pin_memory' argument is set as true but no accelerator is found",
        "solo-learn's loaders always pin memory; on a CPU-only machine it is simply unused",
    ),
)


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def silence_known_noise() -> None:
    """Install the filters of :data:`LOGGED_NOISE` and :data:`WARNED_NOISE` (idempotent)."""
    for source in {noise.source for noise in LOGGED_NOISE}:
        logger = logging.getLogger() if source == "root" else logging.getLogger(source)
        starts = tuple(n.starts_with for n in LOGGED_NOISE if n.source == source)
        if not any(isinstance(f, _DropMessages) and f.starts == starts for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    for noise in WARNED_NOISE:
        warnings.filterwarnings(
            "ignore", message=re.escape(noise.starts_with), category=UserWarning
        )

"""The check every registered method runs first on its ``method_kwargs``: no unknown key."""

from __future__ import annotations

from collections.abc import Iterable

import omegaconf

from solo_fgsynth import validation


def check_known_keys(kwargs: omegaconf.DictConfig, allowed: Iterable[str], owner: str) -> None:
    """Refuse a ``method_kwargs`` key that is not a knob of ``owner``, naming the closest knob."""
    validation.check_known_keys(kwargs, allowed, owner, prefix="method_kwargs.")

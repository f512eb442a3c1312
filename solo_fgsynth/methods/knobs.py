"""The check every registered method runs first on its ``method_kwargs``: no unknown key."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import omegaconf

from solo_fgsynth.errors import ConfigValueError


def check_known_keys(kwargs: omegaconf.DictConfig, allowed: Iterable[str], owner: str) -> None:
    """Refuse a ``method_kwargs`` key that is not a knob of ``owner``, naming the closest knob."""
    allowed = sorted(allowed)
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigValueError(
                f"method_kwargs.{key} is not a knob of {owner}{hint}; "
                f"allowed are {', '.join(allowed)}"
            )

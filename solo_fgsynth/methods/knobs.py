"""The checks of the plugin methods' ``method_kwargs``: no unknown key, and where each
method's own knob check lives, so the launcher can run it before any data work."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

import omegaconf

from solo_fgsynth import validation


def check_known_keys(kwargs: omegaconf.DictConfig, allowed: Iterable[str], owner: str) -> None:
    """Refuse a ``method_kwargs`` key that is not a knob of ``owner``, naming the closest knob."""
    validation.check_known_keys(kwargs, allowed, owner, prefix="method_kwargs.")


# method name -> (module, function) that checks that method's own knobs and fills their defaults;
# each reads nothing but method_kwargs and backbone.name.
_KNOB_CHECKS = {
    "fgsynth": ("solo_fgsynth.methods.fgsynth", "add_fgsynth_cfg"),
    "lcr": ("solo_fgsynth.methods.lcr", "add_lcr_cfg"),
    "directpred": ("solo_fgsynth.methods.directpred", "add_directpred_cfg"),
    "ssole": ("solo_fgsynth.methods.ssole", "add_ssole_cfg"),
}


def plugin_knob_check(
    method: str,
) -> Callable[[omegaconf.DictConfig], omegaconf.DictConfig] | None:
    """The plugin method's own knob check, or None for a method the plugin does not define."""
    if method not in _KNOB_CHECKS:
        return None
    module, function = _KNOB_CHECKS[method]
    return getattr(importlib.import_module(module), function)

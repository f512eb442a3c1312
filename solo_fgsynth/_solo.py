"""The optional solo-learn dependency: its detection, its install lines, and the registration.

solo-learn has no usable PyPI release, so it is installed from its repository at a pinned commit.
:data:`SOLO_INSTALL_LINES` is the single source of the install lines: the README shows them, every
command that needs solo-learn prints them when it is missing, and tests marked ``solo`` skip with
them as the reason.

Registration: ``import solo_fgsynth`` calls :func:`register_with_solo`, which adds the plugin's
methods and backbones to solo-learn's tables at once if solo-learn is already imported, and
otherwise the moment solo-learn's ``solo`` package finishes importing (a one-shot import hook).
Whoever reads ``solo.methods.METHODS`` after ``import solo_fgsynth`` finds ``fgsynth`` in it,
yet importing the package costs no solo-learn, lightning, timm or torch import: the command
line answers ``--help``, usage errors and ``zoo list`` without them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from solo_fgsynth.errors import UserError

SOLO_COMMIT = "9187ea39c2c3f43c455ab06664d2b019a9802954"
SOLO_URL = f"git+https://github.com/vturrisi/solo-learn@{SOLO_COMMIT}"
BUILD_CONSTRAINT = "setuptools<81"

SOLO_INSTALL_LINES = (
    f'echo "{BUILD_CONSTRAINT}" > build-constraints.txt',
    f"pip install --no-deps --build-constraint build-constraints.txt {SOLO_URL}  # pip >= 25.3",
    f"PIP_CONSTRAINT=build-constraints.txt pip install --no-deps {SOLO_URL}  # pip < 25.3",
    "pip install wandb scipy scikit-learn",
)

SOLO_INSTALL_HELP = "\n".join(
    [
        "solo-learn is not installed. It has no usable PyPI release; install it from its "
        "repository at the pinned commit",
        "(README, 'Installing solo-learn'; use the second or third line, by `pip --version`):",
        "",
        *(f"    {line}" for line in SOLO_INSTALL_LINES),
        "",
    ]
)


class SoloLearnMissingError(UserError, ImportError):
    """Raised when a feature that needs solo-learn is used without it; prints the install lines."""

    details = tuple(SOLO_INSTALL_HELP.splitlines())

    def __init__(self) -> None:
        super().__init__("solo-learn is not installed; install it with the lines above")


def solo_available() -> bool:
    """True when solo-learn's ``solo`` package is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("solo") is not None
    except (ImportError, ValueError):  # ValueError: ``sys.modules["solo"]`` is None (hidden)
        return False


def require_solo() -> None:
    """Raise :class:`SoloLearnMissingError` unless solo-learn is importable."""
    if not solo_available():
        raise SoloLearnMissingError()


@contextmanager
def _quiet_solo_import() -> Iterator[None]:
    """Silence the timm/torch deprecation warnings solo-learn's imports raise; a user cannot act
    on them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def register_methods() -> None:
    """Add ``fgsynth``, ``supervised`` and the peers ``lcr``, ``directpred`` and ``ssole`` to
    ``solo.methods.METHODS`` and the plugin's backbones to solo-learn's backbone table, so
    ``backbone.name: resnet18_small`` works for every method (idempotent)."""
    with _quiet_solo_import():
        from solo.methods import METHODS
        from solo.methods.base import BaseMethod

        from solo_fgsynth.backbones import BACKBONES
        from solo_fgsynth.methods.directpred import DirectPred
        from solo_fgsynth.methods.fgsynth import fgsynth_method
        from solo_fgsynth.methods.lcr import LCR
        from solo_fgsynth.methods.ssole import SSOLE
        from solo_fgsynth.methods.supervised import Supervised

    METHODS["fgsynth"] = fgsynth_method
    METHODS["supervised"] = Supervised
    METHODS["lcr"] = LCR
    METHODS["directpred"] = DirectPred
    METHODS["ssole"] = SSOLE
    BaseMethod._BACKBONES.update(BACKBONES)


class _RegisteringLoader(importlib.abc.Loader):
    """Loads ``solo`` with its own loader, then registers the plugin into it."""

    def __init__(self, loader: importlib.abc.Loader, finder: _RegisterOnSoloImport) -> None:
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """The module solo-learn's own loader creates."""
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run ``solo/__init__.py`` as its loader does, then register the plugin's methods."""
        module.__loader__ = self.loader  # the module looks loaded by its own loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with _quiet_solo_import():
            self.loader.exec_module(module)
        self.finder.remove()
        register_methods()


class _RegisterOnSoloImport(importlib.abc.MetaPathFinder):
    """Finds ``solo`` as the other finders would, with a loader that registers the plugin."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Wrap the loader of solo-learn's top package; any other module is not ours to find."""
        if fullname != "solo":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader, self)
                return spec
        return None

    def remove(self) -> None:
        """Leave ``sys.meta_path``: solo-learn is imported once."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def register_with_solo() -> None:
    """Register the plugin into solo-learn now if it is imported, else when it is first imported.

    Deferring keeps ``import solo_fgsynth`` (and so every command line start) free of
    solo-learn's import, which pulls lightning and timm; see the module docstring.
    """
    if sys.modules.get("solo") is not None:
        register_methods()
    elif not any(isinstance(finder, _RegisterOnSoloImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnSoloImport())

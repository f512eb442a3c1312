"""Detection of the optional solo-learn dependency, with one clear message when it is absent."""

from __future__ import annotations

import importlib.util

SOLO_INSTALL_HELP = """\
solo-learn is not installed. It has no usable PyPI release, so install it from its repository:

    git clone https://github.com/vturrisi/solo-learn
    pip install "setuptools<81" wandb scipy scikit-learn
    pip install --no-build-isolation --no-deps ./solo-learn

(--no-deps keeps solo-learn's old pins on lightning and torchmetrics from downgrading them;
see the README section 'Installing solo-learn'.)"""


class SoloLearnMissingError(ImportError):
    """Raised when a feature that needs solo-learn is used without it."""

    def __init__(self) -> None:
        super().__init__(SOLO_INSTALL_HELP)


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

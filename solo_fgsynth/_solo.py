"""Detection of the optional solo-learn dependency, and the one text that says how to install it.

solo-learn has no usable PyPI release, so it is installed from its repository at a pinned commit.
:data:`SOLO_INSTALL_LINES` is the single source of the install lines: the README shows them, every
command that needs solo-learn prints them when it is missing, and tests marked ``solo`` skip with
them as the reason.
"""

from __future__ import annotations

import importlib.util

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

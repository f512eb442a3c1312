"""The configs and benchmark presets shipped with the package, found from any working directory.

They live in the repository's ``scripts/`` folder, which the package reaches as
``solo_fgsynth/scripts`` (a link in a source checkout, real files in an installed wheel), and are
found through :mod:`importlib.resources`; ``scripts/pretrain/fgmarks`` then names the same configs
wherever a command runs. A folder that exists where the user points wins.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def scripts_dir() -> Path:
    """The packaged ``scripts/`` folder: ``pretrain/``, ``linear/``, ``knn/``, ``benchmark/``."""
    return Path(str(files("solo_fgsynth").joinpath("scripts")))


def config_dir(config_path: str | os.PathLike[str]) -> Path | None:
    """The folder ``config_path`` names: as given when it exists, else the packaged folder of the
    same relative name (``scripts/pretrain/fgmarks`` or ``pretrain/fgmarks``); None if neither."""
    given = Path(config_path).expanduser()
    if given.is_dir():
        return given.resolve()
    if given.is_absolute():
        return None
    parts = given.parts[1:] if given.parts[:1] == ("scripts",) else given.parts
    packaged = scripts_dir().joinpath(*parts)
    return packaged if parts and packaged.is_dir() else None

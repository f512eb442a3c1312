"""The examples the CLI prints and the hints its errors give work when followed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from solo_fgsynth.data import prepare_data_cfg
from solo_fgsynth.errors import LaunchError
from solo_fgsynth.launch.cli import _EPILOG
from solo_fgsynth.launch.config import load_config

_EXAMPLE = re.compile(r"solo-fgsynth \w+ (?:-cp|--config-path) (\S+) (?:-cn|--config-name) (\S+)")


def _examples() -> list[tuple[str, str]]:
    return _EXAMPLE.findall(_EPILOG)


def test_the_help_epilog_has_examples_to_check() -> None:
    assert len(_examples()) == 4


@pytest.mark.parametrize(("config_path", "config_name"), _examples())
def test_every_help_example_names_a_config_that_composes(
    config_path: str, config_name: str
) -> None:
    cfg = load_config(config_path, config_name)
    assert cfg.data.dataset


def test_the_data_root_hint_is_an_override_hydra_accepts(tmp_path: Path) -> None:
    cfg = load_config("scripts/pretrain/fgmarks", "byol", ["data.dataset=cub200"])
    with pytest.raises(
        ValueError, match=r"data\.root must be set .*CUB_200_2011.*: add \+\+data\.root=PATH$"
    ):
        prepare_data_cfg(cfg.data, tmp_path)
    with pytest.raises(LaunchError, match=r"Could not override 'data\.root'"):
        load_config("scripts/pretrain/fgmarks", "byol", ["data.root=/nowhere"])
    followed = load_config("scripts/pretrain/fgmarks", "byol", ["++data.root=/nowhere"])
    assert followed.data.root == "/nowhere"

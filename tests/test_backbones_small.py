"""The plugin's small-image ResNets: shapes, the width knob, and registration into solo-learn."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth.backbones import BACKBONES, small_resnet


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_layer4_is_an_eighth_of_the_crop_and_the_output_is_its_pooled_channels(name: str) -> None:
    model = BACKBONES[name](width=8)
    maps = []
    model.layer4.register_forward_hook(lambda module, inputs, output: maps.append(output))
    pooled = model(torch.randn(2, 3, 32, 32))
    assert maps[0].shape == (2, 64, 4, 4)
    assert pooled.shape == (2, 64) and model.inplanes == 64
    assert torch.allclose(pooled, maps[0].mean(dim=(2, 3)))


def test_depths_differ_and_the_default_width_is_32() -> None:
    assert len(BACKBONES["resnet18_small"]().layer1) == 2
    assert len(BACKBONES["resnet10_small"]().layer1) == 1
    assert BACKBONES["resnet10_small"]().inplanes == 256


@pytest.mark.parametrize("width", [0, 7, 2.0, True])
def test_a_bad_width_names_the_knob_and_what_is_allowed(width: object) -> None:
    with pytest.raises(ValueError, match=r"backbone.kwargs.width must be an even integer >= 2"):
        small_resnet((1, 1, 1, 1), width=width)  # type: ignore[arg-type]


@pytest.mark.solo
def test_every_solo_method_can_build_the_plugin_backbones_by_name() -> None:
    from solo.methods.base import BaseMethod

    import solo_fgsynth  # noqa: F401  (registers)

    for name in BACKBONES:
        model = BaseMethod._BACKBONES[name]("byol", width=8)
        assert model.inplanes == 64

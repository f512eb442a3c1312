"""Shared test setup: the ``solo`` marker skips, with an install hint, without solo-learn."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth._solo import solo_available

SOLO_SKIP_REASON = (
    "needs solo-learn, which has no usable PyPI release: see README 'Installing solo-learn' "
    "(git clone https://github.com/vturrisi/solo-learn && "
    "pip install --no-build-isolation --no-deps ./solo-learn)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``solo`` with a reason that says how to install solo-learn."""
    if solo_available():
        return
    skip = pytest.mark.skip(reason=SOLO_SKIP_REASON)
    for item in items:
        if "solo" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    """Every test starts from the same seed on a single thread, so values are reproducible."""
    torch.manual_seed(0)
    torch.set_num_threads(1)

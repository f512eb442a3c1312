"""Shared test setup: the ``solo`` marker skips, with the install lines, without solo-learn."""

from __future__ import annotations

import pytest
import torch

from solo_fgsynth._solo import SOLO_INSTALL_HELP, solo_available

SOLO_SKIP_REASON = f"needs solo-learn. {SOLO_INSTALL_HELP}"


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

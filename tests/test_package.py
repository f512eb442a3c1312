"""The package imports and its core works without solo-learn; with it, fgsynth is registered."""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE_SOLO = "import sys; sys.modules['solo'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_import_and_core_work_without_solo_learn() -> None:
    result = _python(
        HIDE_SOLO + "import torch, solo_fgsynth\n"
        "from solo_fgsynth import FGSynth, solo_available\n"
        "assert not solo_available()\n"
        "synth = FGSynth(feature_dim=8, crop_size=16)\n"
        "out = synth(torch.randn(4, 8), torch.randn(4, 3, 16, 16), epoch=0)\n"
        "print('recon', float(out.recon_loss) > 0)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "recon True"


@pytest.mark.solo
def test_importing_the_package_registers_fgsynth_quietly() -> None:
    result = _python(
        "import warnings; warnings.simplefilter('error')\n"
        "import solo_fgsynth\n"
        "from solo.methods import METHODS\n"
        "print(METHODS['fgsynth'].__name__)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FGSynthMethod"

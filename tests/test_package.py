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


REGISTERED = (
    "from solo.methods import METHODS\n"
    "from solo.methods.base import BaseMethod\n"
    "print(METHODS['fgsynth'].__name__, METHODS['supervised'].__name__,"
    " 'resnet18_small' in BaseMethod._BACKBONES)\n"
)


@pytest.mark.solo
@pytest.mark.parametrize(
    "first_imports",
    [
        # The package alone does not import solo-learn; it registers when solo-learn is imported.
        "import warnings; warnings.simplefilter('error')\n"
        "import solo_fgsynth\n"
        "assert 'solo' not in sys.modules and 'lightning' not in sys.modules\n",
        "import solo\nimport solo_fgsynth\n",
        # solo-learn first imported from inside a method's module, as a checkpoint load does.
        "from solo_fgsynth.methods.fgsynth import fgsynth_method\n",
        "from solo_fgsynth.methods.supervised import Supervised\n",
    ],
    ids=["package-then-solo", "solo-then-package", "fgsynth-module", "supervised-module"],
)
def test_importing_the_package_registers_the_methods_and_backbones(first_imports: str) -> None:
    result = _python("import sys\n" + first_imports + REGISTERED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fgsynth Supervised True"

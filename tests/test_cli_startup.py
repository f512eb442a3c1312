"""The command line answers at once: help, usage errors and ``zoo list`` import no heavy library.

solo-learn, lightning, timm, torch and hydra take seconds to import; a command imports them only
when it does the work that needs them. Each case runs in a fresh interpreter, as the
``solo-fgsynth`` script does, and reports which of those modules were imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import solo_fgsynth

HEAVY = ("hydra", "lightning", "solo", "timm", "torch", "torchvision")
REPORT = f"""
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""
RUN_CLI = """
import json, sys
from solo_fgsynth.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
"""
IMPORT_PACKAGE = "import json, sys, solo_fgsynth\ncode = 0\n"


def _probe(code: str, argv: list[str]) -> tuple[int, list[str], str, str]:
    """Run ``code`` then the report in a fresh interpreter: exit code, heavy modules, out, err."""
    env = {**os.environ, "PYTHONPATH": str(Path(solo_fgsynth.__file__).resolve().parents[1])}
    env.pop("SOLO_FGSYNTH_MANIFEST", None)
    result = subprocess.run(
        [sys.executable, "-c", code + REPORT, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    *output, report = result.stdout.splitlines()
    probed = json.loads(report)
    return probed["code"], probed["heavy"], "\n".join(output), result.stderr


@pytest.mark.parametrize(
    ("argv", "code", "shows"),
    [
        (["--help"], 0, "usage: solo-fgsynth [-h] [--debug] COMMAND"),
        (["doctor", "--help"], 0, "usage: solo-fgsynth doctor"),
        (["zoo", "--help"], 0, "usage: solo-fgsynth zoo"),
        (["zoo", "list"], 0, "byol-resnet18small-fgmarks"),
        (["zoo", "info", "byol-resnet18small-fgmarks"], 0, "sha256"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["pretrian"], 2, "invalid choice: 'pretrian'"),
        (["zoo", "lsit"], 2, "invalid choice: 'lsit'"),
        pytest.param(
            ["pretrain", "--help"], 0, "usage: solo-fgsynth pretrain", marks=pytest.mark.solo
        ),
        pytest.param(
            ["linear", "-cp", "scripts/linear/custom"],
            2,
            "the following arguments are required: --config-name/-cn",
            marks=pytest.mark.solo,
        ),
        pytest.param(["knn", "--bogus"], 2, "--config-name/-cn", marks=pytest.mark.solo),
    ],
)
def test_help_usage_errors_and_zoo_list_import_no_heavy_library(
    argv: list[str], code: int, shows: str
) -> None:
    exit_code, heavy, out, err = _probe(RUN_CLI, argv)
    assert exit_code == code
    assert shows in (out if code == 0 else err)
    assert heavy == [], f"solo-fgsynth {' '.join(argv)} imported {heavy}"


def test_importing_the_package_imports_no_heavy_library() -> None:
    assert _probe(IMPORT_PACKAGE, [])[:2] == (0, [])

"""Installing solo-learn: one text, pinned to a full commit, shown in the README and by the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import solo_fgsynth
from solo_fgsynth._solo import SOLO_COMMIT, SOLO_INSTALL_HELP, SOLO_INSTALL_LINES, SOLO_URL

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = Path(solo_fgsynth.__file__).resolve().parents[1]
COMMANDS_NEEDING_SOLO = ("pretrain", "linear", "knn", "benchmark")


def test_install_lines_pin_the_full_upstream_commit_with_a_build_constraint() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", SOLO_COMMIT)
    assert f"git+https://github.com/vturrisi/solo-learn@{SOLO_COMMIT}" == SOLO_URL
    install, legacy_install = SOLO_INSTALL_LINES[1], SOLO_INSTALL_LINES[2]
    assert "--no-deps --build-constraint build-constraints.txt" in install
    assert install.endswith("# pip >= 25.3")
    assert legacy_install.startswith("PIP_CONSTRAINT=build-constraints.txt pip install --no-deps")
    assert legacy_install.endswith("# pip < 25.3")
    assert SOLO_INSTALL_LINES[0] == 'echo "setuptools<81" > build-constraints.txt'


def test_readme_shows_exactly_the_install_lines_in_one_block() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Installing solo-learn") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("\n```", start)]
    assert block.splitlines() == list(SOLO_INSTALL_LINES)


def test_every_command_needing_solo_learn_prints_the_install_lines_and_exits_2() -> None:
    code = f"""
import contextlib, io, json, sys
sys.modules["solo"] = None
from solo_fgsynth.cli import main
results = {{}}
for command in {COMMANDS_NEEDING_SOLO!r}:
    argv = [command] + (["--config-name", "x"] if command != "benchmark" else [])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        results[command] = [main(argv), stderr.getvalue()]
print(json.dumps(results))
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout.splitlines()[-1])
    for command in COMMANDS_NEEDING_SOLO:
        exit_code, stderr = results[command]
        assert exit_code == 2
        assert stderr.splitlines() == [
            *SOLO_INSTALL_HELP.splitlines(),
            f"solo-fgsynth {command}: error: solo-learn is not installed; "
            "install it with the lines above",
        ]

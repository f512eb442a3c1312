"""``solo-fgsynth doctor``: what a bug report needs, and what would stop a run, with its fix.

It reports Python, torch (CUDA, the GPUs it sees), lightning, torchmetrics, timm, solo-learn
(version and where it was installed from), the launcher's compatibility workarounds that apply,
the data and cache folders (writable or not) and the zoo manifest in use. A blocking problem
is listed with its fix in one line, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from solo_fgsynth import __version__
from solo_fgsynth._solo import SOLO_COMMIT, solo_available

BLOCKED_EXIT_CODE = 1
_LABEL_WIDTH = 13


@dataclass(frozen=True)
class Problem:
    """A blocking problem and the one line that fixes it."""

    what: str
    fix: str


def _version(package: str) -> str | None:
    try:
        return distribution(package).version
    except PackageNotFoundError:
        return None


def _line(label: str, text: str) -> str:
    return f"{label:<{_LABEL_WIDTH}}{text}"


def _torch_lines(problems: list[Problem]) -> list[str]:
    """torch's version, and whether CUDA is usable with the GPUs it sees."""
    try:
        import torch
    except ImportError as error:
        problems.append(Problem(f"torch does not import ({error})", "pip install torch"))
        return [_line("torch", "not importable")]
    if not torch.cuda.is_available():
        cuda = "CUDA not available: CPU only"
        if torch.version.cuda:
            cuda += f" (built for CUDA {torch.version.cuda}, no GPU visible)"
        return [_line("torch", f"{torch.__version__}, {cuda}")]
    count = torch.cuda.device_count()
    lines = [_line("torch", f"{torch.__version__}, CUDA {torch.version.cuda}, {count} GPU(s)")]
    for index in range(count):
        properties = torch.cuda.get_device_properties(index)
        memory = properties.total_memory / 2**30
        lines.append(_line("", f"cuda:{index} {properties.name}, {memory:.0f} GiB"))
    return lines


def _package_line(label: str, package: str, problems: list[Problem]) -> str:
    version = _version(package)
    if version is None:
        problems.append(Problem(f"{package} is not installed", f"pip install {package}"))
        return _line(label, "not installed")
    return _line(label, version)


def _solo_source() -> str:
    """Where the installed solo-learn came from: the URL and commit pip recorded, if any."""
    try:
        recorded = distribution("solo-learn").read_text("direct_url.json")
    except PackageNotFoundError:
        return "not recorded"
    if not recorded:
        return "not recorded (not installed by pip)"
    direct = json.loads(recorded)
    commit = direct.get("vcs_info", {}).get("commit_id")
    return f"{direct.get('url')}" + (f" @ {commit}" if commit else "")


def _solo_lines(problems: list[Problem]) -> list[str]:
    """solo-learn's version and install location; whether it imports and knows ``fgsynth``."""
    fix = "install solo-learn with the lines of README 'Installing solo-learn'"
    if not solo_available():
        problems.append(Problem("solo-learn is not installed", fix))
        return [_line("solo-learn", "not installed")]
    try:
        solo_methods = importlib.import_module("solo.methods")
    except Exception as error:  # any import-time failure of solo-learn is what the user needs
        problems.append(
            Problem(f"solo-learn does not import: {type(error).__name__}: {error}", fix)
        )
        return [_line("solo-learn", "installed but not importable")]
    location = Path(solo_methods.__file__).resolve().parents[1]
    version = _version("solo-learn") or "unknown version"
    source = _solo_source()
    lines = [
        _line("solo-learn", f"{version} at {location}"),
        _line("", f"installed from {source}"),
    ]
    if "@" in source and SOLO_COMMIT not in source:
        lines.append(_line("", f"note: solo-fgsynth is tested with commit {SOLO_COMMIT[:7]}"))
    if "fgsynth" not in solo_methods.METHODS:
        problems.append(
            Problem(
                "fgsynth is not registered in solo-learn's METHODS",
                "import solo_fgsynth before building methods (pip install solo-fgsynth)",
            )
        )
    return lines


def _workaround_lines() -> list[str]:
    from solo_fgsynth.launch.compat import WORKAROUNDS

    lines = []
    for workaround in WORKAROUNDS:
        state = "applies" if workaround.applies() else "not needed here"
        lines.append(_line("workaround", f"{workaround.name} ({state}): {workaround.summary}"))
    return lines


def folder_state(folder: Path) -> tuple[bool, str]:
    """Whether files can be written in ``folder`` (created on first use if absent), and why not."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return False, f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return False, f"cannot write in {existing} ({error.strerror or error})"
    return True, "writable" if existing == folder else "writable, created on first use"


def _folder_line(label: str, folder: Path, variable: str, problems: list[Problem]) -> str:
    writable, state = folder_state(folder)
    if not writable:
        problems.append(
            Problem(f"{label} {folder}: {state}", f"export {variable}=A_WRITABLE_FOLDER")
        )
    source = f"${variable}" if os.environ.get(variable) else "default"
    return _line(label, f"{folder} ({state}; {source})")


def _storage_lines(problems: list[Problem]) -> list[str]:
    from solo_fgsynth.data import CACHE_ENV_VAR, default_cache_dir
    from solo_fgsynth.zoo import CACHE_ENV, cache_dir

    return [
        _folder_line("data folder", default_cache_dir(), CACHE_ENV_VAR, problems),
        _folder_line("zoo cache", cache_dir(), CACHE_ENV, problems),
    ]


def _manifest_lines(problems: list[Problem]) -> list[str]:
    from solo_fgsynth.zoo import MANIFEST_ENV, Manifest, ZooError

    origin = f"${MANIFEST_ENV}" if os.environ.get(MANIFEST_ENV) else "packaged"
    try:
        manifest = Manifest.load()
    except ZooError as error:
        fix = f"point {MANIFEST_ENV} at a valid manifest, or unset it to use the packaged one"
        problems.append(Problem(str(error), fix))
        return [_line("zoo manifest", f"unreadable ({origin})")]
    return [
        _line(
            "zoo manifest",
            f"{manifest.source} ({origin}; {len(manifest.entries)} entries)",
        )
    ]


def gpu_only_configs(scripts: Path, cuda: bool) -> dict[str, list[str]]:
    """Shipped configs this machine cannot run as they are, by folder: those set to a GPU
    (``accelerator: gpu|cuda``) or to 16-bit precision, where no CUDA device is visible."""
    from omegaconf import OmegaConf

    if cuda:
        return {}
    found: dict[str, list[str]] = {}
    stages = ("pretrain", "linear", "knn")
    for path in sorted(path for stage in stages for path in scripts.glob(f"{stage}/*/*.yaml")):
        settings = OmegaConf.load(path)
        accelerator = str(settings.get("accelerator", "auto")).lower()
        precision = str(settings.get("precision", "32"))
        if accelerator in ("gpu", "cuda") or precision.startswith("16"):
            folder = str(path.parent.relative_to(scripts.parent))
            found.setdefault(folder, []).append(path.stem)
    return found


def _config_lines() -> list[str]:
    """Which shipped configs need a GPU this machine lacks, and the overrides that run them."""
    import torch

    from solo_fgsynth.resources import scripts_dir

    blocked = gpu_only_configs(scripts_dir(), torch.cuda.is_available())
    if not blocked:
        return [_line("configs", "every shipped config runs on this machine")]
    lines = [
        _line("configs", "need a GPU (none visible); add accelerator=cpu devices=1 precision=32:")
    ]
    lines += [_line("", f"{folder}: {', '.join(names)}") for folder, names in blocked.items()]
    return lines


def diagnose() -> tuple[list[str], list[Problem]]:
    """The report's lines and the blocking problems found."""
    problems: list[Problem] = []
    lines = [
        _line("solo-fgsynth", f"{__version__} at {Path(__file__).resolve().parent}"),
        _line("Python", f"{platform.python_version()} ({sys.executable})"),
        _line("platform", platform.platform()),
        *_torch_lines(problems),
        _package_line("lightning", "lightning", problems),
        _package_line("torchmetrics", "torchmetrics", problems),
        _package_line("timm", "timm", problems),
        *_solo_lines(problems),
        *_workaround_lines(),
        *_storage_lines(problems),
        *_manifest_lines(problems),
        *_config_lines(),
    ]
    return lines, problems


def main(argv: Sequence[str] = ()) -> int:
    """Print the environment report; exit 1 when something blocks a run, each with its fix."""
    argparse.ArgumentParser(
        prog="solo-fgsynth doctor",
        description="Print what a bug report needs and what blocks a run, with the fix.",
    ).parse_args(list(argv))
    lines, problems = diagnose()
    print("\n".join(lines))
    if not problems:
        print("\nno blocking problem found")
        return 0
    print(f"\n{len(problems)} blocking problem(s):")
    for problem in problems:
        print(f"  problem: {problem.what}")
        print(f"  fix:     {problem.fix}")
    return BLOCKED_EXIT_CODE

"""Fetching weights into the cache: mirrors in order, sha256 verified, atomic, one writer at a time.

pooch does the transfer: it streams into a temp file in the cache directory, checks the sha256
and only then renames the file into place, so an interrupted or wrong download never lands
under the final name. This module adds mirrors, a per-file lock, offline mode, and checks that
turn a server's HTML error page into a clear message instead of a hash puzzle.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pooch
import requests
from filelock import FileLock

from solo_fgsynth._io import umask_mode
from solo_fgsynth.errors import concise_user_errors
from solo_fgsynth.zoo.errors import DownloadError, OfflineError, ZooError
from solo_fgsynth.zoo.manifest import Manifest, ZooEntry

CACHE_ENV = "SOLO_FGSYNTH_CACHE"
OFFLINE_ENV = "SOLO_FGSYNTH_OFFLINE"
DEFAULT_RETRIES = 2

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TRANSIENT_STATUS = (408, 429)


class _PermanentSourceError(Exception):
    """A source that retrying cannot fix (4xx, an HTML page, a missing local file).

    It is deliberately neither ``ValueError`` nor a ``requests`` exception, the two kinds
    pooch retries, so the next mirror is tried at once.
    """


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$SOLO_FGSYNTH_CACHE``, else the OS cache."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(pooch.os_cache("solo-fgsynth")).resolve()


def offline_mode(offline: bool | None = None) -> bool:
    """Whether to stay off the network (the cache and local sources only): ``offline`` if given,
    else ``$SOLO_FGSYNTH_OFFLINE``."""
    if offline is not None:
        return offline
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ZooError(
        f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]!r} is not understood; use 1/true/yes/on "
        "or 0/false/no/off"
    )


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    return pooch.file_hash(str(path), alg="sha256")


def _reject_error_response(response: requests.Response, *args: Any, **kwargs: Any) -> Any:
    """requests hook: fail fast on a client error or an HTML page instead of the weights."""
    if response.is_redirect:
        return response
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    html = content_type in _HTML_TYPES
    status = response.status_code
    if 400 <= status < 500 and status not in _TRANSIENT_STATUS:
        response.close()
        page = " with an HTML error page" if html else ""
        raise _PermanentSourceError(f"HTTP {status} {response.reason}{page}")
    if status < 400 and html:
        response.close()
        raise _PermanentSourceError(
            f"the server answered HTTP {status} with an HTML page (Content-Type: {content_type}) "
            "instead of the weights file; the URL is probably wrong, expired, or behind a login"
        )
    return response


class _Downloader:
    """pooch downloader for ``http(s)://`` and ``file://`` sources that checks what arrived."""

    def __init__(self, expected_size: int, progress: bool) -> None:
        self.expected_size = expected_size
        self.progress = progress

    def __call__(self, url: str, output_file: str, pooch_obj: Any) -> None:
        """Write the source into pooch's temp file, then reject HTML bodies and wrong sizes."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            source = Path(url2pathname(parts.path))
            if not source.is_file():
                raise _PermanentSourceError(f"local file not found: {source}")
            shutil.copyfile(source, output_file)
        else:
            http = pooch.HTTPDownloader(
                progressbar=self.progress,
                chunk_size=1 << 16,
                hooks={"response": _reject_error_response},
            )
            http(url, output_file, pooch_obj)
        with open(output_file, "rb") as handle:
            head = handle.read(512).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            raise _PermanentSourceError(
                "the server sent an HTML page instead of the weights file; "
                "the URL is probably wrong, expired, or behind a login"
            )
        size = os.path.getsize(output_file)
        if size != self.expected_size:
            raise ValueError(f"received {size} bytes, expected {self.expected_size}")


def _is_verified(path: Path, entry: ZooEntry) -> bool:
    return (
        path.is_file()
        and path.stat().st_size == entry.size_bytes
        and sha256_of(path) == entry.sha256
    )


def _describe(error: Exception) -> str:
    """Why a source failed, in one line (it joins the others in the error's one line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ValueError) and "hash" in text.lower():
        return f"sha256 mismatch, file discarded ({text})"
    return text


def fetch_entry(
    manifest: Manifest,
    entry: ZooEntry,
    *,
    cache: str | Path | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
) -> Path:
    """Return the path of a verified local copy of ``entry``'s weights, downloading if needed."""
    if retries < 0:
        raise ZooError(f"retries must be >= 0, got {retries}")
    no_network = offline_mode(offline)
    directory = cache_dir(cache)
    target = directory / entry.cache_filename
    lock_dir = directory / ".locks"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZooError(
            f"cannot use cache directory {directory}: {error}; point {CACHE_ENV} (or the cache "
            "argument) at a writable directory"
        ) from None
    urls = manifest.source_urls(entry)
    if no_network:  # local files, the packaged weights among them, need no network
        urls = [url for url in urls if urlsplit(url).scheme == "file"]
    with FileLock(str(lock_dir / f"{entry.cache_filename}.lock")):
        if target.exists():
            if _is_verified(target, entry):
                return target
            target.unlink()
            corrupt = f"the cached copy {target} failed sha256 verification and was removed"
        else:
            corrupt = ""
        show = sys.stderr.isatty() if progress is None else progress
        registry = {entry.cache_filename: f"sha256:{entry.sha256}"}
        failures = []
        for url in urls:
            source = pooch.create(
                path=directory,
                base_url="",
                registry=registry,
                urls={entry.cache_filename: url},
                retry_if_failed=retries,
            )
            try:
                path = source.fetch(
                    entry.cache_filename, downloader=_Downloader(entry.size_bytes, show)
                )
            except (_PermanentSourceError, ValueError, OSError, requests.RequestException) as err:
                failures.append(f"{url}: {_describe(err)}")
                continue
            os.chmod(path, umask_mode())  # pooch's temp file was 0o600
            return Path(path)
    if no_network:
        reason = corrupt or f"{target} is absent"
        local = f"; its local source(s) failed: {'; '.join(failures)}" if failures else ""
        raise OfflineError(
            f"offline mode is on ({OFFLINE_ENV}=1 or offline=True) and {entry.name!r} is not "
            f"in the cache: {reason}{local}. Download it while online with "
            f"'solo-fgsynth zoo download {entry.name}', or place the file there "
            f"(sha256 {entry.sha256})."
        )
    raise DownloadError(
        f"could not get a verified copy of {entry.name!r} (sha256 {entry.sha256}) from any of "
        f"its {len(failures)} source(s): " + "; ".join(failures)
    )


@concise_user_errors
def fetch(
    name: str,
    *,
    manifest: str | Path | None = None,
    cache: str | Path | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
) -> Path:
    """Download (or find in the cache) the weights of entry ``name`` and return their path."""
    zoo = Manifest.load(manifest)
    return fetch_entry(
        zoo, zoo.get(name), cache=cache, offline=offline, progress=progress, retries=retries
    )

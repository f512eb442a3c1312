"""Zoo downloads against a real HTTP server on 127.0.0.1: hashes, mirrors, HTML pages, races."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision

from solo_fgsynth import zoo
from solo_fgsynth.cli import main as solo_fgsynth_main
from solo_fgsynth.zoo.manifest import PACKAGED_WEIGHTS_DIR, BackboneSpec
from solo_fgsynth.zoo.weights import serialize_backbone

NAME = "fgsynth-byol-resnet18-fgmarks"
PAYLOAD = bytes(range(256)) * 256  # 64 KiB, not HTML, not a valid weights file: fetch only
HTML = b"<!DOCTYPE html><html><body><h1>Sign in to continue</h1></body></html>"


def zoo_main(argv: list[str]) -> int:
    """``solo-fgsynth zoo ARGV``, as the command line runs it (errors printed, exit code)."""
    return solo_fgsynth_main(["zoo", *argv])


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    truncate: bool = False  # send half the body, then drop the connection
    chunk_delay: float = 0.0  # seconds between 4 KiB chunks


@dataclass
class Server:
    """A local HTTP server whose routes tests can change, counting the GETs per path."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        return f"{self.base}{path}"


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.hits[self.path] += 1
            route = server.routes.get(
                self.path, Route(b"<html>no such file</html>", 404, "text/html")
            )
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            body = route.body[: len(route.body) // 2] if route.truncate else route.body
            for start in range(0, len(body), 4096):
                self.wfile.write(body[start : start + 4096])
                self.wfile.flush()
                time.sleep(route.chunk_delay)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            return None

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _write_manifest(
    tmp_path: Path,
    urls: list[str],
    *,
    payload: bytes = PAYLOAD,
    sha256: str | None = None,
    backbone: BackboneSpec | None = None,
) -> Path:
    spec = backbone or BackboneSpec("torchvision", "resnet18", cifar_stem=True)
    entry = {
        "name": NAME,
        "method": "fgsynth",
        "base_method": "byol",
        "backbone": spec.to_dict(),
        "dataset": "fgmarks",
        "crop_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "head": [],
        "metrics": {"linear_top1": 50.0},
        "size_bytes": len(payload),
        "sha256": sha256 or hashlib.sha256(payload).hexdigest(),
        "license": "MIT",
        "urls": urls,
        "date": "2025-01-01",
        "recipe": {"method": "fgsynth"},
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    return path


def _cache_files(cache: Path) -> list[str]:
    """Everything in the cache except the lock directory."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name != ".locks")


def test_download_verifies_and_reuses_the_cache(server: Server, tmp_path: Path) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    first = zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False)
    second = zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False)
    assert first == second
    assert first.parent == cache.resolve()
    assert first.read_bytes() == PAYLOAD
    assert server.hits["/w.bin"] == 1


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_cached_weights_get_the_mode_the_umask_gives(
    server: Server, tmp_path: Path, umask: int
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    previous = os.umask(umask)
    try:
        path = zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "cache", progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_cache_dir_comes_from_the_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "env-cache"))
    path = zoo.fetch(NAME, manifest=manifest, progress=False)
    assert path.parent == (tmp_path / "env-cache").resolve()


def test_wrong_sha256_is_an_error_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    wrong = hashlib.sha256(b"something else").hexdigest()
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")], sha256=wrong)
    cache = tmp_path / "cache"
    with pytest.raises(zoo.DownloadError, match="sha256 mismatch") as error:
        zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False, retries=1)
    assert wrong in str(error.value)
    assert server.hits["/w.bin"] == 2  # one retry, then the source is given up
    assert _cache_files(cache) == []


def test_interrupted_download_leaves_nothing_that_is_used_later(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD, truncate=True)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    with pytest.raises(zoo.DownloadError, match=r"/w\.bin: .*Connection broken"):
        zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False, retries=0)
    assert _cache_files(cache) == []

    # A half-written file under the final name (as a killed foreign writer could leave) is
    # detected by its hash and replaced, never returned.
    entry = zoo.get_entry(NAME, manifest=manifest)
    (cache / entry.cache_filename).write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    server.routes["/w.bin"] = Route(PAYLOAD)
    path = zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False, retries=0)
    assert path.read_bytes() == PAYLOAD
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert server.hits["/w.bin"] == 2
    assert _cache_files(cache) == [entry.cache_filename]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (Route(HTML, 200, "text/html; charset=utf-8"), "HTML page"),
        (Route(HTML, 404, "text/html"), "HTTP 404"),
        (Route(HTML, 200, "application/octet-stream"), "HTML page"),
    ],
    ids=["200-text-html", "404-html", "html-body-mislabelled"],
)
def test_html_error_pages_give_a_clear_error(
    server: Server, tmp_path: Path, route: Route, message: str
) -> None:
    server.routes["/w.bin"] = route
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    with pytest.raises(zoo.DownloadError, match=message):
        zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False)
    assert server.hits["/w.bin"] == 1  # a page that cannot become the file is not retried
    assert _cache_files(cache) == []


def test_mirrors_are_tried_in_order(server: Server, tmp_path: Path) -> None:
    server.routes["/good.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/missing.bin"), server.url("/good.bin")])
    path = zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "cache", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.hits == Counter({"/missing.bin": 1, "/good.bin": 1})


def test_all_mirrors_failing_names_each_failure(server: Server, tmp_path: Path) -> None:
    server.routes["/page.bin"] = Route(HTML, 200, "text/html")
    manifest = _write_manifest(tmp_path, [server.url("/missing.bin"), server.url("/page.bin")])
    with pytest.raises(zoo.DownloadError) as error:
        zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "cache", progress=False)
    text = str(error.value)
    assert "2 source(s)" in text
    assert f"{server.url('/missing.bin')}: HTTP 404" in text
    assert f"{server.url('/page.bin')}: the server answered HTTP 200 with an HTML page" in text


def test_offline_with_an_empty_cache_says_what_to_do(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    with pytest.raises(zoo.OfflineError, match=f"zoo download {NAME}") as error:
        zoo.fetch(NAME, manifest=manifest, cache=cache)
    assert "offline mode is on" in str(error.value)
    assert "is absent" in str(error.value)
    assert server.hits["/w.bin"] == 0

    monkeypatch.setenv(zoo.OFFLINE_ENV, "0")
    online = zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False)
    assert zoo.fetch(NAME, manifest=manifest, cache=cache, offline=True) == online
    assert server.hits["/w.bin"] == 1


def test_offline_loads_the_packaged_weights_with_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(zoo.MANIFEST_ENV, raising=False)
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    packaged = zoo.Manifest.load()
    names = [
        entry.name
        for entry in packaged.entries
        if all(PACKAGED_WEIGHTS_DIR.as_uri() in url for url in packaged.source_urls(entry))
    ]
    assert names, "the packaged manifest has no weights shipped in the package"
    for name in names:
        entry = packaged.get(name)
        cache = tmp_path / name
        model = zoo.load(name, cache=cache)
        stored = safetensors.torch.load_file(PACKAGED_WEIGHTS_DIR / f"{name}.safetensors")
        state = model.state_dict()
        assert stored.keys() <= state.keys()
        assert all(torch.equal(state[key], value) for key, value in stored.items())
        assert _cache_files(cache) == [entry.cache_filename]
    empty = tmp_path / "empty"
    assert zoo_main(["download", names[0], "--offline", "--cache-dir", str(empty)]) == 0
    assert Path(capsys.readouterr().out.strip()).parent == empty.resolve()


def test_offline_skips_network_sources_and_takes_a_local_one(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    (tmp_path / "w.bin").write_bytes(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin"), "w.bin"])
    path = zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "cache", offline=True)
    assert path.read_bytes() == PAYLOAD
    assert server.hits["/w.bin"] == 0

    (tmp_path / "w.bin").unlink()
    with pytest.raises(zoo.OfflineError, match=r"its local source\(s\) failed: file://") as error:
        zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "other", offline=True)
    assert "local file not found" in str(error.value)
    assert server.hits["/w.bin"] == 0


def test_unreadable_offline_setting_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write_manifest(tmp_path, ["http://127.0.0.1:9/w.bin"])
    monkeypatch.setenv(zoo.OFFLINE_ENV, "maybe")
    with pytest.raises(zoo.ZooError, match="'maybe' is not understood"):
        zoo.fetch(NAME, manifest=manifest, cache=tmp_path / "cache")


def _fetch_in_child(manifest: str, cache: str) -> str:
    return str(zoo.fetch(NAME, manifest=manifest, cache=cache, progress=False, retries=0))


def test_concurrent_downloads_of_one_entry_yield_one_valid_file(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD, chunk_delay=0.02)  # ~0.3 s: the two overlap
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        paths = pool.starmap(_fetch_in_child, [(str(manifest), str(cache))] * 2)
    assert paths[0] == paths[1]
    assert Path(paths[0]).read_bytes() == PAYLOAD
    assert server.hits["/w.bin"] == 1  # the second process waited, then found the file
    assert _cache_files(cache) == [Path(paths[0]).name]


def test_load_over_http_gives_the_published_tensors(server: Server, tmp_path: Path) -> None:
    spec = BackboneSpec("torchvision", "resnet18", cifar_stem=True)
    reference = torchvision.models.resnet18()
    reference.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 2, bias=False)
    reference.fc = torch.nn.Identity()
    data = serialize_backbone(reference.state_dict(), spec)
    server.routes["/w.safetensors"] = Route(data)
    manifest = _write_manifest(
        tmp_path, [server.url("/w.safetensors")], payload=data, backbone=spec
    )
    model = zoo.load(NAME, manifest=manifest, cache=tmp_path / "cache", progress=False)
    loaded = model.state_dict()
    expected = reference.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    assert not model.training
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_cli_download_prints_the_cached_path(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/w.bin"] = Route(PAYLOAD)
    manifest = _write_manifest(tmp_path, [server.url("/w.bin")])
    cache = tmp_path / "cache"
    args = ["download", NAME, "--manifest", str(manifest), "--cache-dir", str(cache)]
    assert zoo_main([*args, "--no-progress"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.read_bytes() == PAYLOAD

    empty = ["--cache-dir", str(tmp_path / "empty"), "--offline"]
    assert zoo_main(["download", NAME, "--manifest", str(manifest), *empty]) == 2
    assert "offline mode is on" in capsys.readouterr().err

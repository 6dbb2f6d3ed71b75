"""Fetching and verifying weight files, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from esrgan.archs.vgg import IMAGENET_FILE, VGGFeatureExtractor
from esrgan.downloads import (
    GROUPS,
    VERIFY_ENV,
    WEIGHT_FILES,
    UnverifiedWeights,
    WeightFile,
    fetch,
    verified,
)
from esrgan.metrics.iqa import ALEXNET_FILE, LPIPS_FILE, MetricUnavailable, lpips

REPO_ROOT = Path(__file__).resolve().parents[1]
ENDLESS_BYTES = 8 << 20  # what an "endless" answer sends before it closes (a bound for the test)


@dataclass
class Mirror:
    """What the loopback server serves and what it was asked."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)  # serve half, then close, the first time
    silent: set[str] = field(default_factory=set)  # accept, never answer
    # claim Content-Length 10**15 and stream zeros (ENDLESS_BYTES, then close)
    endless: set[str] = field(default_factory=set)
    # answer a Range request from this many bytes before the asked start (a 206 that lies)
    wrong_range: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def mirror():
    state: dict[str, Mirror] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            m = state["mirror"]
            name = self.path.rsplit("/", 1)[-1]
            m.requests.append((name, self.headers.get("Range")))
            if name in m.silent:
                m.release.wait()  # until the test ends
                return
            if name in m.endless:
                self.send_response(200)
                self.send_header("Content-Length", str(10**15))
                self.end_headers()
                try:
                    for _ in range(ENDLESS_BYTES // (1 << 16)):
                        self.wfile.write(bytes(1 << 16))
                except OSError:  # the client hung up
                    pass
                self.close_connection = True
                return
            if name not in m.files:
                self.send_error(404)
                return
            data = m.files[name]
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = max(0, start - m.wrong_range.get(name, 0))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if name in m.cut_once:
                m.cut_once.discard(name)
                self.wfile.write(data[start:start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:  # the client hung up first
                    pass
                return
            self.wfile.write(data[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["mirror"] = Mirror(url=f"http://127.0.0.1:{server.server_address[1]}/weights")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["mirror"]
    state["mirror"].release.set()
    server.shutdown()
    server.server_close()


def _entry(name: str, data: bytes, cache: str = "iqa", published: bytes | None = None,
           size: bool = True) -> WeightFile:
    """A table entry for synthetic content (hash of ``published`` if given: a corrupt mirror)."""
    digest = hashlib.sha256(published if published is not None else data).hexdigest()
    return WeightFile(name, f"https://example.invalid/{name}", digest,
                      len(data) if size else None, "1 KB", cache, "a test")


def _folders(tmp_path: Path) -> dict[str, Path]:
    return {"torch": tmp_path / "torch", "iqa": tmp_path / "iqa"}


def test_fetch_installs_verified_files_once(tmp_path, mirror):
    a, b = os.urandom(300_000), os.urandom(5_000)
    mirror.files = {"a.pth": a, "b.mat": b}
    entries = [_entry("a.pth", a, "torch", size=False), _entry("b.mat", b)]
    lines: list[str] = []
    errors = fetch(entries, base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lines.append)
    assert errors == []
    assert (tmp_path / "torch" / "a.pth").read_bytes() == a
    assert (tmp_path / "iqa" / "b.mat").read_bytes() == b
    assert not list(tmp_path.rglob("*.part"))
    assert all("verified" in line for line in lines) and len(lines) == 2
    asked = len(mirror.requests)
    assert fetch(entries, base_url=mirror.url, timeout=5, progress=False,
                 folders=_folders(tmp_path), log=lines.append) == []
    assert len(mirror.requests) == asked  # already there and verified: nothing downloaded


def test_corrupted_download_is_refused_and_named(tmp_path, mirror):
    good = os.urandom(10_000)
    bad = bytearray(good)
    bad[5000] ^= 0xFF
    mirror.files = {"c.pth": bytes(bad)}
    errors = fetch([_entry("c.pth", bytes(bad), published=good)], base_url=mirror.url,
                   timeout=5, progress=False, folders=_folders(tmp_path), log=lambda _: None)
    assert len(errors) == 1
    assert errors[0].startswith("c.pth: the file from ")
    assert hashlib.sha256(bad).hexdigest() in errors[0]
    assert hashlib.sha256(good).hexdigest() in errors[0] and "nothing installed" in errors[0]
    assert not (tmp_path / "iqa" / "c.pth").exists()
    assert not (tmp_path / "iqa" / "c.pth.part").exists()  # a bad whole file is not resumed


def test_cut_download_resumes_with_a_range_request(tmp_path, mirror):
    data = os.urandom(200_001)
    mirror.files = {"d.pth": data}
    mirror.cut_once = {"d.pth"}
    entry = _entry("d.pth", data)
    part = tmp_path / "iqa" / "d.pth.part"
    errors = fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lambda _: None)
    assert len(errors) == 1 and "d.pth" in errors[0] and "again to resume" in errors[0]
    assert part.stat().st_size == 100_000
    assert not (tmp_path / "iqa" / "d.pth").exists()
    assert fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                 folders=_folders(tmp_path), log=lambda _: None) == []
    assert mirror.requests[-1] == ("d.pth", "bytes=100000-")
    assert (tmp_path / "iqa" / "d.pth").read_bytes() == data and not part.exists()


def test_a_download_stops_at_the_published_size(tmp_path, mirror):
    """A server that claims 10**15 bytes and streams zeros: no more than the table's size is
    kept, and nothing is installed."""
    entry = WEIGHT_FILES[LPIPS_FILE]
    mirror.endless = {LPIPS_FILE}
    part = tmp_path / "iqa" / f"{LPIPS_FILE}.part"
    errors = fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lambda _: None)
    assert len(errors) == 1 and errors[0].startswith(f"{LPIPS_FILE}: "), errors
    assert f"more than the published {entry.size} bytes" in errors[0]
    assert not part.exists() or part.stat().st_size <= entry.size
    assert not (tmp_path / "iqa" / LPIPS_FILE).exists()


def test_a_part_that_outgrew_the_published_size_is_removed(tmp_path, mirror):
    data = os.urandom(5_000)
    entry = _entry("f.pth", data)
    mirror.files = {"f.pth": data}
    part = tmp_path / "iqa" / "f.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(7_000))  # from a server that sent too much
    assert fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                 folders=_folders(tmp_path), log=lambda _: None) == []
    assert mirror.requests == [("f.pth", None)]  # not resumed: fetched whole
    assert (tmp_path / "iqa" / "f.pth").read_bytes() == data and not part.exists()


def test_a_resume_answered_from_another_offset_installs_nothing_wrong(tmp_path, mirror):
    """NRQM's file has no published hash: a 206 whose Content-Range starts elsewhere than
    the .part ends must not become the file, and the size the server gives is checked."""
    entry = WEIGHT_FILES["NRQM_model.mat"]
    assert not entry.sha256  # the case without a hash
    data = os.urandom(200_000)
    mirror.files = {entry.name: data}
    mirror.cut_once = {entry.name}
    dest = tmp_path / "iqa" / entry.name
    errors = fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lambda _: None)
    assert len(errors) == 1 and "again to resume" in errors[0]
    assert (tmp_path / "iqa" / f"{entry.name}.part").stat().st_size == 100_000
    mirror.wrong_range = {entry.name: 50_000}  # answers bytes=100000- from byte 50000
    errors = fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lambda _: None)
    assert not dest.exists() or dest.read_bytes() == data
    assert errors == [] and dest.read_bytes() == data, errors  # started again from zero
    assert mirror.requests[-2:] == [(entry.name, "bytes=100000-"), (entry.name, None)]


def test_a_part_longer_than_a_file_without_hash_is_not_installed(tmp_path, mirror):
    """The server says the range starts past its file's end (416): the part is no beginning
    of the file, which is fetched whole instead of being installed unchecked."""
    entry = WEIGHT_FILES["NRQM_model.mat"]
    data = os.urandom(200_000)
    mirror.files = {entry.name: data}
    part = tmp_path / "iqa" / f"{entry.name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(250_000))  # what a wrong earlier answer left
    errors = fetch([entry], base_url=mirror.url, timeout=5, progress=False,
                   folders=_folders(tmp_path), log=lambda _: None)
    assert errors == [] and (tmp_path / "iqa" / entry.name).read_bytes() == data, errors
    assert mirror.requests == [(entry.name, "bytes=250000-"), (entry.name, None)]
    assert not part.exists()


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "0", "-1", "1e10"])
def test_a_timeout_that_is_no_number_of_seconds_is_one_error_line(tmp_path, timeout):
    with socket.socket() as s:  # nobody listens: nothing may be fetched anyway
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run_cli(["fetch", "nrqm", f"--timeout={timeout}", "--base-url",
                     f"http://127.0.0.1:{port}", "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --timeout must be ") and f"{float(timeout):g}" in line, line


def _run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"),
           "ESRGAN_IQA_WEIGHTS": str(tmp_path / "iqa"), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("ESRGAN_WEIGHTS_URL", None)
    return subprocess.run([sys.executable, "-m", "esrgan.downloads", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=env, timeout=900)


def test_silent_server_ends_in_a_time_out_not_a_hang(tmp_path, mirror):
    mirror.silent = set(GROUPS["lpips"])
    proc = _run_cli(["fetch", "lpips", "--base-url", mirror.url, "--timeout", "1",
                     "--no-progress"], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr  # one per file of the group; the second is not tried
    host = mirror.url.split("/")[2]
    assert all(f"no answer from {host} within 1 s" in line for line in lines)
    assert len(mirror.requests) == 1
    assert lines[0].startswith(f"error: {LPIPS_FILE} (LPIPS (its linear heads)) not fetched")
    assert str(tmp_path / "iqa" / LPIPS_FILE) in lines[0]
    assert WEIGHT_FILES[LPIPS_FILE].sha256 in lines[0]


def test_offline_fails_at_once_with_one_line_per_file(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run_cli(["fetch", "--base-url", f"http://127.0.0.1:{port}", "--no-progress"],
                    tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(WEIGHT_FILES)
    for line, entry in zip(lines, WEIGHT_FILES.values(), strict=True):
        assert line.startswith(f"error: {entry.name} ({entry.needed_by}) not fetched: "
                               f"cannot reach 127.0.0.1:{port}")
        folder = "torch/hub/checkpoints" if entry.cache == "torch" else "iqa"
        assert f"put it at {tmp_path / folder / entry.name}" in line
        assert entry.hash_note in line
    listing = _run_cli(["list"], tmp_path)
    assert listing.returncode == 0 and listing.stdout.count("missing") == len(WEIGHT_FILES)


def test_cli_refuses_a_table_file_with_the_wrong_hash(tmp_path, mirror):
    mirror.files = {LPIPS_FILE: b"x" * WEIGHT_FILES[LPIPS_FILE].size}
    proc = _run_cli(["fetch", "lpips", "--base-url", mirror.url, "--no-progress"], tmp_path)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: {LPIPS_FILE}: the file from {mirror.url}/{LPIPS_FILE}")
    assert WEIGHT_FILES[LPIPS_FILE].sha256 in first
    assert not (tmp_path / "iqa" / LPIPS_FILE).exists()


def test_unknown_group_is_one_error_line(tmp_path):
    proc = _run_cli(["fetch", "vgg18"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown weights vgg18; known: all, {', '.join(GROUPS)}"]


class _Payload:
    """Unpickling this creates the marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": torch.zeros(1), "x": _Payload(marker)}, path)


def test_tampered_cache_file_is_never_loaded(tmp_path, monkeypatch):
    """A pickle that would run code, under the expected names with the wrong hash."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    marker = tmp_path / "payload-ran"
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    _plant(checkpoints / IMAGENET_FILE, marker)
    with pytest.raises(UnverifiedWeights) as info:
        VGGFeatureExtractor(weights="imagenet")
    assert str(info.value).startswith(
        f"refusing to load {checkpoints / IMAGENET_FILE}: its SHA-256 ")
    assert "make weights" in str(info.value) and "\n" not in str(info.value)

    iqa = tmp_path / "iqa"
    monkeypatch.setenv("ESRGAN_IQA_WEIGHTS", str(iqa))
    _plant(iqa / LPIPS_FILE, marker)
    _plant(checkpoints / ALEXNET_FILE, marker)
    img = np.random.default_rng(0).random((48, 48, 3))
    with pytest.raises(MetricUnavailable, match=rf"^LPIPS: refusing to load {iqa / LPIPS_FILE}"):
        lpips(img, img)
    assert not marker.exists(), "the planted pickle ran"


def test_hash_is_checked_again_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    good = os.urandom(1000)
    path = tmp_path / "e.pth"
    path.write_bytes(good)
    monkeypatch.setitem(WEIGHT_FILES, "e.pth", _entry("e.pth", good))
    assert verified(path) == path
    path.write_bytes(good[:-1] + b"!")
    with pytest.raises(UnverifiedWeights, match="e.pth"):
        verified(path)
    monkeypatch.setenv(VERIFY_ENV, "0")
    assert verified(path) == path


def test_an_explicit_vgg_file_is_the_users_choice(tmp_path, monkeypatch):
    """vgg_weights=/path/vgg19-dcbb9e9d.pth (fine-tuned weights, say) loads unhashed."""
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}
    path = tmp_path / "mine" / IMAGENET_FILE
    path.parent.mkdir()
    torch.save(state, path)
    vgg = VGGFeatureExtractor("conv1_1", weights=path)
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])


def test_matrix_opening_line_names_the_vgg19_in_use(tmp_path, monkeypatch):
    from experiments.matrix import vgg_fallback

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(VERIFY_ENV, raising=False)
    extra: dict = {}
    notice = vgg_fallback("cpu", extra)
    assert extra == {"vgg_weights": "random"}
    assert "vgg_weights=random" in notice and "`make weights` gets the paper's" in notice
    _plant(tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_FILE, tmp_path / "ran")
    with pytest.raises(ValueError, match="does not hash as torchvision's vgg19-dcbb9e9d.pth"):
        vgg_fallback("cpu", {})
    assert not (tmp_path / "ran").exists()

"""The weight files a run may need: one table, their verification, and the one step that fetches
them on a connected machine (``make weights``, ``python -m esrgan.downloads fetch [GROUP ...]``).

Runs never download: compute nodes have no internet. The loaders (``esrgan.archs.vgg``,
``esrgan.metrics.iqa``) look for these files in the two caches that torchvision and pyiqa use,
and :func:`cache_path` is where this module puts them:

- torchvision's files: ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``);
- pyiqa's files: the folder named by ``ESRGAN_IQA_WEIGHTS`` if set, else ``<torch hub dir>/pyiqa``.

A file found in a cache under a name of :data:`WEIGHT_FILES` is verified before it is loaded
(:func:`verified`): its SHA-256 must equal the published one (or, where only torchvision's
8-digit prefix is published, start with it: what ``torch.hub``'s ``check_hash`` does). A file
whose hash differs is refused with one line naming it; nothing from it is read. The hash of a
file is computed once per process (cached by path, size and modification time). A path the
user gives explicitly (``vgg_weights=/path``, ``--iqa-weights DIR``) is the user's choice and
is not hash-checked; it is still read with ``weights_only=True``. ``ESRGAN_WEIGHTS_VERIFY=0``
turns the check off for the caches too (for files of your own under these names).

Fetching: each file goes to ``NAME.part`` beside its destination (a cut download is resumed
with an HTTP Range request by running the same command again), is hash-checked, and only then
renamed into place. Nothing past a file's published size is kept, whatever the server claims;
a resume is appended only where the server's answer starts at the end of the ``.part`` (else
the whole file is fetched again); and the size is checked: the published one, else the one
the server gives (``NRQM_model.mat`` has no published hash). Connect and read time-outs
end a silent server with one line. Offline, the command fails at once with one line per
missing file: what it is, where to put it, its hash.
``--base-url`` (or ``ESRGAN_WEIGHTS_URL``) fetches every file by name from a mirror instead.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import torch

from esrgan.files import OutputError, check_output_dir
from esrgan.weights import CheckpointError

__all__ = [
    "GROUPS",
    "IQA_WEIGHTS_ENV",
    "MIRROR_ENV",
    "VERIFY_ENV",
    "WEIGHT_FILES",
    "FetchError",
    "UnverifiedWeights",
    "WeightFile",
    "cache_dir",
    "cache_path",
    "check_timeout",
    "fetch",
    "file_status",
    "main",
    "sha256_of",
    "verified",
]

IQA_WEIGHTS_ENV = "ESRGAN_IQA_WEIGHTS"
MIRROR_ENV = "ESRGAN_WEIGHTS_URL"
VERIFY_ENV = "ESRGAN_WEIGHTS_VERIFY"
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 86_400.0  # a day: longer is no time-out (and past about 9e9 s sockets refuse it)

_TORCHVISION = "https://download.pytorch.org/models/"
_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file and what needs it.

    ``sha256``: the full published SHA-256 (64 hex digits), or only the leading digits where
    nothing more is published (torchvision's file names carry 8), or "" where no hash is
    published at all. ``size``: the exact size in bytes where published, else None.
    """

    name: str
    url: str
    sha256: str
    size: int | None
    approx_size: str
    cache: Literal["torch", "iqa"]
    needed_by: str

    @property
    def hash_note(self) -> str:
        """How far the hash pins the file, for tables and messages."""
        if not self.sha256:
            return "no published SHA-256"
        if len(self.sha256) < 64:
            return f"SHA-256 prefix {self.sha256} (only the prefix is published)"
        return f"SHA-256 {self.sha256}"


# The one table. Sources of the hashes: torchvision's file names carry the first 8 hex digits;
# the full values are the Git LFS SHA-256 of the files on HuggingFace (pyiqa's weights
# repository chaofengc/IQA-PyTorch-Weights, and mirrors of torchvision's files whose LFS hash
# starts with torchvision's prefix). No full hash of vgg19-dcbb9e9d.pth was found published,
# so its prefix is checked; NRQM_model.mat has none (a MATLAB data file, read with
# scipy.io.loadmat: loading it runs no code).
WEIGHT_FILES: dict[str, WeightFile] = {f.name: f for f in (
    WeightFile("vgg19-dcbb9e9d.pth", _TORCHVISION + "vgg19-dcbb9e9d.pth", "dcbb9e9d", None,
               "548 MiB", "torch", "the perceptual loss (ImageNet VGG19, the paper's)"),
    WeightFile("alexnet-owt-7be5be79.pth", _TORCHVISION + "alexnet-owt-7be5be79.pth",
               "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", None,
               "233 MiB", "torch", "LPIPS (its AlexNet trunk)"),
    WeightFile("LPIPS_v0.1_alex-df73285e.pth", _PYIQA + "LPIPS_v0.1_alex-df73285e.pth",
               "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 6009,
               "6 KB", "iqa", "LPIPS (its linear heads)"),
    WeightFile("vgg16-397923af.pth", _TORCHVISION + "vgg16-397923af.pth",
               "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", None,
               "528 MiB", "torch", "DISTS (its VGG16 trunk)"),
    WeightFile("DISTS_weights-f5e65c96.pth", _PYIQA + "DISTS_weights-f5e65c96.pth",
               "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", 12288,
               "12 KB", "iqa", "DISTS (its alpha and beta)"),
    WeightFile("NRQM_model.mat", _PYIQA + "NRQM_model.mat", "", None, "about 1 MB", "iqa",
               "Ma (NRQM), hence PI"),
)}

# What `fetch` accepts: a group of files per use (no argument: all of them).
GROUPS: dict[str, tuple[str, ...]] = {
    "vgg19": ("vgg19-dcbb9e9d.pth",),
    "lpips": ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"),
    "dists": ("DISTS_weights-f5e65c96.pth", "vgg16-397923af.pth"),
    "nrqm": ("NRQM_model.mat",),
    "pi": ("NRQM_model.mat",),
}


class UnverifiedWeights(CheckpointError):
    """A cached weight file whose SHA-256 is not the published one: refused, never loaded."""


class FetchError(RuntimeError):
    """A file that could not be fetched; ``offline`` when the network, not the file, failed."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


# ------------------------------------------------------------------------------ verifying


def cache_dir(cache: Literal["torch", "iqa"]) -> Path:
    """The folder a file of this cache is fetched into (and searched first by the loaders)."""
    hub = Path(torch.hub.get_dir())
    if cache == "torch":
        return hub / "checkpoints"
    return Path(os.environ[IQA_WEIGHTS_ENV]) if os.environ.get(IQA_WEIGHTS_ENV) else hub / "pyiqa"


def cache_path(name: str) -> Path:
    """Where the table's file ``name`` is fetched to."""
    return cache_dir(WEIGHT_FILES[name].cache) / name


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, computed once per process for a given path, size and mtime."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _matches(entry: WeightFile, digest: str) -> bool:
    return digest.startswith(entry.sha256)  # "" (no published hash) matches anything


def _verify_on() -> bool:
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def verified(path: str | os.PathLike) -> Path:
    """``path`` if it may be loaded: a file of the table found in a cache must hash as published.

    Raises :class:`UnverifiedWeights` (one line: the file, both hashes, what to do) otherwise.
    Files whose name is not in the table pass unchanged (see the module docstring).
    """
    path = Path(path)
    entry = WEIGHT_FILES.get(path.name)
    if entry is None or not entry.sha256 or not _verify_on():
        return path
    digest = sha256_of(path)
    if not _matches(entry, digest):
        raise UnverifiedWeights(
            f"refusing to load {path}: its SHA-256 {digest[:16]}... is not the published "
            f"{entry.sha256[:16]}{'...' if len(entry.sha256) > 16 else ''} of {entry.name} "
            f"({entry.needed_by}); delete it and run `make weights` (or "
            f"{VERIFY_ENV}=0 to use your own file under this name)")
    return path


def file_status(name: str) -> str:
    """'verified', 'present (no published hash)', 'missing' or 'hash differs' for a cached file."""
    path = cache_path(name)
    if not path.is_file():
        return "missing"
    entry = WEIGHT_FILES[name]
    if not entry.sha256:
        return "present (no published hash)"
    return "verified" if _matches(entry, sha256_of(path)) else "hash differs"


# ------------------------------------------------------------------------------- fetching


def check_timeout(timeout: float, name: str = "timeout") -> float:
    """``timeout`` if a socket can wait that many seconds (> 0, at most :data:`MAX_TIMEOUT`);
    else ValueError, one line naming the option ``name``."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout)
            and 0 < timeout <= MAX_TIMEOUT):
        raise ValueError(f"{name} must be a number of seconds > 0 and at most "
                         f"{MAX_TIMEOUT:g} (a day), got {timeout:g}")
    return float(timeout)


def _url(entry: WeightFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{entry.name}" if base_url else entry.url


def _network_reason(exc: BaseException, url: str, timeout: float) -> str:
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"no answer from {urlsplit(url).netloc} within {timeout:g} s"
    if isinstance(exc, URLError):
        return f"cannot reach {urlsplit(url).netloc} ({exc.reason})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"cannot reach {urlsplit(url).netloc} ({text})"


class _StartAgain(Exception):
    """The answer to a resume does not continue the ``.part``: fetch the whole file instead."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


def _download(entry: WeightFile, dest: Path, url: str, timeout: float, progress: bool) -> None:
    """``url`` into ``dest`` through ``dest.part``: resumed, verified, renamed into place.

    Never more than the table's size is written; a resume is appended only when the server's
    answer starts where the ``.part`` ends (else the whole file is fetched again); the size is
    checked against the table's, else the one the server gives, and the hash where published.
    """
    check_output_dir(dest.parent)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if entry.size is not None and offset > entry.size:
        part.unlink()  # not a beginning of the published file, whatever it holds
        offset = 0
    try:
        total = _receive(entry, part, url, offset, timeout, progress)
    except _StartAgain:
        part.unlink(missing_ok=True)
        total = _receive(entry, part, url, 0, timeout, progress)
    got = part.stat().st_size
    if total is not None and got < total:
        raise FetchError(f"{entry.name}: download cut at {got} of {total} bytes; run the "
                         f"same command again to resume from {part}")
    if total is not None and got > total:
        part.unlink()
        raise FetchError(f"{entry.name}: the file from {url} is {got} bytes, not the {total} "
                         f"{'published' if entry.size is not None else 'the server gives'}: "
                         f"deleted, nothing installed")
    digest = sha256_of(part)
    if not _matches(entry, digest):
        part.unlink()
        raise FetchError(f"{entry.name}: the file from {url} has SHA-256 {digest}, not the "
                         f"published {entry.sha256}: deleted, nothing installed")
    os.replace(part, dest)


def _receive(entry: WeightFile, part: Path, url: str, offset: int, timeout: float,
             progress: bool) -> int | None:
    """Append the server's answer to the ``offset`` bytes of ``part`` (a Range request when
    ``offset``); returns the size of the whole file (the table's, else the server's, else
    None). Raises ``_StartAgain`` when a resume is answered from another byte."""
    from tqdm import tqdm

    headers = {"User-Agent": "esrgan-lab", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset:  # the part is already whole, if the sizes agree
            match = _UNSATISFIED_RANGE.fullmatch(exc.headers.get("Content-Range", "").strip())
            total = entry.size if entry.size is not None else (
                int(match.group(1)) if match else None)
            if total is None and entry.sha256:
                return None  # the hash tells whether the part is the file
            if total != offset:  # a part of another size, or nothing to check it with
                raise _StartAgain() from None
            return total
        raise FetchError(f"{entry.name}: HTTP {exc.code} ({exc.reason}) from {url}") from None
    except (URLError, OSError) as exc:
        raise FetchError(f"{entry.name}: {_network_reason(exc, url, timeout)}",
                         offline=True) from None
    with response:
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            start = int(match.group(1)) if match else -1
            announced = int(match.group(2)) if match and match.group(2) != "*" else None
            if start != offset:  # bytes from elsewhere in the file (or an unreadable range)
                if offset:
                    raise _StartAgain()
                raise FetchError(f"{entry.name}: {url} answered with part of the file "
                                 f"(Content-Range {response.headers.get('Content-Range')!r}) "
                                 f"instead of all of it: nothing installed")
        else:  # the whole file: start the part again
            offset = 0
            length = response.headers.get("Content-Length", "")
            announced = int(length) if length.isdigit() else None
        total = entry.size if entry.size is not None else announced
        # The table's size bounds what is kept, whatever the server claims or sends: one byte
        # more is read only to tell that the answer is longer.
        room = None if entry.size is None else entry.size - offset
        too_long = False
        try:
            with open(part, "ab" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True,
                    unit_divisor=1024, desc=entry.name, disable=not progress,
                    dynamic_ncols=True) as bar:
                while chunk := response.read(1 << 20 if room is None
                                             else min(1 << 20, room + 1)):
                    if room is not None:
                        if len(chunk) > room:
                            too_long = True
                            break
                        room -= len(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # also TimeoutError, ConnectionError
            if isinstance(exc, OutputError):
                raise
            got = part.stat().st_size if part.is_file() else 0
            raise FetchError(
                f"{entry.name}: download stopped at {got} bytes "
                f"({_network_reason(exc, url, timeout)}); run the same command again to "
                f"resume", offline=isinstance(exc, TimeoutError)) from None
    if too_long:
        part.unlink()
        raise FetchError(f"{entry.name}: {url} sent more than the published {entry.size} "
                         f"bytes: deleted, nothing installed")
    return total


def fetch(entries: Sequence[WeightFile], *, base_url: str | None = None,
          timeout: float = DEFAULT_TIMEOUT, progress: bool = True,
          folders: dict[str, Path] | None = None, log=print) -> list[str]:
    """Fetch the missing or mismatching ``entries`` into their caches; returns error lines.

    ``folders`` maps a cache ("torch", "iqa") to a folder (default :func:`cache_dir`).
    After the first network failure (offline, silent server) nothing more is tried: each file
    still missing gets one line saying what it is, where to put it and its hash. A
    ``timeout`` that is not a number of seconds a socket can wait is a ValueError.
    """
    check_timeout(timeout)
    errors: list[str] = []
    offline: str | None = None
    for entry in entries:
        folder = (folders or {}).get(entry.cache) or cache_dir(entry.cache)
        dest = folder / entry.name
        if dest.is_file():
            if _matches(entry, sha256_of(dest)):
                state = "verified" if entry.sha256 else entry.hash_note
                log(f"{entry.name}: in {folder} ({state})")
                continue
            log(f"{entry.name}: {dest} does not hash as published: fetching a fresh copy")
        url = _url(entry, base_url)
        if offline is None:
            try:
                _download(entry, dest, url, timeout, progress)
                log(f"{entry.name}: fetched into {folder} "
                    f"({'verified' if entry.sha256 else entry.hash_note})")
                continue
            except (FetchError, OutputError) as exc:
                if not getattr(exc, "offline", False):
                    errors.append(str(exc))
                    continue
                offline = str(exc).removeprefix(f"{entry.name}: ")
        errors.append(f"{entry.name} ({entry.needed_by}) not fetched: {offline}; download "
                      f"{url} and put it at {dest} ({entry.hash_note})")
    return errors


# ----------------------------------------------------------------------------------- CLI


def _select(groups: Sequence[str]) -> list[WeightFile]:
    unknown = [g for g in groups if g not in GROUPS and g != "all"]
    if unknown:
        raise ValueError(f"unknown weights {', '.join(unknown)}; known: all, "
                         f"{', '.join(GROUPS)}")
    names = [n for g in (groups or ["all"]) for n in (WEIGHT_FILES if g == "all" else GROUPS[g])]
    return [WEIGHT_FILES[n] for n in dict.fromkeys(names)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m esrgan.downloads",
        description="Fetch (on a connected machine) the weight files runs may need, into the "
                    "caches the loaders search; list them and their state.")
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="download missing files (default: all), verified")
    f.add_argument("groups", nargs="*", metavar="WEIGHTS",
                   help=f"all (default) or any of: {', '.join(GROUPS)}")
    f.add_argument("--base-url", default=os.environ.get(MIRROR_ENV) or None,
                   help=f"fetch every file by name from this mirror (default: ${MIRROR_ENV}, "
                        f"else each file's own URL)")
    f.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for a connection or for data (default 30)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("list", help="the table: each file, where it goes, its hash and state")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``fetch`` / ``list``; exit 0, 1 when a file could not be fetched, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    if args.action == "list":
        for entry in WEIGHT_FILES.values():
            print(f"{entry.name}  {entry.approx_size}  {file_status(entry.name)}  "
                  f"{cache_path(entry.name)}  {entry.hash_note}  needed by: {entry.needed_by}")
        return 0
    try:
        entries = _select(args.groups)
        check_timeout(args.timeout, "--timeout")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors = fetch(entries, base_url=args.base_url, timeout=args.timeout,
                   progress=not args.no_progress)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

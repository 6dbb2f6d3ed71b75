"""Decoded training-data cache: a training folder as memory-mapped uint8 ``.npy`` files.

Why. A random 128x128 HR training crop touches about 1/170 of a 2K image, but a folder loader
decodes the whole PNG for it (tens of milliseconds). BasicSR pre-crops DF2K into sub-images
for this reason; here the folder is decoded once into raw arrays instead, and a crop is a
slice of a memory-mapped file: no decoding, and the OS page cache holds the data once for all
DataLoader workers (DF2K is about 30 GB as uint8 on disk, about 100 GB as float32 in RAM).

Build it once (a documented command; resumable, interruption-safe)::

    python -m esrgan.data.cache HR_DIR CACHE_DIR [--lr-dir LR_DIR] [--scale 4]

and use ``CACHE_DIR`` as the training folder: ``load_training_pairs(CACHE_DIR, scale=4)``
(or ``load_cached_pairs``) returns ``ImagePair`` s whose arrays are uint8, and
``PatchDataset`` gives samples bit-identical to those of the float32 pairs of ``load_pairs``
on the original folder (same seed, same index).

Layout of ``CACHE_DIR``:

- ``NAME.hr.npy``: the mod-cropped HR image, ``(H, W, 3)`` uint8;
- ``NAME.lr.npy``: its LR, ``(H/s, W/s, 3)`` uint8: the ``lr_dir`` partner file if given
  (paired as ``load_pairs`` pairs), else ``make_lr`` (MATLAB bicubic rounded to 8 bits);
- ``cache.json``: the index (format version, scale, source folders, LR method, the images
  with their shapes, the skipped files). It is written last: a folder without it is not a
  cache (``is_cache``), e.g. a build that was interrupted.

Interruptions. Every file is written under a temporary name and renamed, so a killed build
leaves only whole files (plus temporary files, removed by the next build). Rerunning the
command continues: an entry whose two ``.npy`` files are readable, uint8, of the sizes the
source image needs and newer than the source file(s) is kept; anything else is rebuilt.
A cache folder holds one configuration (source folders, scale, LR method): building another
into it is refused. Run one build per folder at a time.

Bits. The cache stores 8 bits per channel, which is exactly what ``read_image`` decodes from
8-bit files. A source with more bits (16-bit PNG) is rounded to 8 bits, with a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from esrgan.files import atomic_write, check_output_dir

from .datasets import (
    LR_METHOD,
    ImagePair,
    _check_load_args,
    _load_pair,
    _lr_index,
    _lr_partner,
    load_pairs,
)
from .io import DataError, list_images

INDEX_NAME = "cache.json"
CACHE_FORMAT = "esrgan-decoded-cache"
CACHE_VERSION = 1
# Settings of a build in progress (the index is written only at the end): a resumed build
# must not mix entries made with another scale, source or LR method.
_BUILD_NAME = ".cache-build.json"
_SETTINGS_KEYS = ("format", "version", "scale", "source", "lr_source", "lr_method")


def is_cache(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds a decoded cache (its ``cache.json`` index)."""
    return (Path(folder) / INDEX_NAME).is_file()


def _entry_paths(cache_dir: Path, name: str) -> tuple[Path, Path]:
    """The HR and LR ``.npy`` files of image ``name``."""
    return cache_dir / f"{name}.hr.npy", cache_dir / f"{name}.lr.npy"


class _NpyMap(np.memmap):
    """A read-only memory map of a whole ``.npy`` file that pickles as its path.

    DataLoader workers started by spawn/forkserver receive the dataset pickled: a plain
    memmap would be copied into every worker (gigabytes each); this one is mapped again.
    Slices and results of arithmetic are ordinary arrays when pickled.
    """

    _npy_path: str | None = None

    def __array_finalize__(self, obj: Any) -> None:
        super().__array_finalize__(obj)
        self._npy_path = None  # only the array made by _map_npy stands for the whole file

    def __reduce__(self) -> Any:
        if self._npy_path is not None:
            return (_map_npy, (self._npy_path,))
        return np.asarray(self).__reduce__()


def _map_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load(path, mmap_mode='r')`` as an ``_NpyMap``; DataError naming the file if bad."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing cache file (rebuild with python -m esrgan.data.cache)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise DataError(f"{path}: corrupt cache file ({reason})") from exc
    mapped = arr.view(_NpyMap)
    mapped._npy_path = str(path)
    return mapped


def _to_uint8(img: np.ndarray, source: Path) -> np.ndarray:
    """A float [0, 1] image as uint8 (exact for 8-bit sources; warns when it rounds)."""
    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if not np.array_equal(np.asarray(u8, dtype=np.float32) / 255.0, img):
        warnings.warn(
            f"{source} has more than 8 bits per channel; the cache stores it rounded to 8 bits",
            stacklevel=3,
        )
    return u8


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), what="the cache file")


def _save_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode(), what="the cache index")


def _existing_entry(
    hr_npy: Path, lr_npy: Path, sources: Sequence[Path], scale: int
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Shapes of a valid existing entry (see the module docstring), else None."""
    try:
        if not (hr_npy.is_file() and lr_npy.is_file()):
            return None
        newest_source = max(p.stat().st_mtime_ns for p in sources)
        # Not newer than the source: the source may have changed since (equal times are
        # ambiguous with coarse file-system clocks, so they rebuild too).
        if min(hr_npy.stat().st_mtime_ns, lr_npy.stat().st_mtime_ns) <= newest_source:
            return None
        with Image.open(sources[0]) as im:  # reads the header only
            w, h = im.size
        hr, lr = _map_npy(hr_npy), _map_npy(lr_npy)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # DataError is a ValueError: a corrupt .npy is rebuilt
    hr_shape = (h - h % scale, w - w % scale, 3)
    lr_shape = (hr_shape[0] // scale, hr_shape[1] // scale, 3)
    if hr.dtype != np.uint8 or lr.dtype != np.uint8 or hr.shape != hr_shape \
            or lr.shape != lr_shape:
        return None
    return hr.shape, lr.shape


def _settings(hr_dir: Path, lr_dir: Path | None, scale: int) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "scale": scale,
        "source": str(hr_dir.resolve()),
        "lr_source": str(lr_dir.resolve()) if lr_dir is not None else None,
        "lr_method": "files" if lr_dir is not None else LR_METHOD,
    }


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to build into a folder that holds (part of) a cache made differently."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
        old_settings = {k: old.get(k) for k in _SETTINGS_KEYS}
    except (OSError, ValueError, AttributeError):
        return  # unreadable: the build rewrites it (entries are checked one by one)
    if old_settings != settings:
        diff = ", ".join(
            f"{k} {old_settings[k]!r} (now {settings[k]!r})"
            for k in _SETTINGS_KEYS if old_settings[k] != settings[k]
        )
        raise DataError(
            f"{path}: this folder holds a cache built with {diff}; "
            "use another cache folder or delete this one"
        )


def build_cache(
    hr_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    scale: int = 4,
    lr_dir: str | os.PathLike | None = None,
    on_error: Literal["raise", "skip"] = "skip",
    progress: bool = True,
) -> Path:
    """Decode the training folder ``hr_dir`` (and ``lr_dir``) into ``cache_dir`` once.

    Pairs images as ``load_pairs`` does, writes ``NAME.hr.npy`` / ``NAME.lr.npy`` (uint8) and
    finally the ``cache.json`` index (see the module docstring). Resumable: entries already
    present and valid are kept. Unreadable images are skipped with a ``SkippedImageWarning``
    (``on_error='skip'``) or raise ``ImageReadError`` (``'raise'``). Returns ``cache_dir``.
    """
    _check_load_args(scale, on_error)
    hr_dir = Path(hr_dir)
    cache = Path(cache_dir)
    lr_root = Path(lr_dir) if lr_dir is not None else None
    hr_files = list_images(hr_dir)
    lr_index = _lr_index(lr_root) if lr_root is not None else None
    settings = _settings(hr_dir, lr_root, scale)
    check_output_dir(cache)  # before any decoding: one clear error for an unwritable folder
    _check_settings(cache / INDEX_NAME, settings)
    _check_settings(cache / _BUILD_NAME, settings)
    for stray in cache.glob(".*.tmp"):  # left by a killed build (renames never happened)
        stray.unlink(missing_ok=True)
    _save_json(cache / _BUILD_NAME, settings)

    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    for hr_path in tqdm(hr_files, desc="cache", unit="img", disable=not progress):
        name = hr_path.stem
        if name in seen:
            raise DataError(f"HR files {seen[name]} and {hr_path} have the same name stem")
        seen[name] = hr_path
        lr_path = _lr_partner(hr_path, lr_index, lr_root, scale) if lr_index is not None \
            else None
        hr_npy, lr_npy = _entry_paths(cache, name)
        sources = [hr_path] if lr_path is None else [hr_path, lr_path]
        shapes = _existing_entry(hr_npy, lr_npy, sources, scale)
        if shapes is None:
            pair = _load_pair(hr_path, lr_path, scale, None, on_error)
            if pair is None:
                skipped.append(hr_path.name)
                continue
            hr8 = _to_uint8(pair.hr, hr_path)
            lr8 = _to_uint8(pair.lr, lr_path if lr_path is not None else hr_path)
            _save_npy(lr_npy, lr8)
            _save_npy(hr_npy, hr8)
            shapes = hr8.shape, lr8.shape
        entries.append({"name": name, "hr": list(shapes[0]), "lr": list(shapes[1])})
    if not entries:
        raise DataError(f"no readable images in {hr_dir} (all skipped)")
    _save_json(cache / INDEX_NAME, {**settings, "images": entries, "skipped": skipped})
    (cache / _BUILD_NAME).unlink(missing_ok=True)
    return cache


def read_index(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The checked ``cache.json`` of ``cache_dir``; DataError naming it if missing or corrupt."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: no cache index (build the cache with "
            "python -m esrgan.data.cache HR_DIR CACHE_DIR)"
        )
    try:
        index = json.loads(path.read_text())
        if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
            raise ValueError(
                f"format {index.get('format')!r} version {index.get('version')!r}, expected "
                f"{CACHE_FORMAT!r} version {CACHE_VERSION}"
            )
        int(index["scale"])
        for entry in index["images"]:
            if not isinstance(entry["name"], str) or len(entry["hr"]) != 3 \
                    or len(entry["lr"]) != 3:
                raise ValueError(f"bad image entry {entry!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise DataError(f"{path}: corrupt cache index ({reason}); rebuild the cache") from exc
    return index


def load_cached_pairs(cache_dir: str | os.PathLike, scale: int) -> list[ImagePair]:
    """The pairs of a decoded cache, as memory-mapped read-only uint8 arrays.

    Raises ``DataError`` naming the file for a missing or corrupt index or ``.npy`` file, a
    cache built for another scale, or arrays whose shapes disagree with the index or scale.
    """
    cache = Path(cache_dir)
    index = read_index(cache)
    if int(index["scale"]) != scale:
        raise DataError(
            f"{cache / INDEX_NAME}: cache built for scale {index['scale']}, not {scale}"
        )
    pairs: list[ImagePair] = []
    for entry in index["images"]:
        name = entry["name"]
        arrays = []
        for path, shape in zip(_entry_paths(cache, name), (entry["hr"], entry["lr"]), strict=True):
            arr = _map_npy(path)
            if arr.dtype != np.uint8 or arr.shape != tuple(shape):
                raise DataError(
                    f"{path}: {arr.dtype} array of shape {arr.shape}, but the index says "
                    f"uint8 {tuple(shape)}; rebuild the cache"
                )
            arrays.append(arr)
        hr, lr = arrays
        if hr.shape[2] != 3 or hr.shape[0] % scale or hr.shape[1] % scale \
                or lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale, 3):
            raise DataError(
                f"{_entry_paths(cache, name)[1]}: LR shape {lr.shape} is not HR {hr.shape} "
                f"/ {scale}"
            )
        pairs.append(ImagePair(name=name, hr=hr, lr=lr))
    if not pairs:
        raise DataError(f"{cache / INDEX_NAME}: the cache lists no images")
    return pairs


def load_training_pairs(
    folder: str | os.PathLike,
    lr_dir: str | os.PathLike | None = None,
    scale: int = 4,
    cache_dir: str | os.PathLike | None = None,
    on_error: Literal["raise", "skip"] = "skip",
) -> list[ImagePair]:
    """Training pairs from a decoded cache or from an image folder, whichever ``folder`` is.

    A cache (``is_cache``) gives ``load_cached_pairs(folder, scale)``; an ``lr_dir`` given
    with it must be the one the cache was built from. Otherwise this is
    ``load_pairs(folder, lr_dir, scale, cache_dir, on_error)``.
    """
    if not is_cache(folder):
        return load_pairs(folder, lr_dir, scale=scale, cache_dir=cache_dir, on_error=on_error)
    if lr_dir is not None:
        built_from = read_index(folder).get("lr_source")
        if built_from != str(Path(lr_dir).resolve()):
            raise DataError(
                f"{Path(folder) / INDEX_NAME}: the cache was built with LR from {built_from}, "
                f"not {lr_dir}; rebuild it with --lr-dir {lr_dir} or leave lr_dir out"
            )
    return load_cached_pairs(folder, scale)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build a decoded cache and say how to use it. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m esrgan.data.cache",
        description="Decode a training folder once into memory-mappable uint8 .npy files "
        "(resumable: rerun the same command after an interruption).",
    )
    parser.add_argument("hr_dir", help="folder of HR training images (e.g. DF2K HR PNGs)")
    parser.add_argument("cache_dir", help="output folder (created; reused when resuming)")
    parser.add_argument("--lr-dir", default=None,
                        help="folder of LR partners (default: MATLAB bicubic from the HR)")
    parser.add_argument("--scale", type=int, default=4, help="SR scale (default 4)")
    parser.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                        help="unreadable images: skip with a warning (default) or stop")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # One line per skipped file, without the Python source line a warning shows by default.
        warnings.showwarning = lambda message, *_args, **_kw: print(
            f"warning: {message}", file=sys.stderr
        )
        try:
            cache = build_cache(args.hr_dir, args.cache_dir, scale=args.scale,
                                lr_dir=args.lr_dir, on_error=args.on_error,
                                progress=not args.quiet)
            index = read_index(cache)
        except (ValueError, OSError) as exc:  # DataError; OutputError, NoSpaceError
            print(f"error: {exc}", file=sys.stderr)
            return 1
    images = index["images"]
    nbytes = sum(
        int(np.prod(entry["hr"])) + int(np.prod(entry["lr"])) for entry in images
    )
    print(f"cache ready: {len(images)} images at scale {args.scale} in {cache} "
          f"({nbytes / 1e9:.2f} GB of uint8 .npy, index {cache / INDEX_NAME})")
    if index.get("skipped"):
        print(f"skipped {len(index['skipped'])} unreadable: {', '.join(index['skipped'])}")
    print(f"use it as the training folder: load_training_pairs({str(cache)!r}, "
          f"scale={args.scale}); experiments that load training data with it take {cache} "
          "as their training HR folder")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Paired HR/LR data from folders, random training patches, full validation images.

Folder layout. ``load_pairs(hr_dir, lr_dir)`` pairs each HR file ``NAME.ext`` with the LR file
``NAMEx{scale}.*`` (``baby.png`` / ``babyx4.png``, ``img_001.png`` / ``img_001x4.png``: the
layout of the Set5/Set14/BSD100/DIV2K releases) or, failing that, ``NAME.*``. LR files
without an HR partner are ignored. HR is mod-cropped (bottom/right) to a multiple of the
scale and the LR must then be exactly HR/scale in both directions.

HR only (``lr_dir=None``): LR is made once by MATLAB-bicubic ``imresize(HR, 1/scale)``
rounded to 8 bits (``make_lr``), i.e. what a uint8 MATLAB pipeline writes to disk. It is
computed once per ``load_pairs`` call (the returned pairs hold it in memory, so epochs reuse
it) and, with ``cache_dir``, stored there as PNG and reused by later runs. The cache key is a
hash of the HR file's absolute path, byte size and modification time, the scale and the LR
method, so an edited HR file or a changed method never reuses a stale LR.

Bad files in a folder scan (``on_error``):

- ``'raise'`` (default; use it for evaluation): the first unreadable file raises
  ``ImageReadError`` naming it. A benchmark score over a silently shrunken set is wrong.
- ``'skip'`` (for training folders): an unreadable HR or LR file (corrupt, truncated, not an
  image) is left out with a ``SkippedImageWarning`` naming it: one bad file in 3450 should not
  kill a two-day run. Structural mistakes still raise in both modes: a missing or empty folder,
  an HR without LR partner, an LR of the wrong size (these mean a wrong folder or scale).

Training samples. ``PatchDataset[i]`` is a pure function of ``(seed, i)``: image choice, crop
position and augmentation all come from ``np.random.default_rng([seed, i])``-style generators.
A resumed run, any number of DataLoader workers and any DDP rank layout therefore see the same
sample for the same index; ``make_loader`` maps training step ``k`` to fixed indices.

Memory: ``load_pairs`` returns float32 arrays held in RAM (fine for the benchmarks and the
embedded set; DF2K at paper scale would take about 100 GB as float32). For large training
folders build a decoded cache once (``python -m esrgan.data.cache HR_DIR CACHE_DIR``, see
``esrgan.data.cache``): its pairs are memory-mapped uint8 arrays that the OS page cache shares
between DataLoader workers, and ``PatchDataset`` gives bit-identical samples from them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .imresize import imresize
from .io import DataError, ImageReadError, list_images, mod_crop, read_image, to_tensor, write_image

# Part of the LR cache key: change it when make_lr changes, so old caches are not reused.
LR_METHOD = "matlab-bicubic-uint8-v1"


class SkippedImageWarning(UserWarning):
    """An unreadable image was left out of a training folder (``on_error='skip'``)."""


@dataclass(frozen=True, eq=False)
class ImagePair:
    """One image: ``name`` (HR file stem), ``hr`` and ``lr`` HWC RGB arrays.

    Either float32 in [0, 1] (``load_pairs``) or uint8 in 0..255 (the memory-mapped arrays
    of ``esrgan.data.cache.load_cached_pairs``); the datasets below accept both.
    """

    name: str
    hr: np.ndarray
    lr: np.ndarray


def _size(img: np.ndarray) -> str:
    """'WxH' as image tools print it."""
    return f"{img.shape[1]}x{img.shape[0]}"


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of a mod-cropped HR: MATLAB bicubic ``imresize(hr, 1/scale)``, rounded to 8 bits.

    The rounding and clipping reproduce MATLAB's uint8 ``imresize`` (and the LR PNGs of the
    benchmark releases); the result is float32 HWC in [0, 1].
    """
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"make_lr: HR size {w}x{h} is not a multiple of scale {scale}")
    lr = np.asarray(imresize(hr, scale=1.0 / scale))
    return (np.clip(np.round(lr * 255.0), 0, 255) / 255.0).astype(np.float32)


def _cache_path(cache_dir: Path, hr_path: Path, scale: int) -> Path:
    """Cache file for the LR of ``hr_path`` (key: path, byte size, mtime, scale, method)."""
    st = hr_path.stat()
    key = f"{hr_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|x{scale}|{LR_METHOD}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{hr_path.stem}.x{scale}.{digest}.png"


def _lr_from_cache(hr_path: Path, hr: np.ndarray, scale: int, cache_dir: Path | None) -> np.ndarray:
    """``make_lr(hr)``, read from / written to ``cache_dir`` when one is given."""
    if cache_dir is None:
        return make_lr(hr, scale)
    path = _cache_path(cache_dir, hr_path, scale)
    expected = (hr.shape[0] // scale, hr.shape[1] // scale)
    if path.is_file():
        try:
            lr = read_image(path)
            if lr.shape[:2] == expected:
                return lr
            reason = f"size {_size(lr)}, expected {expected[1]}x{expected[0]}"
        except ImageReadError as exc:
            reason = str(exc)
        warnings.warn(f"LR cache file {path} is unusable ({reason}); recomputing", stacklevel=4)
    lr = make_lr(hr, scale)
    write_image(path, lr)
    return lr


def _lr_index(lr_dir: Path) -> dict[str, Path]:
    """LR files of ``lr_dir`` by file stem (two files with one stem would be ambiguous)."""
    index: dict[str, Path] = {}
    for path in list_images(lr_dir):
        if path.stem in index:
            raise DataError(f"ambiguous LR files {index[path.stem]} and {path}: same name stem")
        index[path.stem] = path
    return index


def _read(path: Path, on_error: str) -> np.ndarray | None:
    """read_image, or None with a warning when ``on_error == 'skip'``."""
    try:
        return read_image(path)
    except ImageReadError as exc:
        if on_error == "raise":
            raise
        warnings.warn(f"skipping unreadable image: {exc}", SkippedImageWarning, stacklevel=4)
        return None


def _check_load_args(scale: int, on_error: str) -> None:
    """Raise ValueError for an unknown ``on_error`` or a scale below 1."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")


def _lr_partner(
    hr_path: Path, lr_index: dict[str, Path], lr_dir: str | os.PathLike, scale: int
) -> Path:
    """The LR file of ``hr_path``: ``NAMEx{scale}.*``, else ``NAME.*``; DataError if none."""
    lr_path = lr_index.get(f"{hr_path.stem}x{scale}") or lr_index.get(hr_path.stem)
    if lr_path is None:
        raise DataError(
            f"HR {hr_path} has no LR partner in {lr_dir} "
            f"(looked for {hr_path.stem}x{scale}.* and {hr_path.stem}.*)"
        )
    return lr_path


def _load_pair(
    hr_path: Path, lr_path: Path | None, scale: int, cache: Path | None, on_error: str
) -> ImagePair | None:
    """One pair as ``load_pairs`` makes it; None when a file is skipped (``on_error='skip'``).

    ``lr_path=None`` makes the LR with ``make_lr`` (through the PNG cache ``cache`` if given).
    """
    hr_full = _read(hr_path, on_error)
    if hr_full is None:
        return None
    hr = mod_crop(hr_full, scale)
    if hr.shape[0] == 0 or hr.shape[1] == 0:
        raise DataError(f"HR {hr_path} ({_size(hr_full)}) is smaller than the scale {scale}")
    if lr_path is None:
        lr = _lr_from_cache(hr_path, hr, scale, cache)
    else:
        lr = _read(lr_path, on_error)
        if lr is None:
            return None
        if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
            raise DataError(
                f"LR {lr_path} is {_size(lr)} but HR {hr_path} ({_size(hr_full)}, "
                f"mod-cropped {_size(hr)}) needs {hr.shape[1] // scale}x"
                f"{hr.shape[0] // scale} at scale {scale}"
            )
    return ImagePair(name=hr_path.stem, hr=hr, lr=lr)


def load_pairs(
    hr_dir: str | os.PathLike,
    lr_dir: str | os.PathLike | None = None,
    scale: int = 4,
    cache_dir: str | os.PathLike | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> list[ImagePair]:
    """Load every HR image of ``hr_dir`` with its LR partner (see the module docstring).

    ``lr_dir=None`` makes the LR with ``make_lr`` (cached in ``cache_dir`` if given).
    Returns the pairs sorted by HR file name; raises ``DataError`` (or its subclass
    ``ImageReadError``) with a message naming the offending file(s).
    """
    _check_load_args(scale, on_error)
    hr_files = list_images(hr_dir)
    lr_index = _lr_index(Path(lr_dir)) if lr_dir is not None else None
    cache = Path(cache_dir) if cache_dir is not None else None

    pairs: list[ImagePair] = []
    for hr_path in hr_files:
        lr_path = None
        if lr_index is not None:
            lr_path = _lr_partner(hr_path, lr_index, lr_dir, scale)
        pair = _load_pair(hr_path, lr_path, scale, cache, on_error)
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise DataError(f"no readable images in {hr_dir} (all skipped)")
    return pairs


def pair_files(
    hr_dir: str | os.PathLike, lr_dir: str | os.PathLike | None = None, scale: int = 4
) -> list[tuple[Path, Path | None]]:
    """(HR file, LR partner) of every HR image of ``hr_dir``, paired as ``load_pairs`` does.

    The LR partner is None when ``lr_dir`` is None (``load_pair`` then makes the LR). Reads
    no image, so a caller can check the pairing of a whole folder before any slow work and
    then load one pair at a time with ``load_pair``. Raises ``DataError``.
    """
    _check_load_args(scale, "raise")
    hr_files = list_images(hr_dir)
    if lr_dir is None:
        return [(path, None) for path in hr_files]
    lr_index = _lr_index(Path(lr_dir))
    return [(path, _lr_partner(path, lr_index, lr_dir, scale)) for path in hr_files]


def load_pair(
    hr_path: str | os.PathLike, lr_path: str | os.PathLike | None = None, scale: int = 4,
    cache_dir: str | os.PathLike | None = None,
) -> ImagePair:
    """One pair exactly as ``load_pairs`` makes it (``on_error='raise'``).

    ``lr_path=None`` makes the LR with ``make_lr`` (cached in ``cache_dir`` if given).
    Raises ``DataError`` (or ``ImageReadError``) naming the file.
    """
    _check_load_args(scale, "raise")
    lr = Path(lr_path) if lr_path is not None else None
    cache = Path(cache_dir) if cache_dir is not None else None
    pair = _load_pair(Path(hr_path), lr, scale, cache, "raise")
    assert pair is not None  # on_error='raise' never skips
    return pair


def _check_pair(pair: ImagePair, scale: int) -> None:
    """Raise DataError unless ``pair.lr`` is exactly ``pair.hr`` / scale."""
    h, w = pair.hr.shape[:2]
    if pair.hr.ndim != 3 or pair.lr.ndim != 3 or pair.lr.shape[:2] != (h // scale, w // scale) \
            or h % scale or w % scale:
        raise DataError(
            f"image {pair.name!r}: HR {_size(pair.hr)} and LR {_size(pair.lr)} "
            f"are not a mod-cropped x{scale} pair"
        )


class PatchDataset(Dataset):
    """Aligned random training crops with flip/rotation augmentation.

    ``dataset[i]`` is ``{'lr': (3, p/s, p/s), 'hr': (3, p, p)}`` float32 tensors, a pure
    function of ``(seed, i)``. Images are visited epoch by epoch (sample ``i`` takes image
    ``perm_e[i % n]`` with ``perm_e`` a seeded permutation of epoch ``e = i // n``), the crop
    is uniform over the LR positions (HR crop at ``s`` times the LR corner), and with
    ``augment`` each of horizontal flip, vertical flip and transposition (90-degree rotation)
    is applied with probability 1/2 to both crops, as in the ESRGAN reference code: all eight
    flips/rotations are equally likely. ``length`` is the number of samples (default: one per
    image); a trainer sets it to steps x batch size.

    Pairs may hold float32 arrays in [0, 1] or uint8 arrays (e.g. memory-mapped from a decoded
    cache): uint8 crops become float32 ``/ 255`` exactly as ``read_image`` converts a PNG, so a
    sample is bit-identical whichever kind of pair it comes from.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        patch_size: int,
        scale: int,
        augment: bool = True,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if not pairs:
            raise DataError("PatchDataset: no image pairs")
        if patch_size <= 0 or patch_size % scale:
            raise DataError(
                f"PatchDataset: HR patch size {patch_size} is not a positive multiple of "
                f"scale {scale}"
            )
        if seed < 0 or (length is not None and length < 0):
            raise ValueError(f"PatchDataset: seed and length must be >= 0, got {seed}, {length}")
        for pair in pairs:
            _check_pair(pair, scale)
            if min(pair.hr.shape[:2]) < patch_size:
                raise DataError(
                    f"image {pair.name!r} is {_size(pair.hr)}, smaller than the HR patch "
                    f"{patch_size}x{patch_size}"
                )
        self.pairs = list(pairs)
        self.patch_size = patch_size
        self.scale = scale
        self.augment = augment
        self.seed = seed
        self.length = len(self.pairs) if length is None else length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"PatchDataset index {index} out of range 0..{self.length - 1}")
        n = len(self.pairs)
        epoch, slot = divmod(index, n)
        perm = np.random.default_rng([self.seed, 0, epoch]).permutation(n)
        pair = self.pairs[perm[slot]]
        # Stream 1 (crop, flips) is separate from stream 0 (permutations) by the key prefix.
        rng = np.random.default_rng([self.seed, 1, index])
        lp = self.patch_size // self.scale
        y = int(rng.integers(0, pair.lr.shape[0] - lp + 1))
        x = int(rng.integers(0, pair.lr.shape[1] - lp + 1))
        hflip, vflip, transpose = rng.random(3) < 0.5  # drawn always: crops don't depend on it
        s = self.scale
        lr = pair.lr[y : y + lp, x : x + lp]
        hr = pair.hr[y * s : (y + lp) * s, x * s : (x + lp) * s]
        if self.augment:
            lr, hr = (_augment(a, hflip, vflip, transpose) for a in (lr, hr))
        return {"lr": _to_float_tensor(lr), "hr": _to_float_tensor(hr)}


def _to_float_tensor(img: np.ndarray) -> torch.Tensor:
    """``to_tensor`` of a float [0, 1] image, or of a uint8 image divided by 255."""
    if img.dtype == np.uint8:
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        chw /= 255.0  # the float32 division of read_image: bit-identical to a decoded PNG
        return torch.from_numpy(chw)
    return to_tensor(img)


def _augment(img: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    """Flip left-right, flip up-down, then swap H and W (views; to_tensor copies)."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if transpose:
        img = img.transpose(1, 0, 2)
    return img


class StepSampler(Sampler[int]):
    """Indices for training steps ``start_step .. start_step + num_steps - 1``.

    Step ``k`` on DDP rank ``r`` of ``W`` takes the ``batch_size`` indices starting at
    ``(k * W + r) * batch_size``: a pure function of the step, so a resumed run continues
    exactly where it stopped and ranks never share samples.
    """

    def __init__(
        self, start_step: int, num_steps: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in 0..{world_size - 1}")
        self.start_step, self.num_steps = start_step, num_steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.start_step + self.num_steps):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return self.num_steps * self.batch_size


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    start_step: int = 0,
    num_steps: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose ``j``-th batch is training step ``start_step + j`` (see StepSampler).

    ``num_steps=None`` runs to the end of the dataset (``len(dataset) // (batch_size *
    world_size)`` steps in all). Batches are identical for any ``num_workers``, and a loader
    made with ``start_step=k`` yields exactly the batches a fresh loader yields from step k on.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = len(dataset) // (batch_size * world_size)
    if num_steps is None:
        num_steps = total - start_step
    if start_step < 0 or num_steps < 0 or start_step + num_steps > total:
        raise ValueError(
            f"steps {start_step}..{start_step + num_steps - 1} exceed the dataset: "
            f"{len(dataset)} samples give {total} steps of {batch_size} x {world_size}"
        )
    sampler = StepSampler(start_step, num_steps, batch_size, rank, world_size)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=pin_memory, drop_last=False,
    )


class ValidationDataset(Dataset):
    """Whole images: ``{'name': str, 'lr': (3, h, w), 'hr': (3, h*s, w*s)}`` per pair.

    Float32 tensors in [0, 1] from float32 or uint8 pairs (as in ``PatchDataset``).

    Sizes differ between images, so use it with batch size 1 (or iterate directly).
    """

    def __init__(self, pairs: Sequence[ImagePair]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, object]:
        pair = self.pairs[index]
        return {"name": pair.name, "lr": _to_float_tensor(pair.lr),
                "hr": _to_float_tensor(pair.hr)}

"""Image files in and out: one decoder (Pillow), one in-memory layout.

In memory an image is a ``float32`` numpy array, ``(H, W, 3)`` RGB in ``[0, 1]``; a network
sees a ``(C, H, W)`` float32 tensor (``to_tensor`` / ``to_numpy`` convert).

How ``read_image`` maps file modes:

- 8-bit RGB / gray / palette: divided by 255; gray becomes three equal channels.
- An alpha channel is dropped (not composited): SR benchmarks are opaque photographs.
- 16-bit grayscale PNG keeps its full precision (divided by 65535). 16-bit RGB(A) PNGs are
  decoded by Pillow to 8 bits per channel (the high byte), i.e. within 1/255 of the exact
  value; the training and evaluation pipelines are 8-bit anyway.
- EXIF orientation is ignored, as in every SR benchmark loader.

Every problem with a file (missing, not an image, truncated, unsupported mode) raises
``ImageReadError`` with one line naming the file and the reason. All data errors derive from
``DataError`` (a ``ValueError``) so a caller can catch the family at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from esrgan.files import atomic_write

from .png import write_png

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)


class DataError(ValueError):
    """Bad data: a missing folder, unpaired or mis-sized images, an image too small to crop."""


class ImageReadError(DataError):
    """A file that cannot be read as an image (missing, corrupt, truncated, not an image)."""


class ImageModeError(Exception):
    """Internal: a Pillow mode read_image does not handle (re-raised as ImageReadError)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 ``(H, W, 3)`` RGB in ``[0, 1]`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()  # Image.open is lazy: truncation only shows up on load()
            arr = _pil_to_float(im)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise ImageReadError(f"{path}: not a readable image ({reason})") from exc
    except ImageModeError as exc:
        raise ImageReadError(f"{path}: {exc}") from exc
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image ({arr.shape[1]}x{arr.shape[0]})")
    return arr


def _pil_to_float(im: Image.Image) -> np.ndarray:
    """A loaded Pillow image as float32 HWC RGB in [0, 1]."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I"):
        # 16-bit grayscale PNG (Pillow opens it as I;16 or I): keep all 16 bits.
        gray = np.asarray(im, dtype=np.float64)
        if gray.min() < 0 or gray.max() > 65535:
            raise ImageModeError(f"integer image with values outside 0..65535 (mode {mode})")
        gray = (gray / 65535.0).astype(np.float32)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("1", "L", "LA"):
        gray = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    raise ImageModeError(f"unsupported image mode {mode!r}")


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an image (HWC RGB or HW gray) as an 8-bit PNG.

    ``img`` is float in [0, 1] (rounded to the nearest grey level and clipped) or uint8
    (written as is). Parent folders are created, and the file is written under a temporary
    name and renamed (``esrgan.files.atomic_write``), so a killed process never leaves a
    half-written PNG (this matters for the LR cache); a full disk raises ``NoSpaceError``.
    """
    path = Path(path)
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"write_image({path}): expected HxW or HxWx3, got shape {img.shape}")
    if img.dtype == np.uint8:
        u8 = img
    elif np.issubdtype(img.dtype, np.floating):
        if np.isnan(img).any():
            raise ValueError(f"write_image({path}): image contains NaN")
        u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ValueError(
            f"write_image({path}): expected a float image in [0, 1] or uint8, got {img.dtype}")
    atomic_write(path, lambda f: write_png(f, u8), what="the image")


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale`` (benchmark custom)."""
    if scale < 1:
        raise ValueError(f"mod_crop: scale must be >= 1, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC numpy image -> contiguous ``(C, H, W)`` float32 tensor."""
    if img.ndim != 3:
        raise ValueError(f"to_tensor: expected an HxWxC array, got shape {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` (or ``(1, C, H, W)``) tensor -> HWC float32 numpy array."""
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"to_numpy: expected a CxHxW tensor, got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.detach().cpu().float().numpy().transpose(1, 2, 0))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (by extension, case-insensitive) directly in ``folder``, sorted by name.

    Hidden files (name starting with '.', e.g. macOS ``._x.png`` forks) are not images.

    Raises ``DataError`` if the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"image folder {folder} {what}")
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return files


def images_by_stem(folder: str | os.PathLike, kind: str) -> dict[str, Path]:
    """Every image of ``folder`` by its name without extension (``list_images``).

    Two files of one name (``cat.png`` and ``cat.jpg``) are one image given twice: a
    ``DataError`` naming both, since pairing and scoring go by name.
    """
    by_stem: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in by_stem:
            raise DataError(f"{kind} files {by_stem[path.stem].name} and {path.name} in "
                            f"{folder} have the same name")
        by_stem[path.stem] = path
    return by_stem

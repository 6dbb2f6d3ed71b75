"""A streaming 8-bit PNG encoder for uint8 arrays (RGB or grey).

Why not Pillow: ``Image.fromarray`` copies an RGB array into Pillow's own 4-bytes-per-pixel
storage before encoding, so saving a large upscaled image needs 2.3x its uint8 size on top of
the array. This encoder filters and compresses a few rows at a time straight from the array
(memory: the array plus about a megabyte per strip of rows).

The filter of each row is chosen as Pillow (and libpng) do: the one of Sub, Up and Paeth with
the smallest sum of absolute values (as signed bytes); zlib level 6. Files decode to exactly
the array; their size is within a few percent of Pillow's.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STRIP_BYTES = 1 << 20  # raw bytes filtered at a time
_IDAT_BYTES = 1 << 16  # compressed bytes per IDAT chunk (at most)


def _chunk(f: BinaryIO, tag: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + tag)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF))


def _filter_rows(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """Filter byte + filtered bytes of each row (``rows``: (n, L) uint8; ``above``: (L,))."""
    x = rows.astype(np.int16)
    up = np.empty_like(x)
    up[0] = above
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = up[:, :-bpp]
    # Paeth predictor (PNG spec 9.4): the neighbour closest to left + up - up_left.
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    candidates = np.stack([x - left, x - up, x - paeth]).astype(np.uint8)  # mod 256
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    best = cost.argmin(axis=0)  # ties: the first, as Pillow
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = np.array([1, 2, 4], np.uint8)[best]  # PNG filter types Sub, Up, Paeth
    out[:, 1:] = candidates[best, np.arange(rows.shape[0])]
    return out


def write_png(f: BinaryIO, img: np.ndarray, level: int = 6) -> None:
    """Encode a uint8 ``(H, W, 3)`` RGB or ``(H, W)`` grey array as PNG into the file ``f``."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"write_png: expected uint8 HxW or HxWx3, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"write_png: empty image ({w}x{h})")
    bpp = 1 if img.ndim == 2 else 3
    color_type = 0 if bpp == 1 else 2
    f.write(_SIGNATURE)
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    rows = img.reshape(h, w * bpp)
    strip = max(1, _STRIP_BYTES // (w * bpp))
    z = zlib.compressobj(level)
    pending = bytearray()
    above = np.zeros(w * bpp, np.uint8)
    for y in range(0, h, strip):
        block = rows[y:y + strip]
        pending += z.compress(_filter_rows(block, above, bpp).tobytes())
        above = block[-1]
        while len(pending) >= _IDAT_BYTES:
            _chunk(f, b"IDAT", bytes(pending[:_IDAT_BYTES]))
            del pending[:_IDAT_BYTES]
    pending += z.flush()
    for start in range(0, len(pending), _IDAT_BYTES):
        _chunk(f, b"IDAT", bytes(pending[start:start + _IDAT_BYTES]))
    _chunk(f, b"IEND", b"")

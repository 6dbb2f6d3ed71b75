"""Data: image I/O, MATLAB-exact bicubic resize, paired datasets, patches, the embedded set.

The decoded training cache (``build_cache``, ``load_cached_pairs``, ``load_training_pairs``,
``is_cache``) lives in ``esrgan.data.cache`` and is imported from there on first use, so that
``python -m esrgan.data.cache`` does not find its own module already imported.
"""

from __future__ import annotations

from typing import Any

from .datasets import (
    LR_METHOD,
    ImagePair,
    PatchDataset,
    SkippedImageWarning,
    StepSampler,
    ValidationDataset,
    load_pairs,
    make_loader,
    make_lr,
)
from .embedded import EMBEDDED_IMAGES, EMBEDDED_SPLIT, embedded_image, embedded_pairs
from .imresize import imresize
from .io import (
    IMAGE_EXTENSIONS,
    DataError,
    ImageReadError,
    list_images,
    mod_crop,
    read_image,
    to_numpy,
    to_tensor,
    write_image,
)

_CACHE_NAMES = ("build_cache", "is_cache", "load_cached_pairs", "load_training_pairs")


def __getattr__(name: str) -> Any:
    """The cache functions, imported lazily (see the module docstring)."""
    if name in _CACHE_NAMES:
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EMBEDDED_IMAGES",
    "EMBEDDED_SPLIT",
    "IMAGE_EXTENSIONS",
    "LR_METHOD",
    "DataError",
    "ImagePair",
    "ImageReadError",
    "PatchDataset",
    "SkippedImageWarning",
    "StepSampler",
    "ValidationDataset",
    "build_cache",
    "embedded_image",
    "embedded_pairs",
    "imresize",
    "is_cache",
    "list_images",
    "load_cached_pairs",
    "load_pairs",
    "load_training_pairs",
    "make_loader",
    "make_lr",
    "mod_crop",
    "read_image",
    "to_numpy",
    "to_tensor",
    "write_image",
]

"""Data: image I/O, MATLAB-exact bicubic resize, paired datasets, patches, the embedded set."""

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
    "embedded_image",
    "embedded_pairs",
    "imresize",
    "list_images",
    "load_pairs",
    "make_loader",
    "make_lr",
    "mod_crop",
    "read_image",
    "to_numpy",
    "to_tensor",
    "write_image",
]

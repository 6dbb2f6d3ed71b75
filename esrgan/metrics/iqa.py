"""Bridge to pyiqa for the learned metrics: Ma et al.'s NRQM ("Ma") and LPIPS.

pyiqa downloads missing weight files on first use; clusters have no internet, so this bridge
never lets it: it looks for the files itself and raises :class:`MetricUnavailable` (naming the
file and the folders searched) when one is missing. Files used (pyiqa 0.1.16 names):

- Ma / NRQM: ``NRQM_model.mat`` (pyiqa's weights repository, HuggingFace
  ``chaofengc/IQA-PyTorch-Weights``).
- LPIPS (v0.1, AlexNet): ``LPIPS_v0.1_alex-df73285e.pth`` from the same repository, plus
  torchvision's ImageNet AlexNet ``alexnet-owt-7be5be79.pth``, which torchvision itself reads
  from ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``).

pyiqa's own files are looked up, in order, in the ``weights_dir`` argument, the folder named by
the environment variable ``ESRGAN_IQA_WEIGHTS``, and pyiqa's cache
``<torch hub dir>/pyiqa`` (``~/.cache/torch/hub/pyiqa`` by default), where pyiqa would have
put them. pyiqa itself is imported only when a metric is computed (it takes seconds).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ALEXNET_FILE",
    "IQA_WEIGHTS_ENV",
    "LPIPS_FILE",
    "NRQM_FILE",
    "MetricUnavailable",
    "find_iqa_file",
    "iqa_search_dirs",
    "lpips",
    "ma",
]

IQA_WEIGHTS_ENV = "ESRGAN_IQA_WEIGHTS"
NRQM_FILE = "NRQM_model.mat"
LPIPS_FILE = "LPIPS_v0.1_alex-df73285e.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_SOURCE = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights"
_ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class MetricUnavailable(RuntimeError):
    """A metric whose weight file is not on disk (nothing is downloaded at run time)."""


def iqa_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for pyiqa weight files, in order (see the module docstring)."""
    dirs = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    if os.environ.get(IQA_WEIGHTS_ENV):
        dirs.append(Path(os.environ[IQA_WEIGHTS_ENV]))
    # pyiqa's DEFAULT_CACHE_DIR, computed without importing pyiqa.
    dirs.append(Path(torch.hub.get_dir()) / "pyiqa")
    return dirs


def find_iqa_file(
    file_name: str, metric: str, weights_dir: str | os.PathLike | None = None
) -> Path:
    """Path of a pyiqa weight file, or MetricUnavailable naming the file and where to put it."""
    dirs = iqa_search_dirs(weights_dir)
    for folder in dirs:
        if (folder / file_name).is_file():
            return folder / file_name
    searched = ", ".join(str(d) for d in dirs)
    raise MetricUnavailable(
        f"{metric} needs the weight file {file_name} (from {_SOURCE}), not found in: {searched}; "
        f"put it in one of these folders or set {IQA_WEIGHTS_ENV} to its folder "
        f"(nothing is downloaded at run time)"
    )


def _alexnet_file() -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if not path.is_file():
        raise MetricUnavailable(
            f"LPIPS needs torchvision's ImageNet AlexNet weights {ALEXNET_FILE} "
            f"({_ALEXNET_URL}) at {path} (torchvision reads it there; set TORCH_HOME to move it); "
            f"nothing is downloaded at run time"
        )
    return path


def _to_batch(img: np.ndarray, crop_border: int) -> torch.Tensor:
    """HWC [0, 1] numpy image -> (1, 3, H, W) float64 tensor, borders cropped."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float64))[None]


@lru_cache(maxsize=2)
def _nrqm_model(path: str) -> torch.nn.Module:
    from pyiqa.archs.nrqm_arch import NRQM

    # Y of MATLAB rgb2ycbcr as PIRM's evaluation code does; the border crop is ours.
    return NRQM(test_y_channel=True, color_space="ycbcr", crop_border=0, pretrained_model_path=path)


def ma(
    img: np.ndarray, crop_border: int = 0, weights_dir: str | os.PathLike | None = None
) -> float:
    """Ma et al. (2017) NRQM score of an HWC RGB [0, 1] image (higher is better), via pyiqa.

    Computed on MATLAB YCbCr luma, ``crop_border`` pixels removed from each side.
    Raises MetricUnavailable when ``NRQM_model.mat`` is not on disk.
    """
    model = _nrqm_model(str(find_iqa_file(NRQM_FILE, "Ma (NRQM)", weights_dir)))
    with torch.no_grad():
        return float(model(_to_batch(img, crop_border)))


@lru_cache(maxsize=2)
def _lpips_model(path: str) -> torch.nn.Module:
    from pyiqa.archs.lpips_arch import LPIPS

    # pretrained=False: we load the linear layers ourselves with weights_only=True (pyiqa
    # would unpickle them). The AlexNet trunk is loaded by torchvision from its cache.
    model = LPIPS(pretrained=False, net="alex", version="0.1")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise MetricUnavailable(f"{path}: cannot be read as LPIPS weights ({exc})") from exc
    if not isinstance(state, dict):
        raise MetricUnavailable(f"{path}: not a state dict of LPIPS weights")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The five linear heads are registered twice (lin<i> and lins.<i>): either name will do.
    have = {re.sub(r"^lins\.(\d)", r"lin\1", k) for k in state}
    missing = [f"lin{i}.model.1.weight" for i in range(5) if f"lin{i}.model.1.weight" not in have]
    if missing:
        raise MetricUnavailable(f"{path}: not LPIPS v0.1 AlexNet weights (no {missing[0]})")
    try:
        model.load_state_dict(state, strict=False)  # the AlexNet trunk is not in this file
    except RuntimeError as exc:  # shape mismatch
        raise MetricUnavailable(f"{path}: not LPIPS v0.1 AlexNet weights ({exc})") from exc
    return model.eval()


def lpips(
    sr: np.ndarray,
    hr: np.ndarray,
    crop_border: int = 0,
    weights_dir: str | os.PathLike | None = None,
) -> float:
    """LPIPS v0.1 (AlexNet) distance between HWC RGB [0, 1] images (lower is better), via pyiqa.

    Raises MetricUnavailable when its weight files are not on disk.
    """
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"SR and HR shapes differ: {np.shape(sr)} vs {np.shape(hr)}")
    path = find_iqa_file(LPIPS_FILE, "LPIPS", weights_dir)
    _alexnet_file()
    model = _lpips_model(str(path))
    with torch.no_grad():
        a = _to_batch(sr, crop_border).float()
        b = _to_batch(hr, crop_border).float()
        return float(model(a, b, normalize=True).reshape(-1)[0])

"""The learned metrics: Ma et al.'s NRQM ("Ma", via pyiqa), LPIPS and DISTS (pyiqa's networks).

pyiqa downloads missing weight files on first use; clusters have no internet, so this module
never lets it: it looks for the files itself and raises :class:`MetricUnavailable` (naming the
file and the folders searched) when one is missing. ``make weights`` (``python -m
esrgan.downloads fetch``) fetches them on a connected machine; the table of files, URLs and
hashes is ``esrgan.downloads.WEIGHT_FILES``. Files used (pyiqa 0.1.16 names):

- Ma / NRQM: ``NRQM_model.mat`` (pyiqa's weights repository, HuggingFace
  ``chaofengc/IQA-PyTorch-Weights``), read by pyiqa with ``scipy.io.loadmat`` (MATLAB data:
  no code runs on loading).
- LPIPS (v0.1, AlexNet): ``LPIPS_v0.1_alex-df73285e.pth`` from the same repository, plus
  torchvision's ImageNet AlexNet ``alexnet-owt-7be5be79.pth`` in torchvision's cache
  ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``). Both are read here
  through ``esrgan.weights.load_checkpoint`` (``weights_only=True``, or safetensors): pyiqa's
  ``LPIPS`` would have torchvision unpickle the AlexNet file with ``weights_only=False``
  (a planted file there would run its code), and it builds the AlexNet trunk with the
  ImageNet weights whatever its ``pnet_rand`` says. So the network is built here: the same
  layers as pyiqa's ``LPIPS(net='alex', version='0.1')`` (torchvision's AlexNet ``features``
  cut into pyiqa's five slices, pyiqa's input scaling and linear heads) and the same score.
  An unreadable or unsafe file makes the metric unavailable with one line naming it.
- DISTS (Ding et al. 2020): ``DISTS_weights-f5e65c96.pth`` (its alpha and beta) from the same
  repository, plus torchvision's ImageNet VGG16 ``vgg16-397923af.pth`` in torchvision's cache;
  rebuilt here the same way as LPIPS (pyiqa's ``DISTS``: VGG16 ``features`` up to conv5_3
  with its max-pools replaced by L2 pooling, images in [0, 1], no resizing).

pyiqa's own files are looked up, in order, in the ``weights_dir`` argument, the folder named by
the environment variable ``ESRGAN_IQA_WEIGHTS``, and pyiqa's cache
``<torch hub dir>/pyiqa`` (``~/.cache/torch/hub/pyiqa`` by default), where pyiqa would have
put them. A file found in the two caches (and torchvision's files) must hash as published
(``esrgan.downloads.verified``); a ``weights_dir`` given explicitly is the caller's choice.
pyiqa itself is imported only when Ma is computed (it takes seconds).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esrgan.archs.vgg import IMAGENET_MEAN, IMAGENET_STD
from esrgan.downloads import IQA_WEIGHTS_ENV, WEIGHT_FILES, UnverifiedWeights, verified
from esrgan.weights import CheckpointError, load_checkpoint, load_into

__all__ = [
    "ALEXNET_FILE",
    "DISTS_FILE",
    "IQA_WEIGHTS_ENV",
    "LPIPS_FILE",
    "NRQM_FILE",
    "VGG16_FILE",
    "MetricUnavailable",
    "dists",
    "find_iqa_file",
    "iqa_search_dirs",
    "lpips",
    "ma",
]

NRQM_FILE = "NRQM_model.mat"
LPIPS_FILE = "LPIPS_v0.1_alex-df73285e.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
DISTS_FILE = "DISTS_weights-f5e65c96.pth"
VGG16_FILE = "vgg16-397923af.pth"
_SOURCE = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights"


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
    for index, folder in enumerate(dirs):
        if (folder / file_name).is_file():
            explicit = weights_dir is not None and index == 0
            return folder / file_name if explicit else _checked(folder / file_name, metric)
    searched = ", ".join(str(d) for d in dirs)
    raise MetricUnavailable(
        f"{metric} needs the weight file {file_name} (from {_SOURCE}), not found in: {searched}; "
        f"put it in one of these folders or set {IQA_WEIGHTS_ENV} to its folder, or run "
        f"`make weights` on a connected machine (nothing is downloaded at run time)"
    )


def _checked(path: Path, metric: str) -> Path:
    """``path`` once its hash is the published one; MetricUnavailable (one line) if not."""
    try:
        return verified(path)
    except UnverifiedWeights as exc:
        raise MetricUnavailable(f"{metric}: {exc}") from None


def _torchvision_file(file_name: str, metric: str, what: str) -> Path:
    """A torchvision ImageNet file in torchvision's cache, verified; MetricUnavailable if not."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not path.is_file():
        raise MetricUnavailable(
            f"{metric} needs torchvision's ImageNet {what} weights {file_name} "
            f"({WEIGHT_FILES[file_name].url}) at {path} (torchvision's cache; set TORCH_HOME to "
            f"move it; `make weights` fetches it); nothing is downloaded at run time"
        )
    return _checked(path, metric)


def _alexnet_file() -> Path:
    return _torchvision_file(ALEXNET_FILE, "LPIPS", "AlexNet")


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


# torchvision's AlexNet ``features`` (up to the last ReLU) and pyiqa's five LPIPS slices of
# it (``features`` indices [0, 2), [2, 5), [5, 8), [8, 10), [10, 12)).
_ALEX_CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1),
               8: (384, 256, 3, 1, 1), 10: (256, 256, 3, 1, 1)}
_ALEX_POOLS = (2, 5)
_ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)
# pyiqa's ScalingLayer for inputs in [-1, 1] (LPIPS v0.1).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features[:12]``, allocated without initialising weights."""
    layers: list[nn.Module] = []
    for index in range(12):
        if index in _ALEX_CONVS:
            cin, cout, k, stride, pad = _ALEX_CONVS[index]
            layers.append(nn.utils.skip_init(nn.Conv2d, cin, cout, k, stride=stride,
                                             padding=pad))
        elif index in _ALEX_POOLS:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        else:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _LPIPSAlex(nn.Module):
    """pyiqa's ``LPIPS(net='alex', version='0.1')`` forward pass, built without any file.

    The AlexNet layers keep torchvision's ``features.{i}`` names (so its file loads with the
    usual key and shape checks); the heads keep pyiqa's ``lin{i}.model.1`` names.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        for i, channels in enumerate(_LPIPS_CHANNELS):
            head = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))
            self.add_module(f"lin{i}", nn.Module())
            getattr(self, f"lin{i}").model = head
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), False)
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for start, stop in _ALEX_SLICES:
            for index in range(start, stop):
                x = self.features[index](x)
            out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS of images in [0, 1], (N, 3, H, W) each; returns (N,)."""
        feats = [self._features(((2 * x - 1) - self.shift) / self.scale) for x in (a, b)]
        total = 0
        for i, (fa, fb) in enumerate(zip(*feats, strict=True)):
            fa = fa / (torch.sqrt(torch.sum(fa**2, dim=1, keepdim=True)) + 1e-10)
            fb = fb / (torch.sqrt(torch.sum(fb**2, dim=1, keepdim=True)) + 1e-10)
            total = total + getattr(self, f"lin{i}").model((fa - fb) ** 2).mean([2, 3])
        return total.reshape(-1)


def _read(path: Path, metric: str = "LPIPS") -> dict:
    """``load_checkpoint`` of a weight file; MetricUnavailable (one line) if unusable."""
    try:
        obj = load_checkpoint(path)
    except CheckpointError as exc:  # unsafe, truncated, not a weights file
        raise MetricUnavailable(f"{metric}: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MetricUnavailable(f"{metric}: {path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@lru_cache(maxsize=2)
def _lpips_model(path: str, alexnet_path: str) -> nn.Module:
    model = _LPIPSAlex()
    heads = nn.Module()  # the heads under their names in pyiqa's file, lin<i>.model.1.weight
    for i in range(len(_LPIPS_CHANNELS)):
        heads.add_module(f"lin{i}", getattr(model, f"lin{i}"))
    trunk = nn.Module()  # the AlexNet layers under torchvision's names, features.<i>.*
    trunk.features = model.features
    state = _read(Path(path))
    # pyiqa registers the heads twice (lin<i> and lins.<i>): either name will do.
    state = {re.sub(r"^lins\.(\d)", r"lin\1", k): v for k, v in state.items()}
    alexnet = _read(Path(alexnet_path))
    try:
        # The LPIPS file may hold more (pyiqa keeps the trunk out of it); torchvision's file
        # has the classifier too: each gives the layers built from it, checked key by key.
        load_into(heads, {k: state[k] for k in heads.state_dict() if k in state},
                  f"LPIPS: {path}")
        load_into(trunk, {k: alexnet[k] for k in trunk.state_dict() if k in alexnet},
                  f"LPIPS: {alexnet_path}")
    except CheckpointError as exc:
        raise MetricUnavailable(f"{exc} (not LPIPS v0.1 AlexNet weights)") from None
    return model.eval()


def _distance(model: nn.Module, sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """A full-reference network's score of one image pair (HWC RGB in [0, 1])."""
    with torch.no_grad():
        return float(model(_to_batch(sr, crop_border).float(),
                           _to_batch(hr, crop_border).float())[0])


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
    return _distance(_lpips_model(str(path), str(_alexnet_file())), sr, hr, crop_border)


# torchvision's VGG16 ``features`` up to conv5_3's ReLU (index 29): conv widths, 'M' = pool.
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                     512, 512, 512, "M", 512, 512, 512)
# pyiqa's DISTS stages: ``features`` index ranges; each pool (4, 9, 16, 23) becomes L2 pooling.
_DISTS_STAGES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)


class _L2Pool(nn.Module):
    """pyiqa's ``L2pooling``: sqrt of a 3x3 Hann-weighted mean of squares, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("filter", (g / g.sum())[None, None].repeat(channels, 1, 1, 1),
                             False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def _vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features[:30]`` with L2 pooling, allocated without init."""
    layers: list[nn.Module] = []
    cin = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(_L2Pool(cin))
        else:
            layers += [nn.utils.skip_init(nn.Conv2d, cin, int(item), 3, padding=1),
                       nn.ReLU(inplace=True)]
            cin = int(item)
    return nn.Sequential(*layers)


class _DISTS(nn.Module):
    """pyiqa's ``DISTS`` forward pass, built without any file (see the module docstring).

    The VGG16 layers keep torchvision's ``features.{i}`` names; ``alpha`` and ``beta`` are
    those of the DISTS file, shape (1, 1475, 1, 1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.alpha = nn.Parameter(torch.zeros(1, sum(_DISTS_CHANNELS), 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, sum(_DISTS_CHANNELS), 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        h = (x - self.mean) / self.std
        for start, stop in _DISTS_STAGES:
            for index in range(start, stop):
                h = self.features[index](h)
            out.append(h)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """DISTS of images in [0, 1], (N, 3, H, W) each; returns (N,)."""
        fa, fb = self._features(a), self._features(b)
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, _DISTS_CHANNELS, dim=1)
        beta = torch.split(self.beta / w_sum, _DISTS_CHANNELS, dim=1)
        c1 = c2 = 1e-6
        dist1 = dist2 = 0
        for k in range(len(_DISTS_CHANNELS)):
            x_mean = fa[k].mean([2, 3], keepdim=True)
            y_mean = fb[k].mean([2, 3], keepdim=True)
            s1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
            dist1 = dist1 + (alpha[k] * s1).sum(1, keepdim=True)
            x_var = ((fa[k] - x_mean) ** 2).mean([2, 3], keepdim=True)
            y_var = ((fb[k] - y_mean) ** 2).mean([2, 3], keepdim=True)
            xy_cov = (fa[k] * fb[k]).mean([2, 3], keepdim=True) - x_mean * y_mean
            s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
            dist2 = dist2 + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).reshape(-1)


@lru_cache(maxsize=2)
def _dists_model(path: str, vgg16_path: str) -> nn.Module:
    model = _DISTS()
    weights = {k.removeprefix("module."): v for k, v in _read(Path(path), "DISTS").items()}
    vgg16 = _read(Path(vgg16_path), "DISTS")
    trunk = nn.Module()  # the VGG16 layers under torchvision's names, features.<i>.*
    trunk.features = model.features
    heads = nn.Module()
    heads.alpha, heads.beta = model.alpha, model.beta
    try:
        load_into(heads, {k: weights[k] for k in ("alpha", "beta") if k in weights},
                  f"DISTS: {path}")
        load_into(trunk, {k: vgg16[k] for k in trunk.state_dict() if k in vgg16},
                  f"DISTS: {vgg16_path}")
    except CheckpointError as exc:
        raise MetricUnavailable(f"{exc} (not DISTS / VGG16 weights)") from None
    return model.eval()


def dists(
    sr: np.ndarray,
    hr: np.ndarray,
    crop_border: int = 0,
    weights_dir: str | os.PathLike | None = None,
) -> float:
    """DISTS (Ding et al. 2020) between HWC RGB [0, 1] images (lower is better), pyiqa's network.

    Raises MetricUnavailable when its weight files are not on disk.
    """
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"SR and HR shapes differ: {np.shape(sr)} vs {np.shape(hr)}")
    path = find_iqa_file(DISTS_FILE, "DISTS", weights_dir)
    model = _dists_model(str(path), str(_torchvision_file(VGG16_FILE, "DISTS", "VGG16")))
    return _distance(model, sr, hr, crop_border)

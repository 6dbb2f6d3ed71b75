"""MATLAB bicubic imresize: against MATLAB-made LR files, and numpy/torch agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrgan.data.imresize import cubic, imresize, resize_weights
from esrgan.data.io import mod_crop, read_image


def _matlab_uint8(img: np.ndarray) -> np.ndarray:
    """What MATLAB returns for uint8 input: round half away from zero, clip to 0..255."""
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255)


@pytest.mark.parametrize("dataset", ["Set5", "Set14", "BSD100"])
def test_downscale_reproduces_matlab_lr_files(shared_dir, dataset):
    root = shared_dir / "data" / dataset
    total = count = off = 0
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = mod_crop(read_image(hr_path), 4)
        lr = read_image(root / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png") * 255.0
        out = _matlab_uint8(imresize(hr, scale=0.25))
        assert out.shape == lr.shape, hr_path.name
        diff = np.abs(out - np.round(lr))
        total += diff.sum()
        count += diff.size
        off += (diff > 1).sum()
    assert total / count <= 0.15, f"{dataset}: mean |diff| {total / count:.4f} grey levels"
    assert off / count <= 0.005, f"{dataset}: {100 * off / count:.3f}% of pixels off by > 1"


def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    expected = np.array([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])
    np.testing.assert_allclose(cubic(x), expected, atol=1e-12)


def test_weights_are_normalised_and_mirrored():
    idx, w = resize_weights(10, 3, 0.3, antialiasing=True)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() <= 9
    # x4 upscale of 4 pixels: the first output sits at input position 0.625 (1-based), its
    # taps are 1-based -1, 0, 1, 2; MATLAB mirrors -1 -> 2 and 0 -> 1 (0-based: 1, 0, 0, 1).
    idx_up, w_up = resize_weights(4, 16, 4.0)
    assert idx_up.shape == (16, 4)
    assert idx_up[0].tolist() == [1, 0, 0, 1]
    np.testing.assert_allclose(w_up[0], [-0.0439453125, 0.3896484375, 0.7275390625, -0.0732421875])


def test_output_size_is_ceil_of_scale_times_input():
    img = np.random.default_rng(0).random((361, 250, 3))
    assert imresize(img, scale=0.25).shape == (91, 63, 3)
    assert imresize(img, output_size=(100, 40)).shape == (100, 40, 3)
    assert imresize(img[..., 0], scale=0.5).shape == (181, 125)


def test_constant_and_linear_images_are_preserved():
    const = np.full((20, 24, 3), 0.37)
    np.testing.assert_allclose(imresize(const, scale=0.25), 0.37, atol=1e-12)
    np.testing.assert_allclose(imresize(const, scale=3), 0.37, atol=1e-12)
    # Cubic convolution reproduces linear functions away from the mirrored border.
    ramp = np.tile(np.arange(32, dtype=np.float64), (8, 1))
    up = imresize(ramp, scale=2)
    x = (np.arange(64) + 0.5) / 2 - 0.5  # output pixel centres in input coordinates
    np.testing.assert_allclose(up[:, 4:-4], np.tile(x[4:-4], (16, 1)), atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0.25}, {"scale": 4}, {"scale": 0.37}, {"output_size": (13, 29)}],
)
def test_torch_path_matches_numpy_path(kwargs):
    img = np.random.default_rng(1).random((24, 20, 3))
    ref = imresize(img, **kwargs)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    out = imresize(t, **kwargs)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy().transpose(1, 2, 0), ref, atol=1e-12)
    batch = imresize(torch.stack([t, 2 * t]).float(), **kwargs)
    assert batch.dtype == torch.float32 and batch.shape[:2] == (2, 3)
    np.testing.assert_allclose(batch[1].numpy().transpose(1, 2, 0), 2 * ref, atol=1e-5)


def test_torch_path_is_differentiable():
    x = torch.rand(1, 2, 9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=0.5), (x,))
    y = imresize(x, scale=2)
    y.sum().backward()
    # Weights sum to one per output pixel, so d(sum)/dx sums to the number of outputs per plane.
    assert x.grad is not None
    assert abs(x.grad.sum().item() - y.numel()) < 1e-8


def test_dtypes():
    img = np.random.default_rng(2).random((16, 16, 3)).astype(np.float32)
    assert imresize(img, scale=0.5).dtype == np.float32
    u8 = (img * 255).astype(np.uint8)
    out = imresize(u8, scale=0.5)
    assert out.dtype == np.float64 and out.max() > 1.0  # no rescaling, no rounding


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="numpy input"):
        imresize(np.zeros((2, 8, 8, 3)), scale=0.5)
    with pytest.raises(ValueError, match="torch input"):
        imresize(torch.zeros(8, 8), scale=0.5)
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        imresize([[0.0]], scale=2)

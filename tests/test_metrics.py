"""Metrics against the field's reference numbers, pyiqa, and the offline behaviour."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from esrgan.backprojection import back_project
from esrgan.data.imresize import imresize
from esrgan.data.io import mod_crop, read_image, write_image
from esrgan.downloads import VERIFY_ENV
from esrgan.metrics import (
    METRICS,
    MetricInputError,
    MetricNameError,
    MetricUnavailable,
    evaluate_images,
    lpips,
    ma,
    niqe,
    perceptual_index,
    pi,
    pooled_rmse,
    psnr,
    quantize,
    rgb2y,
    rgb2ycbcr,
    rmse,
    ssim,
    summarize,
)
from esrgan.metrics.iqa import ALEXNET_FILE, IQA_WEIGHTS_ENV, LPIPS_FILE, NRQM_FILE
from esrgan.metrics.niqe import pristine_model
from esrgan.metrics.pirm import pirm_region

REPO_ROOT = Path(__file__).resolve().parents[1]

# HR -> MATLAB bicubic x1/4 (uint8) -> x4 (uint8), Y, crop 4: (PSNR dB, SSIM).
BICUBIC_X4 = {"Set5": (28.431, 0.8113), "Set14": (26.092, 0.7050), "BSD100": (25.963, 0.6682)}


def _bicubic_pairs(shared_dir, dataset):
    """(name, SR, HR): the bicubic baseline as MATLAB makes it from uint8 files."""
    for hr_path in sorted((shared_dir / "data" / dataset / "HR").glob("*.png")):
        hr = mod_crop(read_image(hr_path), 4)
        lr = quantize(imresize(hr, scale=0.25))  # MATLAB rounds: its input is uint8
        yield hr_path.stem, quantize(imresize(lr, scale=4)), hr


# ---------------------------------------------------------------- colour


def test_rgb2ycbcr_is_matlab_bt601():
    white, black = np.ones((1, 1, 3)), np.zeros((1, 1, 3))
    assert rgb2y(white)[0, 0] == pytest.approx(235 / 255)
    assert rgb2y(black)[0, 0] == pytest.approx(16 / 255)
    grey = rgb2ycbcr(np.full((2, 2, 3), 0.5))
    np.testing.assert_allclose(grey[..., 1:], 128 / 255, atol=1e-12)
    red = rgb2ycbcr(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] * 255
    np.testing.assert_allclose(red, [16 + 65.481, 128 - 37.797, 128 + 112.0], atol=1e-9)


# ---------------------------------------------------------------- PSNR / SSIM


def test_psnr_of_known_error():
    rng = np.random.default_rng(0)
    hr = rng.uniform(0.2, 0.8, (20, 20, 3))
    assert psnr(hr, hr, 0) == math.inf
    # One grey level everywhere in RGB: MSE = 1, PSNR = 20 log10(255).
    assert psnr(hr + 1 / 255, hr, 2, y_channel=False) == pytest.approx(20 * math.log10(255))
    # On Y the same shift is scaled by (65.481 + 128.553 + 24.966) / 255.
    assert psnr(hr + 1 / 255, hr, 2) == pytest.approx(20 * math.log10(255 / (219 / 255)))
    assert rmse(hr + 1 / 255, hr, 2) == pytest.approx(219 / 255)


def test_psnr_ssim_input_errors():
    a = np.zeros((30, 30, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, np.zeros((30, 31, 3)), 4)
    with pytest.raises(ValueError, match="too small"):
        ssim(a, a, 15)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a, a, 10)
    assert ssim(a + 0.1, a + 0.1, 4) == pytest.approx(1.0)


@pytest.mark.parametrize("dataset", ["Set5", "Set14", "BSD100"])
def test_bicubic_baseline_reproduces_reference_numbers(shared_dir, dataset):
    pairs = _bicubic_pairs(shared_dir, dataset)
    scores = [(psnr(sr, hr, 4), ssim(sr, hr, 4)) for _, sr, hr in pairs]
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    ref_psnr, ref_ssim = BICUBIC_X4[dataset]
    assert abs(mean_psnr - ref_psnr) <= 0.005, f"{dataset} PSNR-Y {mean_psnr:.4f}"
    assert abs(mean_ssim - ref_ssim) <= 0.0005, f"{dataset} SSIM-Y {mean_ssim:.5f}"


def test_rgb_metrics_differ_from_y(shared_dir):
    _, sr, hr = next(_bicubic_pairs(shared_dir, "Set5"))
    # Reporting RGB PSNR as Y PSNR is the field's classic mistake: they differ by > 1 dB here.
    assert psnr(sr, hr, 4) - psnr(sr, hr, 4, y_channel=False) > 1.0
    assert METRICS["psnr_rgb"].function(sr, hr, 4) == psnr(sr, hr, 4, y_channel=False)


def test_agrees_with_pyiqa_on_set5(shared_dir):
    pyiqa = pytest.importorskip("pyiqa")
    from pyiqa.archs.ssim_arch import ssim as pyiqa_ssim_core
    from pyiqa.utils.color_util import to_y_channel

    kw = {"crop_border": 4, "device": "cpu"}
    psnr_y = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", **kw)
    psnr_rgb = pyiqa.create_metric("psnr", test_y_channel=False, **kw)
    ssim_rgb = pyiqa.create_metric("ssimc", **kw)
    ssim_y_rounded = pyiqa.create_metric("ssim", color_space="ycbcr", **kw)
    def tensor(img):
        return torch.from_numpy(img.transpose(2, 0, 1).astype(np.float64))[None]

    for name, sr, hr in _bicubic_pairs(shared_dir, "Set5"):
        x, y = tensor(sr), tensor(hr)
        assert psnr(sr, hr, 4) == pytest.approx(psnr_y(x, y).item(), abs=1e-3), name
        assert psnr(sr, hr, 4, False) == pytest.approx(psnr_rgb(x, y).item(), abs=1e-3), name
        # pyiqa's SSIM runs float64 convolutions (seconds per image on CPU): compare SSIM on
        # the central 200x200 of each image.
        h, w = sr.shape[:2]
        sr, hr = (im[h // 2 - 100 : h // 2 + 100, w // 2 - 100 : w // 2 + 100] for im in (sr, hr))
        x, y = tensor(sr), tensor(hr)
        assert ssim(sr, hr, 4, False) == pytest.approx(ssim_rgb(x, y).item(), abs=1e-3), name
        # pyiqa's SSIM class rounds Y to integers first; its SSIM core on the unrounded
        # MATLAB Y (what we score) must agree with ours.
        y_sr = to_y_channel(x[..., 4:-4, 4:-4], 1.0, "ycbcr") * 255
        y_hr = to_y_channel(y[..., 4:-4, 4:-4], 1.0, "ycbcr") * 255
        core = pyiqa_ssim_core(y_sr, y_hr, data_range=255.0).item()
        assert ssim(sr, hr, 4) == pytest.approx(core, abs=1e-3), name
        assert ssim(sr, hr, 4) == pytest.approx(ssim_y_rounded(x, y).item(), abs=2e-3), name


# ---------------------------------------------------------------- NIQE


def test_niqe_reference_value(shared_dir):
    img = read_image(shared_dir / "data" / "reference" / "baboon.png")
    assert niqe(img) == pytest.approx(5.72957338, abs=1e-3)  # MATLAB R2021a


def _niqe_loop_reference(y: np.ndarray) -> float:
    """NIQE transliterated block by block from MATLAB's computequality.m (as BasicSR's niqe)."""
    from scipy.ndimage import convolve
    from scipy.special import gamma

    def aggd(v):
        v = v.ravel()
        gam = np.arange(0.2, 10.001, 0.001)
        r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
        left, right = np.sqrt(np.mean(v[v < 0] ** 2)), np.sqrt(np.mean(v[v > 0] ** 2))
        g = left / right
        rhat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
        alpha = gam[np.argmin((r_gam - rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2) ** 2)]
        k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
        return alpha, left * k, right * k

    def features(block):
        a, bl, br = aggd(block)
        out = [a, (bl + br) / 2]
        for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a, bl, br = aggd(block * np.roll(block, shift, axis=(0, 1)))
            out += [a, (br - bl) * gamma(2 / a) / gamma(1 / a), bl, br]
        return out

    mu_pris, cov_pris, window = pristine_model()
    nh, nw = y.shape[0] // 96, y.shape[1] // 96
    img, feats = y[: nh * 96, : nw * 96], []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img * img, window, mode="nearest") - mu * mu))
        mscn, b = (img - mu) / (sigma + 1), 96 // scale
        feats.append([features(mscn[i * b : (i + 1) * b, j * b : (j + 1) * b])
                      for j in range(nw) for i in range(nh)])
        img = imresize(img / 255, scale=0.5) * 255
    dist = np.concatenate([np.array(f) for f in feats], axis=1)
    diff = mu_pris - np.nanmean(dist, axis=0)
    cov = np.cov(dist[~np.isnan(dist).any(axis=1)], rowvar=False)
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff))


def test_vectorised_niqe_equals_block_loop(shared_dir):
    img = read_image(shared_dir / "data" / "Set5" / "HR" / "bird.png")
    y = np.floor(rgb2y(img) * 255 + 0.5)
    assert niqe(img) == pytest.approx(_niqe_loop_reference(y), abs=1e-9)


def test_niqe_model_is_shipped_and_inputs_checked():
    mu, cov, window = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
    assert window.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="96x96"):
        niqe(np.zeros((95, 200, 3)))
    # White noise has nothing of natural-image statistics: far from the pristine model.
    noise = np.random.default_rng(0).random((192, 192, 3))
    assert niqe(noise) > 10
    # A flat image has no defined statistics (MATLAB: NaN); a single block still scores.
    assert math.isnan(niqe(np.full((192, 192, 3), 0.5)))
    assert math.isfinite(niqe(noise[:100, :100]))


# ---------------------------------------------------------------- PIRM, Ma, LPIPS


def test_pirm_measures():
    assert pooled_rmse([3.0, 4.0]) == pytest.approx(math.sqrt(12.5))
    assert math.isnan(pooled_rmse([]))
    assert perceptual_index(ma_score=8.0, niqe_score=3.0) == pytest.approx(2.5)
    assert [pirm_region(v) for v in (11.0, 12.0, 15.3, 16.5)] == [1, 2, 3, None]


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """No pyiqa or torchvision weights anywhere: an empty IQA folder and an empty TORCH_HOME."""
    weights = tmp_path / "iqa"
    weights.mkdir()
    monkeypatch.setenv(IQA_WEIGHTS_ENV, str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_unavailable_metrics_say_which_file_and_where(empty_caches):
    img = np.random.default_rng(0).random((100, 100, 3))
    for call, file_name in [
        (lambda: ma(img), NRQM_FILE),
        (lambda: pi(img), NRQM_FILE),
        (lambda: lpips(img, img), LPIPS_FILE),
    ]:
        with pytest.raises(MetricUnavailable) as info:
            call()
        message = str(info.value)
        assert file_name in message
        assert str(empty_caches / "iqa") in message and IQA_WEIGHTS_ENV in message
        assert "\n" not in message


def test_table_reports_unavailable_metric_as_nan_with_one_warning(empty_caches):
    rng = np.random.default_rng(0)
    hrs = [rng.random((24, 24, 3)) for _ in range(3)]
    srs = [np.clip(h + rng.normal(0, 0.02, h.shape), 0, 1) for h in hrs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate_images(srs, hrs, ["a", "b", "c"], ["psnr", "ma", "rmse"], crop_border=2)
    assert [str(w.message).count(NRQM_FILE) for w in caught] == [1]
    assert list(table.columns) == ["psnr", "ma", "rmse"]
    assert list(table.index) == ["a", "b", "c"] and table.index.name == "image"
    assert table["ma"].isna().all() and (table["psnr"] > 30).all()
    summary = summarize(table)
    assert math.isnan(summary["ma"])
    assert summary["rmse_pooled"] == pytest.approx(math.sqrt(np.mean(table["rmse"] ** 2)))
    assert summary["psnr"] == pytest.approx(table["psnr"].mean())


def test_table_input_errors():
    img = np.zeros((20, 20, 3))
    with pytest.raises(MetricNameError, match="unknown metric name.*bogus"):
        evaluate_images([img], [img], ["x"], ["psnr", "bogus"], crop_border=0)
    with pytest.raises(MetricInputError, match="^x: metric niqe"):
        evaluate_images([img], [img], ["x"], ["niqe"], crop_border=0)


def test_metric_table_entries():
    assert set(METRICS) == {
        "psnr", "ssim", "psnr_rgb", "ssim_rgb", "niqe", "ma", "pi", "lpips", "dists", "rmse",
        "artifacts", "brightness_shift", "brightness_error",
    }
    assert not METRICS["niqe"].needs_reference and METRICS["lpips"].needs_reference
    assert METRICS["psnr"].higher_is_better and not METRICS["pi"].higher_is_better
    assert "Y" in METRICS["psnr"].label and "RGB" in METRICS["psnr_rgb"].label


def test_lpips_bridge_runs_offline_with_local_files(tmp_path, monkeypatch):
    """The available path end to end with local files (random weights: wiring, not values)."""
    pytest.importorskip("pyiqa")
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(VERIFY_ENV, "0")  # synthetic weights under the cache names
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    trunk = torchvision.models.alexnet(weights=None).state_dict()
    torch.save({k: v.half() for k, v in trunk.items()}, checkpoints / ALEXNET_FILE)
    torch.manual_seed(0)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
             for i, c in enumerate((64, 192, 384, 256, 256))}
    weights = tmp_path / "iqa"
    weights.mkdir()
    torch.save(heads, weights / LPIPS_FILE)
    rng = np.random.default_rng(0)
    hr = rng.random((64, 64, 3))
    sr = np.clip(hr + rng.normal(0, 0.1, hr.shape), 0, 1)
    assert lpips(hr, hr, weights_dir=weights) == pytest.approx(0.0, abs=1e-6)
    assert lpips(sr, hr, weights_dir=weights) > 0
    (weights / LPIPS_FILE).write_bytes(b"not a checkpoint")
    other = tmp_path / "other"
    other.mkdir()
    (other / LPIPS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable,
                       match=r"^LPIPS: cannot read checkpoint .*other/LPIPS_v0\.1_alex-df73285e"
                             r"\.pth: not a PyTorch or safetensors weights file \(or corrupt\)$"):
        lpips(sr, hr, weights_dir=other)


class _Payload:
    """Unpickling this creates the marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _lpips_heads(folder: Path, seed: int = 0) -> Path:
    """A real LPIPS linear-weights file: random tensors of the released file's shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
             for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(heads, folder / LPIPS_FILE)
    return folder


def _alexnet_path(torch_home: Path) -> Path:
    path = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _planted(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(TORCH_HOME with a malicious AlexNet file, iqa weights dir, AlexNet path, marker)."""
    marker = tmp_path / "payload-ran"
    alexnet = _alexnet_path(tmp_path / "torch")
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11), "x": _Payload(marker)},
               alexnet)
    return tmp_path / "torch", _lpips_heads(tmp_path / "iqa"), alexnet, marker


def test_planted_alexnet_file_does_not_run(tmp_path, monkeypatch):
    torch_home, iqa, alexnet, marker = _planted(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    # The second line of defence: with the hash check off, weights_only still refuses it
    # (the hash check itself: tests/test_downloads.py).
    monkeypatch.setenv(VERIFY_ENV, "0")
    img = np.random.default_rng(0).random((48, 48, 3))
    try:
        lpips(img, img, weights_dir=iqa)
    except Exception as exc:  # checked below, after the marker
        error: Exception | None = exc
    else:
        error = None
    assert not marker.exists(), "the planted pickle ran"
    assert isinstance(error, MetricUnavailable), repr(error)
    message = str(error)
    assert message.startswith(f"LPIPS: refusing to load {alexnet}: not a plain weights file")
    assert "\n" not in message


def test_planted_alexnet_file_does_not_run_through_evaluate_cli(tmp_path):
    torch_home, iqa, alexnet, marker = _planted(tmp_path)
    rng = np.random.default_rng(1)
    hr = np.round(rng.random((48, 48, 3)) * 255) / 255
    write_image(tmp_path / "hr" / "a.png", hr)
    write_image(tmp_path / "sr" / "a.png", np.clip(hr + 3 / 255, 0, 1))
    env = {**os.environ, "TORCH_HOME": str(torch_home), "PYTHONPATH": str(REPO_ROOT)}
    env.pop(IQA_WEIGHTS_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "esrgan.evaluate", "--sr", str(tmp_path / "sr"), "--hr",
         str(tmp_path / "hr"), "--metrics", "psnr,lpips", "--iqa-weights", str(iqa),
         "--csv", str(tmp_path / "m.csv")],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert not marker.exists(), "the planted pickle ran"
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings_ = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 1 and f"refusing to load {alexnet}" in warnings_[0], proc.stderr
    table = pd.read_csv(tmp_path / "m.csv", index_col="image")
    assert np.isnan(table.loc["a", "lpips"]) and table.loc["a", "psnr"] > 30


def test_truncated_alexnet_file_is_one_line(tmp_path, monkeypatch):
    alexnet = _alexnet_path(tmp_path / "torch")
    gen = torch.Generator().manual_seed(0)
    torch.save({"features.0.weight": torch.rand(64, 3, 11, 11, generator=gen),
                "features.0.bias": torch.rand(64, generator=gen)}, alexnet)
    alexnet.write_bytes(alexnet.read_bytes()[:5000])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(VERIFY_ENV, "0")  # the reader's own check, past the hash check
    img = np.random.default_rng(0).random((48, 48, 3))
    with pytest.raises(MetricUnavailable) as info:
        lpips(img, img, weights_dir=_lpips_heads(tmp_path / "iqa"))
    message = str(info.value)
    assert message.startswith(f"LPIPS: cannot read checkpoint {alexnet}: ") and "\n" not in message


def test_lpips_equals_pyiqa_lpips_on_the_same_files(tmp_path, monkeypatch):
    """Our AlexNet slices and heads are pyiqa's LPIPS(net='alex'): same score, same files."""
    pytest.importorskip("pyiqa")
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(VERIFY_ENV, "0")  # synthetic weights under the cache names
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(),
               _alexnet_path(tmp_path / "torch"))  # a safe file: pyiqa may read it here
    iqa = _lpips_heads(tmp_path / "iqa", seed=3)
    rng = np.random.default_rng(2)
    hr = rng.random((64, 72, 3))
    sr = np.clip(hr + rng.normal(0, 0.1, hr.shape), 0, 1)
    reference = LPIPS(pretrained=False, net="alex", version="0.1",
                      pretrained_model_path=str(iqa / LPIPS_FILE)).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(sr.transpose(2, 0, 1)).float()[None],
                             torch.from_numpy(hr.transpose(2, 0, 1)).float()[None],
                             normalize=True).item()
    assert expected > 0
    assert lpips(sr, hr, weights_dir=iqa) == pytest.approx(expected, rel=1e-6)


def test_dists_equals_pyiqa_dists_on_the_same_files(tmp_path, monkeypatch):
    """Our VGG16 + L2 pooling + alpha/beta are pyiqa's DISTS: same score from the same files.

    pyiqa's DISTS asks torchvision for the ImageNet VGG16 (a download); here its trunk is a
    random torchvision VGG16 ``features`` instead, saved to disk as torchvision's file.
    """
    pytest.importorskip("pyiqa")
    import types

    import torchvision
    from pyiqa.archs.dists_arch import DISTS

    from esrgan.metrics.iqa import DISTS_FILE, VGG16_FILE, dists

    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    monkeypatch.setattr(torchvision.models, "vgg16",
                        lambda weights=None: types.SimpleNamespace(features=features))
    iqa = tmp_path / "iqa"
    iqa.mkdir()
    gen = torch.Generator().manual_seed(5)
    heads = {"alpha": torch.rand(1, 1475, 1, 1, generator=gen) * 0.2,
             "beta": torch.rand(1, 1475, 1, 1, generator=gen) * 0.2}
    torch.save(heads, iqa / DISTS_FILE)
    reference = DISTS(pretrained_model_path=str(iqa / DISTS_FILE)).eval()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(VERIFY_ENV, "0")  # synthetic weights under the cache names
    trunk = tmp_path / "torch" / "hub" / "checkpoints" / VGG16_FILE
    trunk.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, trunk)
    rng = np.random.default_rng(4)
    hr = rng.random((64, 80, 3))
    sr = np.clip(hr + rng.normal(0, 0.1, hr.shape), 0, 1)
    with torch.no_grad():
        expected = reference(torch.from_numpy(sr.transpose(2, 0, 1)).float()[None],
                             torch.from_numpy(hr.transpose(2, 0, 1)).float()[None]).item()
    assert expected > 1e-3  # random weights: small, but far from 0
    assert dists(sr, hr, weights_dir=iqa) == pytest.approx(expected, rel=1e-5)
    assert dists(hr, hr, weights_dir=iqa) == pytest.approx(0.0, abs=1e-6)
    torch.save({"alpha": heads["alpha"]}, iqa / "other.pth")
    (iqa / "bad").mkdir()
    (iqa / "bad" / DISTS_FILE).write_bytes((iqa / "other.pth").read_bytes())
    with pytest.raises(MetricUnavailable, match=r"^DISTS: .*not DISTS / VGG16 weights\)$"):
        dists(sr, hr, weights_dir=iqa / "bad")


def test_dists_without_files_is_left_out_with_a_reason(tmp_path, monkeypatch):
    from esrgan.metrics.iqa import DISTS_FILE, dists

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(IQA_WEIGHTS_ENV, str(tmp_path / "iqa"))
    img = np.random.default_rng(0).random((48, 48, 3))
    with pytest.raises(MetricUnavailable, match=rf"^DISTS needs the weight file {DISTS_FILE}"):
        dists(img, img)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate_images([img], [img], ["a"], ["psnr", "dists"], crop_border=0)
    assert np.isnan(table.loc["a", "dists"]) and table.loc["a", "psnr"] == np.inf
    assert [str(w.message).count(DISTS_FILE) for w in caught] == [1]


# ---------------------------------------------------------------- back projection


def test_back_projection_raises_psnr_of_bicubic(shared_dir):
    gains = {}
    data = shared_dir / "data" / "Set5"
    images = []
    for hr_path in sorted((data / "HR").glob("*.png")):
        hr = mod_crop(read_image(hr_path), 4).astype(np.float64)
        lr = read_image(data / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png").astype(np.float64)
        images.append((hr, lr, imresize(lr, scale=4)))
    base = np.mean([psnr(quantize(sr), hr, 4) for hr, _, sr in images])
    for iterations in (1, 2, 5, 10):
        scores = [psnr(quantize(back_project(sr, lr, 4, iterations)), hr, 4)
                  for hr, lr, sr in images]
        gains[iterations] = np.mean(scores) - base
    # Measured: +0.62, +0.75, +0.81, +0.81 dB.
    assert gains[1] > 0.5
    assert gains[1] < gains[2] < gains[5] <= gains[10] + 1e-3


def test_back_projection_torch_equals_numpy_and_checks_sizes():
    rng = np.random.default_rng(0)
    lr = rng.random((8, 10, 3))
    sr = imresize(lr, scale=4) + rng.normal(0, 0.05, (32, 40, 3))
    ref = back_project(sr, lr, 4, 3)
    t = back_project(torch.from_numpy(sr.transpose(2, 0, 1).copy()),
                     torch.from_numpy(lr.transpose(2, 0, 1).copy()), 4, 3)
    np.testing.assert_allclose(t.numpy().transpose(1, 2, 0), ref, atol=1e-10)
    assert back_project(sr, lr, 4, 0) is sr
    # After convergence the SR is consistent with its LR image.
    consistent = back_project(sr, lr, 4, 30)
    assert np.abs(imresize(consistent, output_size=(8, 10)) - lr).max() < 1e-3
    with pytest.raises(ValueError, match="not 4 x LR size"):
        back_project(sr[:-1], lr, 4, 1)


# ------------------------------------------------------------------------------------------
# the periodic-artifact index


def _photo_like(h: int = 256, w: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image with a 1/f-like spectrum (no periodic structure)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    planes = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((h, w)))
        plane = np.real(np.fft.ifft2(amp * phase))
        planes.append((plane - plane.min()) / np.ptp(plane))
    return 0.1 + 0.8 * np.stack(planes, axis=-1)


def test_artifact_index_sees_a_grid_and_not_blur_noise_or_detail() -> None:
    from scipy.ndimage import gaussian_filter

    from esrgan.metrics import METRICS, artifact_index

    hr = _photo_like()
    h, w, _ = hr.shape
    yy, xx = np.mgrid[:h, :w]
    blurred = gaussian_filter(hr, sigma=(1.5, 1.5, 0))
    noisy = np.clip(hr + np.random.default_rng(1).normal(0, 3 / 255, hr.shape), 0, 1)
    # a diagonal grid of 2 grey levels with a period of 9 px, as GAN stages paint
    grid = np.clip(blurred + (2 / 255) * np.cos(2 * np.pi * (xx + yy) / 9.0)[..., None], 0, 1)
    plain = {"blur": artifact_index(blurred, hr, 4), "noise": artifact_index(noisy, hr, 4)}
    with_grid = artifact_index(grid, hr, 4)
    assert max(plain.values()) < 0.002, plain
    assert with_grid > 0.01, (with_grid, plain)
    assert artifact_index(hr, hr, 4) < 0.002  # real detail: no isolated peaks
    assert METRICS["artifacts"].function is artifact_index
    assert not METRICS["artifacts"].higher_is_better


def test_peak_bins_are_exactly_the_full_median_filters() -> None:
    """The bounded search finds the bins a full 15x15 wrap-around median filter finds."""
    from scipy.ndimage import median_filter

    from esrgan.metrics.artifacts import NEIGHBOURHOOD, PEAK_FACTOR, peak_bins

    rng = np.random.default_rng(0)
    for trial in range(6):
        h, w = rng.integers(40, 120, size=2)
        power = rng.exponential(size=(h, w)) ** (1 + trial % 3)
        power[rng.integers(0, h, 12), rng.integers(0, w, 12)] *= 60  # planted peaks
        if trial == 5:  # ties: a quantised spectrum
            power = np.round(power, 1)
        where = rng.random((h, w)) < 0.8
        full = where & (power > PEAK_FACTOR * median_filter(power, size=NEIGHBOURHOOD,
                                                            mode="wrap"))
        fast = peak_bins(power, where)
        assert full.any() and np.array_equal(fast, full), trial


def test_artifact_index_refuses_a_too_small_image() -> None:
    from esrgan.metrics import artifact_index

    img = _photo_like(40, 40)
    with pytest.raises(ValueError, match="too small for the artifact index"):
        artifact_index(img, img, 4)

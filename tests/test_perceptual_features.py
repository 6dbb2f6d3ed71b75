"""Perceptual features smooth in the image (esrgan/archs/filterbank.py): the fixed Gabor bank
and the band-limited input, their config keys, and what a run records of them."""

from __future__ import annotations

import pytest
import torch

from esrgan.archs.filterbank import BandLimited, GaborFeatureExtractor, gabor_pairs
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.losses import PerceptualLoss
from esrgan.paper.departures import departures
from experiments import build, identity, keys, presets

# The bank's filters as float32, hashed: a change to them is a new instrument, never silent.
GABOR_SHA256 = "ec5fea647680ce7214e59c14a1c9bb76f301a779535b274b344bf8040b0f77c7"


def _photo_like(seed: int, size: int = 64) -> torch.Tensor:
    """A smooth random image in [0, 1] (low-passed noise), (1, 3, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, size // 8, size // 8, generator=gen)
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("mode", ["simple", "energy"])
def test_the_bank_is_the_same_every_build_and_says_its_hash(mode: str) -> None:
    a, b = GaborFeatureExtractor(mode=mode), GaborFeatureExtractor(mode=mode)
    assert torch.equal(a.filters, b.filters)
    assert a.filters_sha256 == b.filters_sha256 == GABOR_SHA256
    assert GABOR_SHA256[:16] in a.description
    x = _photo_like(0)
    assert torch.equal(a(x), b(x))


def test_the_bank_is_zero_mean_unit_norm_and_holds_nothing_trainable() -> None:
    bank = gabor_pairs(4.0, 6)
    assert bank.shape == (12, 1, 15, 15)
    assert torch.allclose(bank.sum(dim=(1, 2, 3)), torch.zeros(12, dtype=bank.dtype),
                          atol=1e-12)
    assert torch.allclose(bank.flatten(1).norm(dim=1), torch.ones(12, dtype=bank.dtype))
    g = GaborFeatureExtractor()
    assert list(g.parameters()) == [] and g.state_dict() == {}
    g.train()
    assert not g.training
    # a flat image has no response at all: the bank sees structure only ...
    assert GaborFeatureExtractor()(torch.full((1, 3, 32, 32), 0.4)).abs().max() < 1e-5


def test_the_low_pass_residual_gives_the_bank_colour_and_brightness() -> None:
    flat = {v: torch.full((1, 3, 32, 32), v) for v in (0.4, 0.6)}
    # ... unless its low-pass residual is kept: then a brighter image has other features
    bank = GaborFeatureExtractor(lowpass=1.0)
    assert "low-pass residual (weight 1)" in bank.description
    assert bank.filters_sha256 == GABOR_SHA256  # the same filters, one more output
    low = bank(flat[0.4])[0, -48:]  # 3 channels of 4 x 4 after three decimations
    assert torch.allclose(low, torch.full_like(low, 0.4 * 64))
    assert not torch.allclose(bank(flat[0.4]), bank(flat[0.6]))
    with pytest.raises(ValueError, match="low-pass"):
        GaborFeatureExtractor(lowpass=-1.0)


@pytest.mark.parametrize("net", ["gabor", "gabor_energy"])
def test_gradients_are_finite_even_where_the_images_agree(net: str) -> None:
    cfg = presets.resolve("tiny", {"percep_net": net})
    loss = PerceptualLoss(build.make_feature_extractor(cfg), normalize=True)
    hr = _photo_like(1, 32)
    for sr in (_photo_like(2, 32), hr.clone(), torch.full_like(hr, 0.5)):
        sr = sr.requires_grad_(True)
        value = loss(sr, hr)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(sr.grad).all()


def _high_share(grad: torch.Tensor, cutoff: float = 0.25) -> float:
    """Share of the gradient's spectral energy at frequencies above ``cutoff`` cycles/px."""
    spectrum = torch.fft.fft2(grad[0].mean(0)).abs() ** 2
    f = torch.fft.fftfreq(grad.shape[-1])
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    return float(spectrum[radius > cutoff].sum() / spectrum.sum())


def test_a_low_passed_input_keeps_a_fine_pattern_out_of_the_gradient() -> None:
    """A random VGG19's gradient holds fine periodic structure; on low-passed input the same
    network's gradient has (almost) none, and a pattern finer than the band costs little."""
    vgg = VGGFeatureExtractor("conv2_2", weights="random", seed=0)
    hr = _photo_like(3)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.1 - 0.05
    sr = (hr + checker).clamp(0, 1)
    shares, losses = {}, {}
    for sigma, extractor in ((0.0, vgg), (1.5, BandLimited(vgg, 1.5))):
        x = sr.clone().requires_grad_(True)
        value = PerceptualLoss(extractor, normalize=True)(x, hr)
        value.backward()
        shares[sigma], losses[sigma] = _high_share(x.grad), float(value.detach())
    assert shares[0.0] > 0.5
    assert shares[1.5] < 0.01 * shares[0.0]
    assert losses[1.5] < 0.1 * losses[0.0]


def test_the_keys_resolve_validate_and_name_their_cells() -> None:
    base = presets.resolve("tiny")
    assert (base["percep_net"], base["percep_blur"]) == ("vgg19", 0.0)
    assert presets.resolve("cpu")["percep_net"] == "vgg19"  # the default is unchanged
    for overrides in ({"percep_net": "gabor"}, {"percep_net": "gabor_energy"},
                      {"percep_blur": 1.5}, {"percep_net": "gabor", "gabor_lowpass": 1.0}):
        cfg = presets.resolve("tiny", overrides)
        assert presets.validate(cfg) == []
        assert identity.cell_key(cfg) != identity.cell_key(base)
        assert identity.stage1_key(cfg) == identity.stage1_key(base)  # stage 1 is shared
    assert presets.validate(presets.resolve("tiny", {"percep_net": "vgg16"})) == [
        "percep_net must be one of ['vgg19', 'gabor', 'gabor_energy'], got 'vgg16'"]
    (problem,) = presets.validate(presets.resolve("tiny", {"percep_blur": -1.0}))
    assert problem.startswith("percep_blur must be between 0 and 16")
    assert presets.validate(presets.resolve("tiny", {"gabor_lowpass": 1.0})) == [
        "gabor_lowpass is a weight within a Gabor bank: set percep_net=gabor or gabor_energy, "
        "or leave it at 0"]
    # a Gabor bank needs no VGG19 file, whatever vgg_weights says
    gabor = presets.resolve("tiny", {"percep_net": "gabor", "vgg_weights": "/no/such/file"})
    assert presets.validate(gabor) == []
    # a stored config that predates the keys reads as the VGG19 on the image itself
    old = {k: v for k, v in base.items()
           if k not in ("percep_net", "percep_blur", "gabor_lowpass")}
    assert keys.complete(old)["percep_net"] == "vgg19"
    assert keys.complete(old)["percep_blur"] == keys.complete(old)["gabor_lowpass"] == 0.0
    assert identity.cell_key(old) == identity.cell_key(base)


def test_the_extractor_in_use_is_recorded_and_named_a_departure() -> None:
    cfg = presets.resolve("tiny", {"percep_net": "gabor_energy", "percep_blur": 1.0})
    extractor = build.make_feature_extractor(cfg)
    assert isinstance(extractor, BandLimited)
    assert isinstance(extractor.extractor, GaborFeatureExtractor)
    assert GABOR_SHA256[:16] in extractor.description
    assert "sigma 1 px" in extractor.description
    premise = build.vgg_premise(cfg, extractor)  # a bank without parameters works too
    assert premise["vgg_active_fraction"] == 1.0  # local energy is never 0
    found = {d.key: d for d in departures(cfg)}
    assert "percep_net" in found and "percep_blur" in found
    assert "Gabor" in found["percep_net"].text
    # the VGG19's own departures do not apply to a bank
    assert "vgg_weights" not in found and "vgg_layer" not in found
    plain = {d.key for d in departures(presets.resolve("tiny"))}
    assert not {"percep_net", "percep_blur"} & plain

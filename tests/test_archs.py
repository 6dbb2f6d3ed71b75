"""Generator switches, discriminator and VGG feature extractor (PAPER.md sections 1-3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from esrgan.archs.blocks import RRDB, ResBlock, ResidualDenseBlock
from esrgan.archs.discriminator import VGGStyleDiscriminator
from esrgan.archs.rrdbnet import build_generator, receptive_field
from esrgan.archs.vgg import CONV_LAYERS, VGGFeatureExtractor
from esrgan.weights import CheckpointError, WeightsNotFound

TINY = {"nf": 8, "nb": 2, "gc": 4}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- generator ------------------------------------------------------------------------------


def test_paper_generator_has_exactly_the_paper_parameter_count() -> None:
    g = build_generator()  # rrdb, nf 64, nb 23, gc 32, no BN, beta 0.2, init 0.1
    assert n_params(g) == 16_697_987
    assert g.arch == {"trunk": "rrdb", "bn": False, "beta": 0.2, "init_scale": 0.1, "nf": 64,
                      "nb": 23, "gc": 32, "scale": 4, "in_ch": 3, "out_ch": 3}
    assert receptive_field(g.arch) == 349


def test_srgan_baseline_builds_from_the_same_builder() -> None:
    g = build_generator("resblock", bn=True, beta=1.0, init_scale=1.0, nb=16)
    # 16 blocks of two 64->64 3x3 convs and two BNs, plus the same framework as ESRGAN.
    framework = (3 * 9 * 64 + 64) + 4 * (64 * 9 * 64 + 64) + (64 * 9 * 3 + 3)
    blocks = 16 * (2 * (64 * 9 * 64 + 64) + 2 * 2 * 64)
    assert n_params(g) == framework + blocks == 1_337_027
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 32


def test_basicsr_module_names() -> None:
    names = set(build_generator(nb=2, nf=8, gc=4).state_dict())
    for key in ("conv_first.weight", "body.1.rdb3.conv5.bias", "conv_body.weight",
                "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"):
        assert key in names
    assert "conv_up2.weight" not in build_generator(scale=2, **TINY).state_dict()


@pytest.mark.parametrize("trunk,bn_per_block", [("rrdb", 15), ("resblock", 2)])
def test_bn_adds_batchnorm_and_nothing_else(trunk: str, bn_per_block: int) -> None:
    torch.manual_seed(0)
    plain = build_generator(trunk, bn=False, **TINY)
    torch.manual_seed(0)
    with_bn = build_generator(trunk, bn=True, **TINY)
    bn_modules = {n for n, m in with_bn.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bn_modules) == TINY["nb"] * bn_per_block
    assert all(n.startswith("body.") for n in bn_modules)  # trunk blocks only
    plain_state, bn_state = plain.state_dict(), with_bn.state_dict()
    added = set(bn_state) - set(plain_state)
    assert set(plain_state) <= set(bn_state)
    assert added and all(k.rsplit(".", 1)[0] in bn_modules for k in added)
    # Everything else is the same network, drawn from the same random stream.
    for key, value in plain_state.items():
        assert torch.equal(value, bn_state[key]), key
    assert _layer_kinds(plain) == _layer_kinds(with_bn)


def _layer_kinds(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules()
            if not isinstance(m, nn.BatchNorm2d | nn.Identity)]


def _check_branch_scaled(block: nn.Module, x: torch.Tensor, beta: float) -> None:
    """out - x == beta * branch, with the branch measured by setting the block's beta to 1."""
    block.eval()
    with torch.no_grad():
        out = block(x)
        block.beta = 1.0
        branch = block(x) - x
        block.beta = beta
    torch.testing.assert_close(out - x, beta * branch, rtol=1e-5, atol=1e-6)
    assert branch.abs().max() > 1e-3  # the branch is not trivially zero


@pytest.mark.parametrize("beta", [0.2, 0.5])
def test_beta_scales_every_residual_branch(beta: float) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 6, 6)
    _check_branch_scaled(ResidualDenseBlock(8, 4, beta=beta, init_scale=1.0), x, beta)
    _check_branch_scaled(RRDB(8, 4, beta=beta, init_scale=1.0), x, beta)
    _check_branch_scaled(ResBlock(8, bn=False, beta=beta, init_scale=1.0), x, beta)
    assert all(m.beta == beta for m in build_generator(beta=beta, **TINY).body.modules()
               if hasattr(m, "beta"))


def test_rrdb_closed_form_with_known_weights() -> None:
    # All conv weights zero and conv5 biases c: every RDB adds beta*c, so
    # RRDB(x) = beta * (x + 3*beta*c) + x.
    beta, c = 0.2, 0.7
    block = RRDB(8, 4, beta=beta)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            rdb.conv5.bias.fill_(c)
        x = torch.randn(1, 8, 5, 5)
        torch.testing.assert_close(block(x), (1 + beta) * x + 3 * beta**2 * c)


def test_init_scale_scales_block_convs_only() -> None:
    torch.manual_seed(3)
    big = build_generator(init_scale=1.0, nf=16, nb=2, gc=8)
    torch.manual_seed(3)
    small = build_generator(init_scale=0.1, nf=16, nb=2, gc=8)
    big_p, small_p = dict(big.named_parameters()), dict(small.named_parameters())
    block_weights = [k for k in big_p if k.startswith("body.") and k.endswith("weight")]
    assert len(block_weights) == 2 * 3 * 5
    for key in block_weights:
        ratio = small_p[key].std() / big_p[key].std()
        assert abs(ratio.item() - 0.1) < 1e-5, key
        bias = key[: -len("weight")] + "bias"
        assert torch.count_nonzero(small_p[bias]) == 0
    for key in big_p:
        if not key.startswith("body."):
            assert torch.equal(big_p[key], small_p[key]), key
    # Kaiming normal, fan_in, a=0: std = sqrt(2 / fan_in) (conv5: (16 + 4*8) * 9 inputs).
    w = big_p["body.0.rdb1.conv5.weight"]
    assert abs(w.std().item() / (2 / (48 * 9)) ** 0.5 - 1) < 0.05


@pytest.mark.parametrize("trunk", ["rrdb", "resblock"])
@pytest.mark.parametrize("scale", [2, 4])
def test_generator_forward_backward(trunk: str, scale: int) -> None:
    g = build_generator(trunk, bn=True, scale=scale, nf=8, nb=1, gc=4)
    x = torch.rand(2, 3, 6, 7)
    out = g(x)
    assert out.shape == (2, 3, 6 * scale, 7 * scale)
    out.mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kwargs,message", [
    ({"trunk": "dense"}, "unknown trunk"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"beta": -0.2}, "beta must be > 0"),
    ({"scale": 3}, "scale must be one of"),
    ({"nb": 0}, "nb must be an integer >= 1"),
    ({"init_scale": 0}, "init_scale must be > 0"),
])
def test_generator_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_generator(**{**TINY, **kwargs})


@pytest.mark.parametrize("trunk,nb,scale", [("rrdb", 1, 4), ("rrdb", 1, 2), ("resblock", 2, 4)])
def test_receptive_field_is_exact(trunk: str, nb: int, scale: int) -> None:
    """Perturb one LR pixel: outputs change exactly up to receptive_field LR pixels away."""
    torch.manual_seed(0)
    g = build_generator(trunk, nf=8, nb=nb, gc=4, beta=1.0, init_scale=1.0, scale=scale)
    g = g.double().eval()
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    bumped = x.clone()
    bumped[0, :, 24, 24] += 1000.0  # large, so the faint far-away influence stays visible
    with torch.no_grad():
        diff = (g(bumped) - g(x)).abs().amax(1)[0]
    ys, xs = torch.nonzero(diff, as_tuple=True)
    reach = torch.maximum((ys // scale - 24).abs(), (xs // scale - 24).abs()).max().item()
    assert reach == receptive_field(g.arch)


# --- discriminator --------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [64, 128])
def test_discriminator_patch_sizes(patch: int) -> None:
    d = VGGStyleDiscriminator(nf=8, patch_size=patch)
    assert d.linear1.in_features == 8 * 8 * (patch // 32) ** 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 9  # all convs but one
    out = d(torch.rand(2, 3, patch, patch))
    assert out.shape == (2, 1)
    out.sum().backward()
    assert d.conv0_0.weight.grad is not None


def test_discriminator_paper_size_and_errors() -> None:
    assert VGGStyleDiscriminator().linear1.in_features == 512 * 4 * 4
    with pytest.raises(ValueError, match="multiple of 32"):
        VGGStyleDiscriminator(patch_size=48)
    d = VGGStyleDiscriminator(nf=4, patch_size=64)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 64, 64\), "
                                         r"got \(1, 3, 32, 32\)"):
        d(torch.rand(1, 3, 32, 32))


# --- VGG feature extractor ------------------------------------------------------------------


def test_vgg_layers_match_torchvision() -> None:
    reference = make_layers(cfgs["E"])  # torchvision's vgg19().features
    ours = VGGFeatureExtractor("conv5_4", weights="random").features
    assert len(ours) == CONV_LAYERS["conv5_4"] + 1 == 35
    for a, b in zip(ours, reference, strict=False):
        assert type(a) is type(b)
        if isinstance(a, nn.Conv2d):
            assert a.weight.shape == b.weight.shape
    assert len(VGGFeatureExtractor("conv2_2", before_activation=False,
                                   weights="random").features) == 9


def test_vgg_before_and_after_activation_differ_by_a_relu() -> None:
    before = VGGFeatureExtractor("conv2_2", before_activation=True, weights="random", seed=5)
    after = VGGFeatureExtractor("conv2_2", before_activation=False, weights="random", seed=5)
    x = torch.rand(1, 3, 24, 24)
    fb, fa = before(x), after(x)
    assert (fb < 0).any()
    assert torch.equal(fa, torch.relu(fb))
    assert before.description == "vgg19 conv2_2 before-activation, random weights (seed 5)"
    assert "after-activation" in after.description


def test_vgg_is_frozen_eval_seeded_and_leaves_global_rng_alone() -> None:
    rng = torch.get_rng_state()
    vgg = VGGFeatureExtractor("conv3_1", weights="random", seed=0)
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not any(m.training for m in vgg.modules())
    same = VGGFeatureExtractor("conv3_1", weights="random", seed=0)
    other = VGGFeatureExtractor("conv3_1", weights="random", seed=1)
    assert torch.equal(vgg.features[0].weight, same.features[0].weight)
    assert not torch.equal(vgg.features[0].weight, other.features[0].weight)
    with pytest.raises(ValueError, match="conv5_4"):
        VGGFeatureExtractor("relu5_4", weights="random")


def test_vgg_missing_imagenet_weights_names_file_and_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound) as info:
        VGGFeatureExtractor(weights="imagenet")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "vgg_weights=random" in message
    assert "\n" not in message


def test_vgg_loads_torchvision_file_from_hub_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ESRGAN_WEIGHTS_VERIFY", "0")  # synthetic weights under the cache name
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    # torchvision's key names; only the first block is needed for conv1_2.
    state = {"features.0.weight": torch.randn(64, 3, 3, 3, generator=gen),
             "features.0.bias": torch.randn(64, generator=gen),
             "features.2.weight": torch.randn(64, 64, 3, 3, generator=gen),
             "features.2.bias": torch.randn(64, generator=gen),
             "classifier.6.bias": torch.zeros(1000)}
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    vgg = VGGFeatureExtractor("conv1_2", weights="imagenet")
    assert torch.equal(vgg.features[2].weight, state["features.2.weight"])
    assert vgg.description.endswith("imagenet weights (vgg19-dcbb9e9d.pth)")
    # A file of the wrong shapes fails with the key and both shapes.
    state["features.2.weight"] = torch.zeros(32, 64, 3, 3)
    bad = tmp_path / "bad_vgg.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"'features\.2\.weight' has shape \(32, 64, 3, 3\)"
                                              r" in the checkpoint but \(64, 64, 3, 3\)"):
        VGGFeatureExtractor("conv1_2", weights=str(bad))

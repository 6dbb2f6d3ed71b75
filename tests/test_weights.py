"""Checkpoints: safe loading, the three published layouts, interpolation and its CLI."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esrgan.archs.rrdbnet import build_generator
from esrgan.interpolate import main as interpolate_main
from esrgan.interpolate import parse_alphas
from esrgan.weights import (
    CheckpointError,
    WeightsNotFound,
    check_fits,
    interpolate_state,
    is_safetensors_file,
    load_checkpoint,
    load_generator,
    load_generator_state,
    load_into,
    save_checkpoint,
    save_generator,
)

REPO = Path(__file__).resolve().parents[1]


def tiny(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_generator(**{"nf": 8, "nb": 2, "gc": 4, **kwargs})


# --- the three published layouts, written by independent converters -----------------------


def to_basicsr(state: dict) -> dict:
    # params_ema is the one to use; params holds different (raw) weights.
    return {"params": {k: v + 1 for k, v in state.items()}, "params_ema": dict(state)}


def to_xinntao(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", key)
        if m:
            new = f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{m[4]}"
        else:
            name, param = key.split(".")
            new = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
                   "conv_hr": "HRconv"}.get(name, name) + "." + param
        out[new] = value
    return out


def to_pre2019(state: dict, nb: int, scale: int) -> dict:
    stages = 2 if scale == 4 else 1
    top = {"conv_first": 0, "conv_body": None, "conv_up1": 3, "conv_up2": 6,
           "conv_hr": 2 + 3 * stages, "conv_last": 4 + 3 * stages}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", key)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = value
            continue
        name, param = key.split(".")
        if name == "conv_body":
            out[f"model.1.sub.{nb}.{param}"] = value
        else:
            out[f"model.{top[name]}.{param}"] = value
    return out


@pytest.mark.parametrize("layout,scale", [
    ("ours", 4), ("basicsr", 4), ("xinntao", 4), ("pre2019", 4),
    ("ours", 2), ("basicsr", 2), ("pre2019", 2),  # xinntao's RRDBNet is x4 only
])
def test_every_layout_loads_back_identical(tmp_path: Path, layout: str, scale: int) -> None:
    model = tiny(scale=scale)
    state = model.state_dict()
    path = tmp_path / f"{layout}.pth"
    if layout == "ours":
        save_generator(path, model)
    else:
        converted = {"basicsr": lambda: to_basicsr(state), "xinntao": lambda: to_xinntao(state),
                     "pre2019": lambda: to_pre2019(state, 2, scale)}[layout]()
        torch.save(converted, path)
    loaded = load_generator_state(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    rebuilt = load_generator(path)
    assert {k: rebuilt.arch[k] for k in ("trunk", "nf", "nb", "gc", "scale", "bn")} == \
        {"trunk": "rrdb", "nf": 8, "nb": 2, "gc": 4, "scale": scale, "bn": False}
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_saved_generator_keeps_its_arch(tmp_path: Path) -> None:
    model = tiny(trunk="resblock", bn=True, beta=0.5, init_scale=1.0, scale=2)
    save_generator(tmp_path / "g.pth", model)
    obj = load_checkpoint(tmp_path / "g.pth")
    assert set(obj) == {"params", "arch"} and obj["arch"] == model.arch
    assert load_generator(tmp_path / "g.pth").arch == model.arch
    assert load_generator(tmp_path / "g.pth", beta=1.0).arch["beta"] == 1.0


def test_wrong_shape_names_key_and_both_shapes(tmp_path: Path) -> None:
    save_generator(tmp_path / "small.pth", tiny())
    state = load_generator_state(tmp_path / "small.pth")
    with pytest.raises(CheckpointError) as info:
        load_into(build_generator(nf=16, nb=2, gc=4), state, "small.pth")
    message = str(info.value)
    assert message == ("small.pth: key 'conv_first.weight' has shape (8, 3, 3, 3) in the "
                       "checkpoint but (16, 3, 3, 3) in the model")
    with pytest.raises(CheckpointError, match=r"small\.pth: missing key 'body\.2\.rdb1"):
        load_into(build_generator(nf=8, nb=3, gc=4), state, "small.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key 'body\.1\.rdb1\.conv1\.weight'"):
        load_into(build_generator(nf=8, nb=1, gc=4), state, "small.pth")


def test_unbuilt_check_says_what_loading_into_the_built_model_says() -> None:
    state = tiny(bn=True).state_dict()
    arch = tiny(bn=True).arch
    variants = {
        "missing": {k: v for k, v in state.items() if k != "body.1.rdb2.bn3.running_var"},
        "unexpected": {**state, "body.2.rdb1.conv1.weight": state["body.0.rdb1.conv1.weight"]},
        "stray": {**state, "conv_up3.bias": state["conv_up1.bias"]},
        "shape": {**state, "conv_hr.weight": torch.zeros(8, 8, 1, 1)},
    }
    for name, variant in variants.items():
        with pytest.raises(CheckpointError) as built:
            load_into(tiny(bn=True), variant, "g.pth")
        with pytest.raises(CheckpointError) as unbuilt:
            check_fits(variant, arch, "g.pth")
        assert str(unbuilt.value) == str(built.value), name
    check_fits(state, arch, "g.pth")  # a file that fits passes
    # 50,000 blocks (560 million numbers, under the bound): the first missing key, unbuilt
    with pytest.raises(CheckpointError, match=r"^g\.pth: missing key 'body\.2\.rdb1\.conv1"):
        check_fits(state, {**arch, "nb": 50_000}, "g.pth")
    with pytest.raises(CheckpointError, match=r"^g\.pth: its weights describe a generator of "
                                              r"1000000 trunk blocks \(nf=8, gc=4\) with "):
        check_fits(state, {**arch, "nb": 1_000_000}, "g.pth")


def test_a_loaded_dict_is_named_by_its_source_in_every_refusal() -> None:
    """retest loads a run's file itself and hands the dict on: messages name the file."""
    model = tiny()
    lying = {"params": model.state_dict(), "arch": {**model.arch, "nb": 5}}
    with pytest.raises(CheckpointError, match=r"^/runs/best_psnr\.pth: its 'arch' entry says "
                                              r"nb=5 but its tensors hold nb=2$"):
        load_generator(lying, source="/runs/best_psnr.pth")
    with pytest.raises(CheckpointError, match=r"^/runs/best_psnr\.pth: not an ESRGAN"):
        load_generator({"params": {"x": torch.zeros(1)}}, source="/runs/best_psnr.pth")


class _Payload:
    """Unpickling this would create a folder: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"params": {"conv_first.weight": torch.zeros(1)}, "x": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(CheckpointError, match=r"^refusing to load .*evil\.pth: not a plain "
                                              r"weights file \(.*\)$"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_generator(path)
    assert not marker.exists()


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match=r"checkpoint file not found: .*nope\.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint" * 4)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*junk\.pth"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an ESRGAN generator state dict"):
        load_generator_state(tmp_path / "other.pth")


# --- interpolation --------------------------------------------------------------------------


def test_interpolation_endpoints_and_midpoint() -> None:
    a, b = tiny(0).state_dict(), tiny(1).state_dict()
    at0, at1, mid = (interpolate_state(a, b, t) for t in (0.0, 1.0, 0.5))
    for key in a:
        assert torch.equal(at0[key], a[key]) and torch.equal(at1[key], b[key]), key
        assert torch.equal(mid[key], (a[key] + b[key]) / 2), key
    assert not torch.equal(mid["conv_first.weight"], a["conv_first.weight"])


def test_interpolation_errors_and_integer_buffers() -> None:
    a = tiny(0).state_dict()
    for alpha in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            interpolate_state(a, a, alpha)
    with pytest.raises(CheckpointError, match="different architectures"):
        interpolate_state(a, tiny(0, nb=3).state_dict(), 0.5)
    with pytest.raises(CheckpointError, match=r"different architectures .*\(8, 3, 3, 3\) vs"):
        interpolate_state(a, tiny(0, nf=16).state_dict(), 0.5)
    bn_a = tiny(0, trunk="resblock", bn=True).state_dict()
    bn_b = {k: v.clone() for k, v in bn_a.items()}
    bn_b["body.0.bn1.num_batches_tracked"] += 7
    out = interpolate_state(bn_a, bn_b, 0.5)
    key = "body.0.bn1.num_batches_tracked"
    assert out[key].dtype == torch.int64
    assert torch.equal(out[key], bn_a[key])


def test_parse_alphas() -> None:
    assert parse_alphas("0:1:0.2") == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert parse_alphas("0.5:0.5:0.1") == [0.5]
    with pytest.raises(ValueError, match="START:STOP:STEP"):
        parse_alphas("0:1")
    with pytest.raises(ValueError, match="alpha must be in"):
        parse_alphas("0:1.5:0.5")


def test_interpolate_cli(tmp_path: Path, capsys) -> None:
    psnr, gan = tiny(0), tiny(1)
    save_generator(tmp_path / "psnr.pth", psnr)
    # The GAN file in the pre-2019 layout: inputs may mix layouts, the output is ours.
    torch.save(to_pre2019(gan.state_dict(), 2, 4), tmp_path / "gan.pth")
    a, b = str(tmp_path / "psnr.pth"), str(tmp_path / "gan.pth")

    assert interpolate_main([a, b, "--alpha", "0.2", "-o", str(tmp_path / "one.pth")]) == 0
    one = load_checkpoint(tmp_path / "one.pth")
    assert one["arch"] == psnr.arch
    expected = interpolate_state(psnr.state_dict(), gan.state_dict(), 0.2)
    assert all(torch.equal(one["params"][k], v) for k, v in expected.items())

    assert interpolate_main([a, b, "--alphas", "0:1:0.5", "-o", str(tmp_path / "sweep")]) == 0
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert names == ["interp_alpha0.00.pth", "interp_alpha0.50.pth", "interp_alpha1.00.pth"]
    end = load_generator(tmp_path / "sweep" / "interp_alpha1.00.pth")
    assert all(torch.equal(end.state_dict()[k], v) for k, v in gan.state_dict().items())
    capsys.readouterr()

    save_generator(tmp_path / "other.pth", tiny(0, nf=16))
    for argv, message in [
        ([a, b, "--alpha", "1.5", "-o", "x.pth"], "alpha must be in [0, 1], got 1.5"),
        ([a, str(tmp_path / "other.pth"), "--alpha", "0.5", "-o", "x.pth"],
         "different architectures (nf = 8 vs 16)"),
        ([a, str(tmp_path / "missing.pth"), "--alpha", "0.5", "-o", "x.pth"],
         "checkpoint file not found"),
    ]:
        assert interpolate_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_interpolate_module_rejects_bad_alpha(tmp_path: Path) -> None:
    save_generator(tmp_path / "g.pth", tiny())
    g = str(tmp_path / "g.pth")
    proc = subprocess.run(
        [sys.executable, "-m", "esrgan.interpolate", g, g, "--alpha", "1.5", "-o",
         str(tmp_path / "out.pth")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: interpolation alpha must be in [0, 1], got 1.5"
    assert not (tmp_path / "out.pth").exists()



def test_pixel_unshuffle_rrdbnet_is_named_not_misbuilt(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state["conv_first.weight"] = torch.zeros(8, 12, 3, 3)  # BasicSR x2: 3 * 2 * 2 inputs
    torch.save(state, tmp_path / "x2.pth")
    with pytest.raises(CheckpointError, match="pixel-unshuffle RRDBNet"):
        load_generator(tmp_path / "x2.pth")


# --- safetensors ------------------------------------------------------------------------------


def _equal_states(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_safetensors_round_trip_detected_by_content(tmp_path: Path) -> None:
    from safetensors import safe_open

    model = tiny(trunk="resblock", bn=True, beta=0.5, init_scale=1.0, scale=2)
    save_generator(tmp_path / "g.safetensors", model)
    with safe_open(str(tmp_path / "g.safetensors"), framework="pt") as f:  # a real one
        assert json.loads(f.metadata()["arch"]) == model.arch
        assert all(k.startswith("params.") for k in f.keys())
    obj = load_checkpoint(tmp_path / "g.safetensors")
    assert set(obj) == {"params", "arch"} and obj["arch"] == model.arch
    assert _equal_states(obj["params"], model.state_dict())
    # The content decides, not the name: safetensors named .pth, a torch file named
    # .safetensors.
    shutil.copy(tmp_path / "g.safetensors", tmp_path / "really_safetensors.pth")
    save_generator(tmp_path / "torch.pth", model)
    shutil.copy(tmp_path / "torch.pth", tmp_path / "really_torch.safetensors")
    for name in ("really_safetensors.pth", "really_torch.safetensors"):
        loaded = load_generator(tmp_path / name)
        assert loaded.arch == model.arch
        assert _equal_states(loaded.state_dict(), model.state_dict())
    # Plain values besides tensor groups survive too (a training-style checkpoint).
    save_checkpoint(tmp_path / "c.safetensors", {"step": 7, "w": torch.arange(3.0),
                                                 "opt": {"lr": [1e-4, 2e-4]}})
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back["step"] == 7 and back["opt"] == {"lr": [1e-4, 2e-4]}
    assert torch.equal(back["w"], torch.arange(3.0))


def test_safetensors_from_other_tools(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = tiny()
    state = model.state_dict()
    save_file(dict(to_xinntao(state)), tmp_path / "flat.safetensors")  # no metadata at all
    assert _equal_states(load_generator_state(tmp_path / "flat.safetensors"), state)
    # BasicSR's two entries flattened with prefixes, as converters write them.
    other = {k: v + 1 for k, v in state.items()}
    flat = {**{f"params.{k}": v for k, v in other.items()},
            **{f"params_ema.{k}": v for k, v in state.items()}}
    save_file(flat, tmp_path / "basicsr.safetensors", metadata={"format": "pt"})
    assert _equal_states(load_generator_state(tmp_path / "basicsr.safetensors"), state)
    assert _equal_states(load_generator_state(tmp_path / "basicsr.safetensors",
                                              params="params"), other)


def test_corrupt_safetensors_is_one_checkpoint_error(tmp_path: Path) -> None:
    save_generator(tmp_path / "g.safetensors", tiny())
    data = (tmp_path / "g.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    header_len = int.from_bytes(data[:8], "little")
    broken = bytearray(data)
    broken[8 + header_len // 2] = ord("\x00")  # inside the JSON header
    (tmp_path / "header.safetensors").write_bytes(bytes(broken))
    for name in ("cut.safetensors", "header.safetensors"):
        with pytest.raises(CheckpointError) as info:
            load_generator(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"cannot read checkpoint {tmp_path / name}: corrupt "
                                  f"safetensors file (")
        assert "\n" not in message


def test_vgg19_weights_from_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from esrgan.archs.vgg import VGGFeatureExtractor

    random_vgg = VGGFeatureExtractor("conv2_1", weights="random", seed=3)
    state = {f"features.{k}": v for k, v in random_vgg.features.state_dict().items()}
    save_file(state, tmp_path / "vgg19.safetensors")
    loaded = VGGFeatureExtractor("conv2_1", weights=tmp_path / "vgg19.safetensors")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(x), random_vgg(x))


# --- params / params_ema ----------------------------------------------------------------------


def test_params_option_picks_the_right_weights(tmp_path: Path) -> None:
    ema, raw = tiny(0).state_dict(), tiny(1).state_dict()
    assert not torch.equal(ema["conv_first.weight"], raw["conv_first.weight"])
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "both.pth")
    torch.save({"params": raw}, tmp_path / "raw.pth")
    both, only = tmp_path / "both.pth", tmp_path / "raw.pth"
    assert _equal_states(load_generator_state(both), ema)  # auto: the EMA weights
    assert _equal_states(load_generator_state(both, params="params_ema"), ema)
    assert _equal_states(load_generator_state(both, params="params"), raw)
    assert _equal_states(load_generator(both, params="params").state_dict(), raw)
    assert _equal_states(load_generator_state(only), raw)  # auto without EMA: params
    with pytest.raises(CheckpointError) as info:
        load_generator(only, params="params_ema")
    assert str(info.value) == (f"{only}: no 'params_ema' weights in this checkpoint (it has "
                               f"only params)")
    torch.save(ema, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"no 'params' weights in this checkpoint \(it is "
                                              r"a plain state dict\)$"):
        load_generator_state(tmp_path / "plain.pth", params="params")
    with pytest.raises(ValueError, match="params must be one of auto, params, params_ema"):
        load_generator_state(both, params="ema")


def test_interpolate_cli_params_safetensors_and_bad_output(tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    a_ema, a_raw = tiny(0).state_dict(), tiny(2).state_dict()
    b_ema, b_raw = tiny(1).state_dict(), tiny(3).state_dict()
    torch.save({"params": a_raw, "params_ema": a_ema}, tmp_path / "psnr.pth")
    # The GAN file: BasicSR's two entries in one safetensors file (params.*, params_ema.*).
    save_checkpoint(tmp_path / "gan.safetensors", {"params": b_raw, "params_ema": b_ema})
    a, g = str(tmp_path / "psnr.pth"), str(tmp_path / "gan.safetensors")
    for option, state_a, state_b in [("auto", a_ema, b_ema), ("params_ema", a_ema, b_ema),
                                     ("params", a_raw, b_raw)]:
        out = tmp_path / f"mid_{option}.safetensors"
        assert interpolate_main([a, g, "--alpha", "0.5", "-o", str(out),
                                 "--params", option]) == 0
        assert is_safetensors_file(out)
        assert load_checkpoint(out)["arch"] == tiny().arch
        assert _equal_states(load_generator_state(out),
                             interpolate_state(state_a, state_b, 0.5))
    save_generator(tmp_path / "plain.safetensors", tiny(1))
    p = str(tmp_path / "plain.safetensors")
    capsys.readouterr()
    assert interpolate_main([a, p, "--alpha", "0.5", "-o", str(tmp_path / "x.pth"),
                             "--params", "params_ema"]) == 2
    assert capsys.readouterr().err == (f"error: {p}: no 'params_ema' weights in this "
                                       f"checkpoint (it has only params)\n")
    # An output path through a regular file: said before anything is computed.
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("a file")
    for argv, message in [
        (["--alpha", "0.5", "-o", "afile/x.pth"],
         "error: cannot write afile/x.pth: afile is a file, not a folder\n"),
        (["--alphas", "0:1:0.5", "-o", "afile/sweep"],
         "error: cannot write afile/sweep/interp_alpha0.00.pth: afile is a file, not a folder\n"),
    ]:
        assert interpolate_main([a, g, *argv]) == 2
        captured = capsys.readouterr()
        assert captured.err == message and captured.out == ""

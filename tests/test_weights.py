"""Checkpoints: safe loading, the three published layouts, interpolation and its CLI."""

from __future__ import annotations

import os
import pickle
import re
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
    interpolate_state,
    load_checkpoint,
    load_generator,
    load_generator_state,
    load_into,
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

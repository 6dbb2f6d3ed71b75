"""Export: ONNX checked against PyTorch in onnxruntime (dynamic batch, H and W), and spandrel
(chaiNNer's model loader) reading the generators this suite saves and exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import spandrel
import torch

from esrgan.archs.rrdbnet import build_generator
from esrgan.export import ExportError, check_onnx, main, onnx_bytes
from esrgan.weights import load_generator, save_generator

REPO = Path(__file__).resolve().parents[1]


def generator(seed: int, gc: int = 32, scale: int = 4, **arch) -> torch.nn.Module:
    """The tiny preset's sizes (nf 16, nb 1) with random weights big enough that every layer
    shows in the output (a freshly initialised trunk is nearly the identity)."""
    torch.manual_seed(seed)
    model = build_generator("rrdb", nf=16, nb=1, gc=gc, scale=scale, **arch)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def torch_output(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def test_onnx_export_runs_in_onnxruntime_at_any_size(tmp_path: Path, capsys) -> None:
    weights, out = tmp_path / "G_gan.pth", tmp_path / "onnx" / "G.onnx"
    save_generator(weights, generator(0, gc=8), ema=generator(1, gc=8))
    assert main([str(weights), "--onnx", str(out)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and outp.name == "output"
    assert isinstance(inp.shape[0], str) and all(isinstance(d, str) for d in inp.shape[2:])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["scale"] == "4" and json.loads(meta["esrgan.arch"])["gc"] == 8
    reference = load_generator(weights)  # params_ema, as --params auto
    for shape in ((1, 3, 13, 29), (3, 3, 40, 8)):
        x = torch.rand(*shape)
        (sr,) = session.run(None, {"input": x.numpy()})
        assert sr.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
        np.testing.assert_allclose(sr, torch_output(reference, x), atol=1e-5, rtol=0)
    # the exported weights are params_ema's, not params' (which differ by far more)
    raw = load_generator(weights, params="params")
    x = torch.rand(1, 3, 13, 29)
    (sr,) = session.run(None, {"input": x.numpy()})
    assert np.abs(sr - torch_output(raw, x)).max() > 1e-2


def test_onnx_check_fails_on_another_network() -> None:
    model, other = generator(0, gc=8), generator(1, gc=8)
    data = onnx_bytes(model)
    assert check_onnx(model, data) < 1e-5
    with pytest.raises(ExportError, match="onnxruntime differs from PyTorch"):
        check_onnx(other, data)


@pytest.mark.parametrize("scale", [4, 2])
def test_spandrel_reads_a_generator_saved_by_this_suite(tmp_path: Path, scale: int) -> None:
    weights = tmp_path / "G_gan.pth"
    save_generator(weights, generator(0, scale=scale), ema=generator(1, scale=scale))
    descriptor = spandrel.ModelLoader().load_from_file(str(weights))
    assert descriptor.architecture.id == "ESRGAN" and descriptor.scale == scale
    ours = load_generator(weights)  # auto = params_ema, which spandrel also prefers
    x = torch.rand(2, 3, 11, 17)
    np.testing.assert_allclose(torch_output(descriptor.model.eval(), x), torch_output(ours, x),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["G_x4.safetensors", "G_x4.pth"])
def test_spandrel_export_round_trip(tmp_path: Path, name: str) -> None:
    weights, out = tmp_path / "G.safetensors", tmp_path / name
    save_generator(weights, generator(0), ema=generator(1))  # spandrel cannot read this one
    assert main([str(weights), "--spandrel", str(out), "--params", "params"]) == 0
    descriptor = spandrel.ModelLoader().load_from_file(str(out))
    assert descriptor.architecture.id == "ESRGAN" and descriptor.scale == 4
    x = torch.rand(1, 3, 9, 14)
    raw = load_generator(weights, params="params")
    np.testing.assert_allclose(torch_output(descriptor.model.eval(), x), torch_output(raw, x),
                               atol=1e-6, rtol=0)
    # and the exported file reads back here too, as a plain state dict
    np.testing.assert_allclose(torch_output(load_generator(out), x), torch_output(raw, x),
                               atol=0, rtol=0)


def test_export_refusals_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    weights = tmp_path / "G.pth"
    save_generator(weights, generator(0, gc=8))  # the tiny preset's gc: not spandrel's 32
    out = tmp_path / "G_x4.pth"
    cmd = [sys.executable, "-m", "esrgan.export", str(weights), "--spandrel", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --spandrel: spandrel's ESRGAN fixes the RRDB trunk, no BatchNorm, gc 32 and "
        "beta 0.2; this generator has gc 8 (spandrel: 32) (use --onnx instead)"]
    assert not out.exists()
    save_generator(weights, generator(0, beta=1.0))
    assert main([str(weights), "--spandrel", str(out)]) == 2
    assert not out.exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main([str(weights), "--onnx", str(blocked / "G.onnx")]) == 2
    assert main([str(tmp_path / "missing.pth"), "--onnx", str(tmp_path / "G.onnx")]) == 2
    assert not (tmp_path / "G.onnx").exists()

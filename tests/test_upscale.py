"""Tiled upscaling equals whole-image upscaling; the upscale CLI end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from esrgan.archs.rrdbnet import build_generator, receptive_field
from esrgan.data.io import read_image, to_numpy, to_tensor, write_image
from esrgan.upscale import main as upscale_main
from esrgan.upscale import upscale
from esrgan.weights import save_generator

REPO = Path(__file__).resolve().parents[1]


def tiny(scale: int = 4, trunk: str = "rrdb"):
    torch.manual_seed(0)
    return build_generator(trunk, nf=8, nb=1, gc=4, scale=scale).eval()


@pytest.mark.parametrize("scale,trunk", [(4, "rrdb"), (2, "rrdb"), (4, "resblock")])
def test_tiled_equals_whole_image_when_overlap_covers_receptive_field(scale, trunk) -> None:
    model = tiny(scale, trunk)
    radius = receptive_field(model.arch)
    lr = torch.rand(1, 3, 45, 58)  # not a multiple of the tile: edge tiles are partial
    whole = upscale(model, lr, tile=None)
    assert whole.shape == (1, 3, 45 * scale, 58 * scale)
    tiled = upscale(model, lr, tile=16, overlap=radius)
    assert (tiled - whole).abs().max().item() < 1e-4
    # Too little context: the seams show, so the comparison above can fail.
    seams = upscale(model, lr, tile=16, overlap=2)
    assert (seams - whole).abs().max().item() > 1e-3


def test_upscale_argument_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"expected a \(1, C, H, W\) tensor"):
        upscale(model, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="tile must be >= 1"):
        upscale(model, torch.rand(1, 3, 8, 8), tile=0)


def test_cli_writes_good_images_and_reports_the_corrupt_one(tmp_path: Path) -> None:
    model = tiny()
    save_generator(tmp_path / "g.pth", model)
    inputs = tmp_path / "lr"
    rng = np.random.default_rng(0)
    write_image(inputs / "a.png", rng.random((10, 12, 3), dtype=np.float32))
    write_image(inputs / "c.png", rng.random((7, 9, 3), dtype=np.float32))
    (inputs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    out = tmp_path / "sr"
    proc = subprocess.run(
        [sys.executable, "-m", "esrgan.upscale", "--weights", str(tmp_path / "g.pth"),
         "--input", str(inputs), "--output", str(out), "--tile", "4", "--tile-overlap", "20"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.png" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    sr = read_image(out / "a.png")
    assert sr.shape == (40, 48, 3)
    expected = upscale(model, to_tensor(read_image(inputs / "a.png")).unsqueeze(0))
    expected = np.round(to_numpy(expected.clamp(0, 1)) * 255) / 255
    assert np.abs(sr - expected).max() <= 1 / 255 + 1e-6


def test_cli_bad_weights_is_one_error_line(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    code = upscale_main(["--weights", str(tmp_path / "none.pth"), "--input",
                         str(tmp_path / "x.png"), "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint file not found") and err.count("\n") == 1

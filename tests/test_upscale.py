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
from esrgan.upscale import compile_generator, to_uint8, upscale, upscale_to_uint8
from esrgan.upscale import main as upscale_main
from esrgan.weights import save_checkpoint, save_generator

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
        cwd=REPO, capture_output=True, text=True, timeout=900)
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


# --- bf16 autocast and torch.compile ------------------------------------------------------


def image_like(model, lr: torch.Tensor):
    """Fold an affine map into conv_last so that ``model(lr)`` has image-like values.

    A randomly initialised generator outputs values within about +-0.1 of 0, so clamping to
    [0, 1] would hide most of the bf16 error; a trained net's output spans [0, 1]. Scaling
    conv_last (per channel: mean 0.45, std 0.22) scales its error the same way.
    """
    with torch.no_grad():
        y = model(lr)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        k = 0.22 / std
        model.conv_last.weight.mul_(k.view(-1, 1, 1, 1))
        model.conv_last.bias.sub_(mean).mul_(k).add_(0.45)
    return model


def small(lr: torch.Tensor):
    torch.manual_seed(0)
    return image_like(build_generator("rrdb", nf=16, nb=2, gc=8).eval(), lr)


def saved_model(tmp_path: Path, shape: tuple[int, int], seed: int, weights: str = "g.pth"
                ) -> tuple[torch.Tensor, torch.nn.Module]:
    """One random LR image in tmp/lr/a.png and a small generator saved as tmp/<weights>."""
    rng = np.random.default_rng(seed)
    write_image(tmp_path / "lr" / "a.png", rng.random((*shape, 3), dtype=np.float32))
    lr = to_tensor(read_image(tmp_path / "lr" / "a.png")).unsqueeze(0)
    model = small(lr)
    save_generator(tmp_path / weights, model)
    return lr, model


def levels(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round()


def test_bf16_is_close_to_fp32_but_not_identical() -> None:
    torch.manual_seed(1)
    lr = torch.rand(1, 3, 24, 30)
    model = small(lr)
    fp32 = upscale(model, lr)
    bf16 = upscale(model, lr, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    # Measured on this net (seeds 0-9, CPU): max |bf16 - fp32| = 2.7 to 4.9 8-bit levels,
    # 3.4 for this seed; bf16 keeps 8 significant bits, so a few levels of an output near 0.5
    # after 2 RRDBs is expected. The bound leaves 2x room for other kernels (GPU, other CPUs).
    assert (bf16 - fp32).abs().max().item() * 255 < 8
    assert (levels(bf16) - levels(fp32)).abs().max().item() <= 8
    # bf16 really ran: a fp32 pass would be bit-identical, a bf16 one changes many pixels.
    assert (levels(bf16) != levels(fp32)).float().mean().item() > 0.05


def test_tiled_bf16_equals_whole_image_bf16() -> None:
    torch.manual_seed(2)
    lr = torch.rand(1, 3, 29, 37)  # partial edge tiles
    model = small(lr)
    whole = upscale(model, lr, precision="bf16")
    tiled = upscale(model, lr, tile=12, overlap=receptive_field(model.arch), precision="bf16")
    # Measured 0.0 on the CPU: each output pixel is computed the same way whatever the tile
    # size. A bound of 1 level (against 3-5 levels of bf16-vs-fp32 error) leaves room for
    # kernels chosen by input shape; a tiling mistake (too little context) shows as more.
    assert (tiled - whole).abs().max().item() * 255 < 1
    seams = upscale(model, lr, tile=12, overlap=1, precision="bf16")
    assert (seams - whole).abs().max().item() * 255 > 1


def test_bad_precision_and_compile_mode_are_one_line_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16, got 'fp16'"):
        upscale(model, torch.rand(1, 3, 8, 8), precision="fp16")
    assert compile_generator(model, "off") is model
    with pytest.raises(ValueError) as info:
        compile_generator(model, "fast")
    assert str(info.value) == ("compile must be one of off, default, reduce-overhead, "
                               "max-autotune, got 'fast'")


def test_cli_bf16_writes_the_bf16_image(tmp_path: Path) -> None:
    lr, model = saved_model(tmp_path, (11, 13), 3)
    code = upscale_main(["--weights", str(tmp_path / "g.pth"), "--input", str(tmp_path / "lr"),
                         "--output", str(tmp_path / "sr"), "--tile", "6", "--tile-overlap", "40",
                         "--precision", "bf16"])
    assert code == 0
    sr = read_image(tmp_path / "sr" / "a.png")
    assert sr.shape == (44, 52, 3)
    expected = to_numpy(levels(upscale(model, lr, precision="bf16"))) / 255
    assert np.abs(sr - expected).max() <= 1 / 255 + 1e-6
    fp32 = to_numpy(levels(upscale(model, lr))) / 255
    assert np.abs(sr - fp32).max() > 0.5 / 255  # it is the bf16 image, not the fp32 one


@pytest.mark.parametrize("flag,value", [("--precision", "fp16"), ("--compile", "max-autotune")])
def test_cli_bad_precision_or_compile_is_argparse_error(tmp_path: Path, capsys, flag,
                                                        value) -> None:
    with pytest.raises(SystemExit) as info:
        upscale_main(["--weights", "g.pth", "--input", str(tmp_path), "--output",
                      str(tmp_path / "out"), flag, value])
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {flag}: invalid choice: '{value}'" in errors[0]


@pytest.mark.slow
def test_compiled_generator_matches_eager_and_compiles_once_for_all_tile_sizes() -> None:
    from torch._dynamo.utils import counters

    torch.manual_seed(4)
    lr = torch.rand(1, 3, 29, 37)
    model = small(lr)
    tile, overlap = 8, 3
    shapes = {(min(y + tile + overlap, 29) - max(y - overlap, 0),
               min(x + tile + overlap, 37) - max(x - overlap, 0))
              for y in range(0, 29, tile) for x in range(0, 37, tile)}
    assert len(shapes) == 9  # first, interior and last rows and columns
    eager = upscale(model, lr, tile=tile, overlap=overlap)
    compiled = compile_generator(model, "default")
    assert compiled.scale == model.scale
    torch._dynamo.reset()
    counters.clear()
    tiled = upscale(compiled, lr, tile=tile, overlap=overlap)
    # dynamic=True: a few shape-generic graphs for all sizes (3 with torch 2.14: the first,
    # square tile ties H to W by duck sizing, and the conv's shape function guards on a size
    # threshold); static shapes would compile one per size, 9 here.
    fp32_graphs = counters["stats"]["unique_graphs"]
    assert 1 <= fp32_graphs <= 4 < len(shapes)
    assert (tiled - eager).abs().max().item() < 1e-4
    bf16 = upscale(compiled, lr, tile=tile, overlap=overlap, precision="bf16")
    assert counters["stats"]["unique_graphs"] <= 2 * fp32_graphs  # autocast state: new graph
    # Inductor fuses the pointwise ops and keeps their intermediates in fp32, so compiled
    # bf16 rounds differently from eager bf16 (about 3 levels apart here): both are held to
    # the bf16-vs-fp32 bound of test_bf16_is_close_to_fp32_but_not_identical.
    assert 0.1 < (bf16 - eager).abs().max().item() * 255 < 8  # the compiled graph ran in bf16


# --- the uint8 output buffer (bounded memory) ----------------------------------------------


@pytest.mark.parametrize("tile,overlap", [(None, 0), (8, 3)])
def test_uint8_tiles_equal_clamped_rounded_float_output(tile, overlap) -> None:
    torch.manual_seed(5)
    lr = torch.rand(1, 3, 19, 26)  # partial edge tiles
    model = small(lr)
    floats = upscale(model, lr, tile=tile, overlap=overlap)
    u8 = upscale_to_uint8(model, lr, tile=tile, overlap=overlap)
    assert u8.dtype == np.uint8 and u8.shape == (76, 104, 3)
    # What the CLI wrote before: numpy's clip(round(x * 255)) of the clamped float image.
    expected = np.clip(np.round(to_numpy(floats.clamp(0, 1)) * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(u8, expected)
    np.testing.assert_array_equal(u8, to_uint8(floats).numpy())
    assert len(np.unique(u8)) > 100  # image-like values, and some to clamp on both sides:
    assert (floats < 0).any() and (floats > 1).any()


def test_cli_png_is_exactly_the_uint8_output(tmp_path: Path) -> None:
    lr, model = saved_model(tmp_path, (13, 11), 4)
    assert upscale_main(["--weights", str(tmp_path / "g.pth"), "--input", str(tmp_path / "lr"),
                         "--output", str(tmp_path / "sr"), "--tile", "5"]) == 0
    from PIL import Image

    with Image.open(tmp_path / "sr" / "a.png") as im:
        written = np.asarray(im)
    np.testing.assert_array_equal(written, upscale_to_uint8(model, lr, tile=5))


# --- output checked before any work ----------------------------------------------------------


def _three_inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_image(tmp_path / "lr" / f"{name}.png", rng.random((6, 7, 3), dtype=np.float32))
    save_generator(tmp_path / "g.pth", tiny())
    return tmp_path / "lr"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esrgan.upscale", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_output_under_a_file_is_one_error_before_any_image(tmp_path: Path) -> None:
    inputs = _three_inputs(tmp_path)
    (tmp_path / "afile").write_text("a file")
    out = tmp_path / "afile" / "sr"
    proc = _cli("--weights", str(tmp_path / "g.pth"), "--input", str(inputs), "--output",
                str(out))
    assert proc.returncode == 2
    # One line; no progress bar, no "N of 3 images failed": nothing was computed.
    assert proc.stderr == (f"error: cannot write into {out}: {tmp_path / 'afile'} is a file, "
                           f"not a folder\n")


def test_unwritable_output_folder_is_one_error_before_any_image(tmp_path: Path,
                                                                unwritable_dirs) -> None:
    inputs = _three_inputs(tmp_path)
    for folder in unwritable_dirs.values():
        for out, message in [(folder, f"error: cannot write into {folder}: folder {folder} is "
                                      f"not writable ("),
                             (folder / "sr", f"error: cannot write into {folder / 'sr'}: cannot "
                                             f"create folder {folder / 'sr'} (")]:
            proc = _cli("--weights", str(tmp_path / "g.pth"), "--input", str(inputs),
                        "--output", str(out))
            assert proc.returncode == 2
            assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, \
                proc.stderr


# --- weights as users have them: safetensors, BasicSR params / params_ema ---------------------


def test_cli_takes_safetensors_and_chooses_params(tmp_path: Path, capsys) -> None:
    lr, model = saved_model(tmp_path, (9, 10), 6, "g.safetensors")

    def run(weights: Path, *extra: str) -> np.ndarray | None:
        out = tmp_path / f"sr_{weights.stem}_{'_'.join(extra)}"
        if upscale_main(["--weights", str(weights), "--input", str(tmp_path / "lr"),
                         "--output", str(out), *extra]) != 0:
            return None
        return read_image(out / "a.png")

    expected = to_numpy(to_uint8(upscale(model, lr)).permute(2, 0, 1).float()) / 255
    np.testing.assert_array_equal(run(tmp_path / "g.safetensors"), expected)

    # A BasicSR file whose params (the raw weights) and params_ema differ.
    raw = small(lr)
    with torch.no_grad():
        for p in raw.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "basicsr.pth", {"params": raw.state_dict(),
                                               "params_ema": model.state_dict()})
    ema_out = to_numpy(to_uint8(upscale(model, lr)).permute(2, 0, 1).float()) / 255
    raw_out = to_numpy(to_uint8(upscale(raw, lr)).permute(2, 0, 1).float()) / 255
    assert np.abs(ema_out - raw_out).max() > 0.01
    np.testing.assert_array_equal(run(tmp_path / "basicsr.pth"), ema_out)
    np.testing.assert_array_equal(run(tmp_path / "basicsr.pth", "--params", "params_ema"),
                                  ema_out)
    np.testing.assert_array_equal(run(tmp_path / "basicsr.pth", "--params", "params"), raw_out)
    capsys.readouterr()
    assert run(tmp_path / "g.safetensors", "--params", "params_ema") is None
    assert capsys.readouterr().err == (f"error: {tmp_path / 'g.safetensors'}: no 'params_ema' "
                                       f"weights in this checkpoint (it has only params)\n")


def test_cli_shows_progress_and_says_where_the_output_went(tmp_path: Path) -> None:
    saved_model(tmp_path, (13, 11), 4)
    done = _cli("--weights", str(tmp_path / "g.pth"), "--input", str(tmp_path / "lr" / "a.png"),
                "--output", str(tmp_path / "sr"))
    assert done.returncode == 0, done.stderr
    assert "images: 100%" in done.stderr  # a bar even for one image
    assert done.stdout.strip().splitlines()[-1] == f"wrote 1 image(s) to {tmp_path}/sr/a.png"

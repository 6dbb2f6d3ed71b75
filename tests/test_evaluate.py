"""python -m esrgan.evaluate: end to end on bicubic Set5, pairing rules, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esrgan.data.imresize import imresize
from esrgan.data.io import read_image, write_image
from esrgan.evaluate import EvaluateError, main, pair_images

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "esrgan.evaluate", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900,
    )


@pytest.fixture(scope="module")
def bicubic_set5(shared_dir, tmp_path_factory) -> Path:
    """Bicubic x4 SR of the Set5 LR files, saved as PNG with various SR suffixes."""
    out = tmp_path_factory.mktemp("bicubic") / "sr"
    suffixes = ["_SR", "x4", "_x4_SR", "", "-rlt"]
    lr_dir = shared_dir / "data" / "Set5" / "LR_bicubic" / "X4"
    for suffix, lr_path in zip(suffixes, sorted(lr_dir.glob("*.png")), strict=True):
        stem = lr_path.stem.removesuffix("x4")
        write_image(out / f"{stem}{suffix}.png", imresize(read_image(lr_path), scale=4))
    return out


def test_cli_end_to_end_on_bicubic_set5(shared_dir, bicubic_set5, tmp_path):
    csv = tmp_path / "scores.csv"
    hr = shared_dir / "data" / "Set5" / "HR"
    proc = _run_cli("--sr", str(bicubic_set5), "--hr", str(hr), "--metrics", "psnr,ssim,rmse",
                    "--csv", str(csv))
    assert proc.returncode == 0, proc.stderr
    assert "Y channel" in proc.stdout and "PSNR-Y (dB)" in proc.stdout
    assert "evaluate" in proc.stderr  # the tqdm bar
    table = pd.read_csv(csv, index_col="image")
    assert list(table.index) == ["baby", "bird", "butterfly", "head", "woman", "mean",
                                 "rmse_pooled"]
    assert table.loc["mean", "psnr"] == pytest.approx(28.431, abs=0.005)
    assert table.loc["mean", "ssim"] == pytest.approx(0.8113, abs=0.0005)
    rmse = table["rmse"].iloc[:5]
    assert table.loc["rmse_pooled", "rmse"] == pytest.approx(np.sqrt(np.mean(rmse**2)))
    assert np.isnan(table.loc["rmse_pooled", "psnr"])


def test_cli_errors_are_one_line_exit_2(tmp_path):
    proc = _run_cli("--sr", str(tmp_path / "nope"), "--hr", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def _folder(path: Path, names: list[str], size: int = 32) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(path / name, np.full((size, size, 3), 0.5))
    return path


def test_pairing_rules(tmp_path):
    hr = _folder(tmp_path / "hr", ["man.png", "manga.png", "img_001.png"])
    sr = _folder(tmp_path / "sr", ["man_SR.png", "manga.png", "img_001x4.png"])
    pairs = pair_images(sr, hr)
    assert [(name, s.name, h.name) for name, s, h in pairs] == [
        ("img_001", "img_001x4.png", "img_001.png"),
        ("man", "man_SR.png", "man.png"),
        ("manga", "manga.png", "manga.png"),
    ]
    _folder(sr, ["manga_rlt.png"])
    with pytest.raises(EvaluateError, match="both match"):
        pair_images(sr, hr)


def test_unmatched_files_are_named(tmp_path):
    hr = _folder(tmp_path / "hr", ["a.png", "b.png"])
    sr = _folder(tmp_path / "sr", ["a.png", "zzz.png"])
    with pytest.raises(EvaluateError, match=r"zzz\.png matches no HR image"):
        pair_images(sr, hr)
    sr2 = _folder(tmp_path / "sr2", ["a.png"])
    with pytest.raises(EvaluateError, match=r"b\.png .* have no SR file"):
        pair_images(sr2, hr)


def test_main_reports_bad_input(tmp_path, capsys):
    hr = _folder(tmp_path / "hr", ["a.png"], size=32)
    sr = _folder(tmp_path / "sr", ["a.png"], size=40)
    assert main(["--sr", str(sr), "--hr", str(hr), "--metrics", "psnr,bogus"]) == 2
    assert "unknown metric(s) bogus" in capsys.readouterr().err
    assert main(["--sr", str(sr), "--hr", str(hr)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "40x40" in err and "32x32" in err
    # NIQE needs 96x96 blocks: the error names the image and the metric.
    _folder(sr, ["a.png"], size=32)
    assert main(["--sr", str(sr), "--hr", str(hr), "--metrics", "niqe"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: a: metric niqe")  # after the progress bar


def test_main_default_csv_beside_sr_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "hr").mkdir()
    (tmp_path / "sr").mkdir()
    img = np.round(rng.uniform(0.1, 0.9, (40, 40, 3)) * 255) / 255
    write_image(tmp_path / "hr" / "a.png", img)
    write_image(tmp_path / "sr" / "ax4.png", img + 5 / 255)  # 5 grey levels everywhere
    assert main(["--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"),
                 "--metrics", "psnr_rgb,ssim_rgb"]) == 0
    out = capsys.readouterr().out
    assert "RGB: psnr_rgb, ssim_rgb" in out
    table = pd.read_csv(tmp_path / "sr_metrics.csv", index_col="image")
    assert table.loc["a", "psnr_rgb"] == pytest.approx(20 * np.log10(255 / 5), abs=1e-6)


# ---------------------------------------------------------------- no-reference, --crop


def test_niqe_without_hr_reproduces_matlab_whole_image(shared_dir, tmp_path):
    from esrgan.metrics import niqe

    baboon = shared_dir / "data" / "reference" / "baboon.png"
    sr = tmp_path / "sr"
    sr.mkdir()
    (sr / "baboon.png").write_bytes(baboon.read_bytes())
    csv = tmp_path / "niqe.csv"
    proc = _run_cli("--sr", str(sr), "--metrics", "niqe", "--crop", "0", "--csv", str(csv))
    assert proc.returncode == 0, proc.stderr
    assert "no reference, 0 px border cropped" in proc.stdout
    table = pd.read_csv(csv, index_col="image")
    library = niqe(read_image(baboon), crop_border=0)
    assert table.loc["baboon", "niqe"] == library
    assert library == pytest.approx(5.72957338, abs=1e-3)  # MATLAB R2021a niqe(img)
    # The default crop is the scale (PIRM's 4-pixel shave): another number.
    assert main(["--sr", str(sr), "--metrics", "niqe", "--csv", str(tmp_path / "d.csv")]) == 0
    shaved = pd.read_csv(tmp_path / "d.csv", index_col="image").loc["baboon", "niqe"]
    assert shaved == pytest.approx(niqe(read_image(baboon), crop_border=4), abs=1e-9)
    assert abs(shaved - library) > 1e-3


def test_reference_metric_without_hr_is_one_error_line(tmp_path, capsys):
    sr = _folder(tmp_path / "sr", ["a.png"], size=100)
    assert main(["--sr", str(sr), "--metrics", "niqe,psnr,lpips"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: metric(s) psnr, lpips compare with the HR image: give --hr HR_DIR "
                   "(without it only niqe, ma, pi can be computed)\n")
    assert not (tmp_path / "sr_metrics.csv").exists()


def test_mod_crop_only_with_hr(tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = np.round(rng.uniform(0.1, 0.9, (41, 43, 3)) * 255) / 255
    write_image(tmp_path / "hr" / "a.png", img[:40, :40])
    write_image(tmp_path / "sr" / "a.png", img)  # 41x43: mod-cropped to 40x40 to pair
    assert main(["--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"),
                 "--metrics", "psnr_rgb", "--crop", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("x4, mod-cropped to 4, 0 px border cropped")
    assert pd.read_csv(tmp_path / "sr_metrics.csv", index_col="image").loc["a", "psnr_rgb"] \
        == np.inf
    assert main(["--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"), "--crop", "-1"]) \
        == 2
    assert capsys.readouterr().err == "error: --crop must be >= 0, got -1\n"


# ---------------------------------------------------------------- unwritable CSV


def test_csv_under_a_file_is_one_error_before_scoring(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    hr = _folder(tmp_path / "hr", ["a.png", "b.png"])
    sr = _folder(tmp_path / "sr", ["a.png", "b.png"])
    Path("afile").write_text("a file")
    assert main(["--sr", str(sr), "--hr", str(hr), "--csv", "afile/m.csv"]) == 2
    err = capsys.readouterr().err
    # One line, and no progress bar: nothing was scored.
    assert err == "error: cannot write afile/m.csv: afile is a file, not a folder\n"


def test_csv_in_an_unwritable_folder_is_one_error_before_scoring(tmp_path, unwritable_dirs):
    hr = _folder(tmp_path / "hr", ["a.png"])
    sr = _folder(tmp_path / "sr", ["a.png"])
    for folder in unwritable_dirs.values():
        csv = folder / "m.csv"
        proc = _run_cli("--sr", str(sr), "--hr", str(hr), "--csv", str(csv))
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"error: cannot write {csv}: folder {folder} is not "
                                      f"writable (")
        assert proc.stderr.count("\n") == 1 and "evaluate" not in proc.stderr, proc.stderr

"""The decoded training-data cache: build, resume, errors, and samples equal to the folder's."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from esrgan.data import (
    DataError,
    ImageReadError,
    PatchDataset,
    SkippedImageWarning,
    ValidationDataset,
    build_cache,
    is_cache,
    load_cached_pairs,
    load_pairs,
    load_training_pairs,
    make_loader,
    make_lr,
    mod_crop,
    write_image,
)
from esrgan.data.cache import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = {"a": (70, 90), "b": (66, 81), "c": (80, 64)}  # (h, w); not all multiples of 4


def _smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random content plus noise on the 8-bit grid (a PNG round trip is exact)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * xx[..., None] + 4 * yy[..., None] + rng.random(3) * 6)
    img = np.clip(base + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
    return (np.round(img * 255) / 255).astype(np.float32)


@pytest.fixture()
def hr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        write_image(folder / f"{name}.png", _smooth_image(h, w, i))
        # Sources older than the cache files, as in real use (file clocks can be coarse).
        os.utime(folder / f"{name}.png", ns=(time.time_ns() - 10**10,) * 2)
    return folder


def _npy_files(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.glob("*.npy"))}


def _samples(pairs, n: int = 12) -> list[dict[str, torch.Tensor]]:
    ds = PatchDataset(pairs, patch_size=32, scale=4, augment=True, seed=7, length=40)
    return [ds[i] for i in range(0, 40, 40 // n)]


def test_cache_samples_bit_identical_to_folder(hr_dir: Path, tmp_path: Path) -> None:
    cache = build_cache(hr_dir, tmp_path / "cache", scale=4, progress=False)
    assert is_cache(cache) and not is_cache(hr_dir)
    ram = load_pairs(hr_dir, scale=4)
    mapped = load_cached_pairs(cache, scale=4)
    assert [p.name for p in mapped] == sorted(SIZES)
    for r, m in zip(ram, mapped, strict=True):
        assert isinstance(m.hr, np.memmap) and m.hr.dtype == np.uint8 and m.lr.dtype == np.uint8
        assert m.hr.shape == mod_crop(r.hr, 4).shape and m.lr.shape == r.lr.shape
    for a, b in zip(_samples(ram), _samples(mapped), strict=True):
        assert a["hr"].dtype == b["hr"].dtype == torch.float32
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    # Whole images too, and through a DataLoader with a worker process.
    for a, b in zip(ValidationDataset(ram), ValidationDataset(mapped), strict=True):
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    ds_ram = PatchDataset(ram, 32, 4, seed=3, length=8)
    ds_map = PatchDataset(mapped, 32, 4, seed=3, length=8)
    batch_ram = next(iter(make_loader(ds_ram, batch_size=4)))
    batch_map = next(iter(make_loader(ds_map, batch_size=4, num_workers=1)))
    assert torch.equal(batch_ram["hr"], batch_map["hr"])
    assert torch.equal(batch_ram["lr"], batch_map["lr"])


def test_cache_with_lr_dir_uses_the_lr_files(hr_dir: Path, tmp_path: Path) -> None:
    lr_dir = tmp_path / "lr"
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        # An LR that is not make_lr's, so using the wrong one would show.
        lr = make_lr(mod_crop(_smooth_image(h, w, i), 4), 4)
        write_image(lr_dir / f"{name}x4.png", 1.0 - lr)
    cache = build_cache(hr_dir, tmp_path / "cache", lr_dir=lr_dir, progress=False)
    ram = load_pairs(hr_dir, lr_dir, scale=4)
    mapped = load_training_pairs(cache, lr_dir=lr_dir, scale=4)
    for r, m in zip(ram, mapped, strict=True):
        np.testing.assert_array_equal(np.asarray(m.lr, dtype=np.float32) / 255.0, r.lr)
    with pytest.raises(DataError, match="LR from"):
        load_training_pairs(cache, lr_dir=hr_dir, scale=4)
    # A folder that is not a cache goes to load_pairs.
    folder_pairs = load_training_pairs(hr_dir, lr_dir=lr_dir, scale=4)
    assert isinstance(folder_pairs[0].hr, np.ndarray) and folder_pairs[0].hr.dtype == np.float32


def test_pickled_pairs_reopen_the_map(hr_dir: Path, tmp_path: Path) -> None:
    """Spawned DataLoader workers get the pairs pickled: the mapped files must not be copied."""
    pair = load_cached_pairs(build_cache(hr_dir, tmp_path / "c", progress=False), 4)[0]
    blob = pickle.dumps(pair)
    assert len(blob) < 1000 < pair.hr.nbytes
    back = pickle.loads(blob)
    assert isinstance(back.hr, np.memmap)
    np.testing.assert_array_equal(back.hr, pair.hr)
    crop = pickle.loads(pickle.dumps(pair.hr[2:5, 3:9]))  # a slice pickles its own values
    np.testing.assert_array_equal(crop, pair.hr[2:5, 3:9])


def test_interrupted_build_resumes_to_the_same_cache(hr_dir: Path, tmp_path: Path) -> None:
    ref = _npy_files(build_cache(hr_dir, tmp_path / "ref", progress=False))
    cache = build_cache(hr_dir, tmp_path / "cache", progress=False)
    # What a killed build leaves: no index, a stray temp file, a truncated and a missing file.
    (cache / "cache.json").unlink()
    (cache / ".b.hr.npy.123.abcd.tmp").write_bytes(b"half")
    data = (cache / "a.hr.npy").read_bytes()
    (cache / "a.hr.npy").write_bytes(data[: len(data) // 2])
    (cache / "c.lr.npy").unlink()
    assert not is_cache(cache)
    with pytest.raises(DataError, match="cache.json"):
        load_cached_pairs(cache, 4)
    untouched = (cache / "b.hr.npy").stat().st_mtime_ns

    build_cache(hr_dir, cache, progress=False)
    assert _npy_files(cache) == ref
    assert not list(cache.glob(".*"))  # no temp files, no build-in-progress marker
    assert (cache / "b.hr.npy").stat().st_mtime_ns == untouched  # valid entries are kept
    assert len(load_cached_pairs(cache, 4)) == len(SIZES)


def test_changed_source_is_rebuilt_and_other_settings_refused(
    hr_dir: Path, tmp_path: Path
) -> None:
    cache = build_cache(hr_dir, tmp_path / "cache", progress=False)
    new = _smooth_image(*SIZES["a"], seed=99)
    write_image(hr_dir / "a.png", new)
    build_cache(hr_dir, cache, progress=False)
    np.testing.assert_array_equal(np.load(cache / "a.hr.npy"),
                                  np.round(mod_crop(new, 4) * 255).astype(np.uint8))
    with pytest.raises(DataError, match="scale 4"):
        build_cache(hr_dir, cache, scale=2, progress=False)


def test_unreadable_image_skipped_or_raised(hr_dir: Path, tmp_path: Path) -> None:
    (hr_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(SkippedImageWarning, match="bad.png"):
        cache = build_cache(hr_dir, tmp_path / "cache", on_error="skip", progress=False)
    assert [p.name for p in load_cached_pairs(cache, 4)] == sorted(SIZES)
    assert json.loads((cache / "cache.json").read_text())["skipped"] == ["bad.png"]
    with pytest.raises(ImageReadError, match="bad.png"):
        build_cache(hr_dir, tmp_path / "strict", on_error="raise", progress=False)
    assert not is_cache(tmp_path / "strict")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_npy", r"b\.lr\.npy: missing cache file"),
        ("truncated_npy", r"a\.hr\.npy: corrupt cache file"),
        ("wrong_shape", r"c\.hr\.npy: .*shape"),
        ("corrupt_index", r"cache\.json: corrupt cache index"),
        ("wrong_scale", r"cache\.json: cache built for scale 4, not 2"),
    ],
)
def test_bad_cache_names_the_file(hr_dir: Path, tmp_path: Path, damage: str,
                                  message: str) -> None:
    cache = build_cache(hr_dir, tmp_path / "cache", progress=False)
    scale = 4
    if damage == "missing_npy":
        (cache / "b.lr.npy").unlink()
    elif damage == "truncated_npy":
        data = (cache / "a.hr.npy").read_bytes()
        (cache / "a.hr.npy").write_bytes(data[:200])
    elif damage == "wrong_shape":
        np.save(cache / "c.hr.npy", np.zeros((8, 8, 3), np.uint8))
    elif damage == "corrupt_index":
        (cache / "cache.json").write_text('{"format": "esrgan-decoded-cache", "vers')
    else:
        scale = 2
    with pytest.raises(DataError, match=message):
        load_cached_pairs(cache, scale)


def test_cli_builds_and_explains(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main([str(hr_dir), str(out), "--scale", "4", "--quiet"]) == 0
    assert len(load_cached_pairs(out, 4)) == len(SIZES)
    proc = subprocess.run(
        [sys.executable, "-m", "esrgan.data.cache", str(hr_dir), str(out), "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 images" in proc.stdout and "load_training_pairs" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([str(tmp_path / "nowhere"), str(tmp_path / "x"), "--quiet"]) == 1

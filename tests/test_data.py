"""Data loading: image I/O, HR/LR pairing, the LR cache, training patches, the embedded set."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esrgan.data import (
    EMBEDDED_SPLIT,
    DataError,
    ImagePair,
    ImageReadError,
    PatchDataset,
    SkippedImageWarning,
    StepSampler,
    ValidationDataset,
    embedded_pairs,
    list_images,
    load_pairs,
    make_loader,
    make_lr,
    mod_crop,
    read_image,
    to_numpy,
    to_tensor,
    write_image,
)


def _rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random image on the 8-bit grid (so a PNG round trip is exact)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32)


def _write_pair(hr_dir: Path, lr_dir: Path, hr_name: str, lr_name: str, h: int, w: int,
                scale: int = 4, seed: int = 0) -> None:
    hr = _rand_image(h, w, seed)
    write_image(hr_dir / hr_name, hr)
    write_image(lr_dir / lr_name, make_lr(mod_crop(hr, scale), scale))


# ---------------------------------------------------------------- io

def test_write_read_roundtrip_and_tensor_conversion(tmp_path: Path) -> None:
    img = _rand_image(7, 5)
    write_image(tmp_path / "sub" / "x.png", img)  # creates the parent folder
    back = read_image(tmp_path / "sub" / "x.png")
    assert back.dtype == np.float32 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, img)
    t = to_tensor(back)
    assert t.shape == (3, 7, 5) and t.dtype == torch.float32
    np.testing.assert_array_equal(to_numpy(t), back)
    np.testing.assert_array_equal(to_numpy(t[None]), back)
    # Out-of-range values are clipped, in-between values rounded to the nearest grey level.
    write_image(tmp_path / "c.png", np.array([[[-0.5, 1.7, 0.5 / 255 + 1e-4]]], np.float32))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[[0, 255, 1]]])
    assert not list(tmp_path.glob("**/*.tmp"))


def test_read_modes_gray16_rgba(tmp_path: Path) -> None:
    g16 = np.array([[0, 1, 65535], [256, 30000, 12345]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (2, 3, 3)
    np.testing.assert_allclose(img[:, :, 1], g16 / 65535.0, atol=1e-7)  # all 16 bits kept
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[..., 0], 200 / 255.0)  # alpha dropped, not composited


def test_list_images_sorted_filtered_and_errors(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    with pytest.raises(DataError, match="nothere.*does not exist"):
        list_images(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files.*empty"):
        list_images(tmp_path / "empty")


def test_corrupt_and_fake_images_name_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "good.png", _rand_image(64, 64))
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match=r"trunc\.png: not a readable image \(.*truncated"):
        read_image(tmp_path / "trunc.png")
    with pytest.raises(ImageReadError, match=r"notes\.png: not a readable image \(cannot identify"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match=r"missing\.png: no such file"):
        read_image(tmp_path / "missing.png")
    # The messages are one line.
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "trunc.png")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- pairs from ../shared

def test_set5_pairs_with_x4_names(shared_dir: Path) -> None:
    d = shared_dir / "data" / "Set5"
    pairs = load_pairs(d / "HR", d / "LR_bicubic" / "X4", scale=4)
    assert [p.name for p in pairs] == ["baby", "bird", "butterfly", "head", "woman"]
    for p in pairs:
        assert p.hr.dtype == np.float32 and p.lr.dtype == np.float32
        assert p.hr.shape[0] == 4 * p.lr.shape[0] and p.hr.shape[1] == 4 * p.lr.shape[1]
        assert 0.0 <= p.hr.min() and p.hr.max() <= 1.0
    baby = pairs[0]
    np.testing.assert_array_equal(baby.lr, read_image(d / "LR_bicubic" / "X4" / "babyx4.png"))
    # On-the-fly LR reproduces the released files (MATLAB bicubic, uint8): ~0.1 grey levels.
    made = load_pairs(d / "HR", scale=4)
    diff = np.concatenate([np.abs(a.lr - b.lr).ravel() for a, b in zip(made, pairs, strict=True)])
    assert diff.mean() * 255 < 0.2
    assert (diff * 255 > 1.5).mean() < 0.004


def test_set14_modcrop_and_grayscale(shared_dir: Path) -> None:
    d = shared_dir / "data" / "Set14"
    assert read_image(d / "HR" / "comic.png").shape == (361, 250, 3)
    assert Image.open(d / "HR" / "bridge.png").mode == "L"
    pairs = {p.name: p for p in load_pairs(d / "HR", d / "LR_bicubic" / "X4", scale=4)}
    assert len(pairs) == 14
    assert pairs["comic"].hr.shape == (360, 248, 3)  # 250x361 -> 248x360
    assert pairs["comic"].lr.shape == (90, 62, 3)
    bridge = pairs["bridge"].hr
    assert bridge.shape[2] == 3
    np.testing.assert_array_equal(bridge[..., 0], bridge[..., 1])
    np.testing.assert_array_equal(bridge[..., 0], bridge[..., 2])


# ---------------------------------------------------------------- pairing rules and errors

def test_pairing_by_suffix_or_same_name(tmp_path: Path) -> None:
    hr, lr = tmp_path / "HR", tmp_path / "LR"
    _write_pair(hr, lr, "img_001.png", "img_001x4.png", 17, 21, seed=1)  # BSD100 layout
    _write_pair(hr, lr, "zebra.png", "zebra.png", 16, 16, seed=2)  # same names
    pairs = load_pairs(hr, lr, scale=4)
    assert [p.name for p in pairs] == ["img_001", "zebra"]
    assert pairs[0].hr.shape == (16, 20, 3) and pairs[0].lr.shape == (4, 5, 3)


def test_pair_errors_name_the_files(tmp_path: Path) -> None:
    hr, lr = tmp_path / "HR", tmp_path / "LR"
    _write_pair(hr, lr, "a.png", "ax4.png", 16, 16)
    write_image(hr / "lonely.png", _rand_image(16, 16))
    with pytest.raises(DataError, match=r"HR .*lonely\.png has no LR partner.*lonelyx4"):
        load_pairs(hr, lr)
    (hr / "lonely.png").unlink()
    write_image(lr / "ax4.png", _rand_image(5, 4))  # should be 4x4
    with pytest.raises(DataError, match=r"LR .*ax4\.png is 4x5 but HR .*a\.png.*needs 4x4"):
        load_pairs(hr, lr, scale=4)
    with pytest.raises(DataError, match=r"nothere does not exist"):
        load_pairs(tmp_path / "nothere", lr)
    with pytest.raises(DataError, match=r"nothere does not exist"):
        load_pairs(hr, tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image files.*empty"):
        load_pairs(tmp_path / "empty")


def test_bad_file_raise_for_eval_skip_for_training(tmp_path: Path) -> None:
    hr, lr = tmp_path / "HR", tmp_path / "LR"
    _write_pair(hr, lr, "a.png", "ax4.png", 16, 16)
    _write_pair(hr, lr, "b.png", "bx4.png", 16, 16, seed=3)
    data = (hr / "b.png").read_bytes()
    (hr / "b.png").write_bytes(data[:60])  # truncated PNG
    (hr / "c.png").write_text("not an image")
    (lr / "cx4.png").write_text("not an image either")
    with pytest.raises(ImageReadError, match=r"b\.png: not a readable image"):
        load_pairs(hr, lr)
    with pytest.warns(SkippedImageWarning) as record:
        pairs = load_pairs(hr, lr, on_error="skip")
    assert [p.name for p in pairs] == ["a"]
    messages = " ".join(str(w.message) for w in record)
    assert "b.png" in messages and "c.png" in messages
    (hr / "a.png").write_text("broken too")
    with pytest.raises(DataError, match="no readable images"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        load_pairs(hr, lr, on_error="skip")


# ---------------------------------------------------------------- LR made on the fly, cached

def test_lr_cache_written_reused_and_invalidated(tmp_path: Path, shared_dir: Path) -> None:
    hr = tmp_path / "HR"
    hr.mkdir()
    for name in ("baby.png", "bird.png"):
        shutil.copy(shared_dir / "data" / "Set5" / "HR" / name, hr / name)
    cache = tmp_path / "cache"
    first = load_pairs(hr, scale=4, cache_dir=cache)
    files = sorted(cache.glob("*.png"))
    assert [f.name.split(".")[0] for f in files] == ["baby", "bird"]
    nocache = load_pairs(hr, scale=4)
    for a, b in zip(first, nocache, strict=True):
        np.testing.assert_array_equal(a.lr, b.lr)
        np.testing.assert_array_equal(a.lr, make_lr(a.hr, 4))
    second = load_pairs(hr, scale=4, cache_dir=cache)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.lr, b.lr)
    assert sorted(cache.glob("*.png")) == files

    # Reuse is real: a planted cache file of the right size is what the next load returns.
    baby_cache = files[0]
    planted = np.full_like(first[0].lr, 0.2)
    write_image(baby_cache, planted)
    reused = load_pairs(hr, scale=4, cache_dir=cache)
    np.testing.assert_allclose(reused[0].lr, np.round(0.2 * 255) / 255)

    # An edited HR (new mtime) does not use the stale file: LR is recomputed under a new key.
    st = (hr / "baby.png").stat()
    os.utime(hr / "baby.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = load_pairs(hr, scale=4, cache_dir=cache)
    np.testing.assert_array_equal(fresh[0].lr, first[0].lr)
    assert len(list(cache.glob("baby.*.png"))) == 2

    # A damaged cache file is reported and replaced, not trusted.
    new_file = next(f for f in cache.glob("baby.*.png") if f != baby_cache)
    new_file.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"LR cache file .*baby.*unusable"):
        again = load_pairs(hr, scale=4, cache_dir=cache)
    np.testing.assert_array_equal(again[0].lr, first[0].lr)
    np.testing.assert_array_equal(read_image(new_file), first[0].lr)


# ---------------------------------------------------------------- training patches

def _ramp_pair(h: int = 40, w: int = 48, scale: int = 4, name: str = "ramp") -> ImagePair:
    """HR: channel 0 rises down the rows, channel 1 across the columns, channel 2 noise.

    LR is the scale x scale box mean: it commutes with flips and transposition of an aligned
    crop, so ``box(hr_patch) == lr_patch`` holds for every correct sample, and the ramps
    reveal which flip/rotation was applied.
    """
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(7).random((h, w))
    hr = np.stack([yy / h, xx / w, noise], axis=2).astype(np.float32)
    return ImagePair(name=name, hr=hr, lr=_box(hr, scale))


def _box(img: np.ndarray, s: int) -> np.ndarray:
    h, w, c = img.shape
    return img.astype(np.float64).reshape(h // s, s, w // s, s, c).mean(axis=(1, 3)).astype(
        np.float32)


def _orientation(hr: np.ndarray) -> tuple[bool, bool, bool]:
    """(row ramp runs down the rows?, row ramp rises?, column ramp rises?): 8 dihedral cases."""
    r, c = hr[..., 0], hr[..., 1]
    along_rows = r[-1, 0] != r[0, 0]
    r_end = r[-1, 0] if along_rows else r[0, -1]
    c_end = c[0, -1] if along_rows else c[-1, 0]
    return (bool(along_rows), bool(r_end > r[0, 0]), bool(c_end > c[0, 0]))


def test_patches_aligned_and_augmented_identically() -> None:
    pair = _ramp_pair()
    ds = PatchDataset([pair], patch_size=16, scale=4, augment=True, seed=3, length=200)
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["lr"].shape == (3, 4, 4) and s["hr"].shape == (3, 16, 16)
        hr, lr = to_numpy(s["hr"]), to_numpy(s["lr"])
        np.testing.assert_allclose(_box(hr, 4), lr, atol=1e-6)
        seen.add(_orientation(hr))
    assert len(seen) == 8  # all flips/rotations occur
    plain = PatchDataset([pair], patch_size=16, scale=4, augment=False, seed=3, length=50)
    for i in range(len(plain)):
        hr = to_numpy(plain[i]["hr"])
        assert _orientation(hr) == (True, True, True)
        # The HR crop sits at s times the LR corner, on the image itself.
        y, x = round(hr[0, 0, 0] * 40), round(hr[0, 0, 1] * 48)
        assert y % 4 == 0 and x % 4 == 0
        np.testing.assert_array_equal(hr, pair.hr[y : y + 16, x : x + 16])


def test_patches_pure_function_of_seed_and_index() -> None:
    pairs = [_ramp_pair(name="a"), _ramp_pair(32, 32, name="b")]
    a = PatchDataset(pairs, patch_size=16, scale=4, seed=5, length=20)
    b = PatchDataset(pairs, patch_size=16, scale=4, seed=5, length=20)
    other = PatchDataset(pairs, patch_size=16, scale=4, seed=6, length=20)
    forward = [a[i] for i in range(20)]
    backward = [b[i] for i in reversed(range(20))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])
    assert any(not torch.equal(forward[i]["hr"], other[i]["hr"]) for i in range(20))
    # Each epoch of len(pairs) samples visits every image once. The row ramp of an H-tall
    # image steps by 1/H between neighbours, which tells the two images (40 and 32) apart.
    def height(sample: dict[str, torch.Tensor]) -> int:
        r = sample["hr"][0]
        step = max((r[1:] - r[:-1]).abs().max(), (r[:, 1:] - r[:, :-1]).abs().max())
        return round(1 / float(step))

    heights = [height(s) for s in forward]
    for epoch in range(10):
        assert sorted(heights[2 * epoch : 2 * epoch + 2]) == [32, 40]


def test_loader_same_batches_for_any_workers_and_resume() -> None:
    ds = PatchDataset([_ramp_pair()], patch_size=16, scale=4, seed=1, length=24)
    ref = list(make_loader(ds, batch_size=4, num_workers=0))
    assert len(ref) == 6 and ref[0]["hr"].shape == (4, 3, 16, 16)
    par = list(make_loader(ds, batch_size=4, num_workers=2))
    resumed = list(make_loader(ds, batch_size=4, num_workers=0, start_step=4))
    assert len(resumed) == 2
    for x, y in zip(ref, par, strict=True):
        assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])
    for x, y in zip(ref[4:], resumed, strict=True):
        assert torch.equal(x["hr"], y["hr"])
    with pytest.raises(ValueError, match="exceed the dataset"):
        make_loader(ds, batch_size=4, start_step=5, num_steps=2)


def test_step_sampler_ranks_are_disjoint() -> None:
    r0 = list(StepSampler(start_step=2, num_steps=2, batch_size=3, rank=0, world_size=2))
    r1 = list(StepSampler(start_step=2, num_steps=2, batch_size=3, rank=1, world_size=2))
    assert r0 == [12, 13, 14, 18, 19, 20] and r1 == [15, 16, 17, 21, 22, 23]


def test_patch_dataset_errors() -> None:
    small = _ramp_pair(12, 40, name="tiny_photo")
    with pytest.raises(DataError, match=r"'tiny_photo' is 40x12, smaller than the HR patch 16x16"):
        PatchDataset([_ramp_pair(), small], patch_size=16, scale=4)
    with pytest.raises(DataError, match="patch size 18 is not a positive multiple of scale 4"):
        PatchDataset([_ramp_pair()], patch_size=18, scale=4)
    bad = ImagePair(name="odd", hr=_ramp_pair().hr, lr=np.zeros((9, 12, 3), np.float32))
    with pytest.raises(DataError, match=r"'odd': HR 48x40 and LR 12x9"):
        PatchDataset([bad], patch_size=16, scale=4)
    with pytest.raises(IndexError):
        PatchDataset([_ramp_pair()], patch_size=16, scale=4, length=3)[3]


def test_validation_dataset_full_images() -> None:
    pair = _ramp_pair()
    item = ValidationDataset([pair])[0]
    assert item["name"] == "ramp"
    assert item["hr"].shape == (3, 40, 48) and item["lr"].shape == (3, 10, 12)
    np.testing.assert_array_equal(to_numpy(item["hr"]), pair.hr)


# ---------------------------------------------------------------- embedded dataset

def test_embedded_split_offline() -> None:
    assert EMBEDDED_SPLIT["val"] == ("coffee", "chelsea")
    assert not set(EMBEDDED_SPLIT["train"]) & set(EMBEDDED_SPLIT["val"])
    train = embedded_pairs("train")
    val = embedded_pairs("val")
    assert [p.name for p in train] == list(EMBEDDED_SPLIT["train"])
    sizes = {p.name: p.hr.shape[:2] for p in train + val}
    assert sizes["retina"] == (1408, 1408) and sizes["chelsea"] == (300, 448)
    assert sizes["stereo_motorcycle_left"] == (500, 740) and sizes["rocket"] == (424, 640)
    for p in train + val:
        assert p.hr.shape[2] == 3 and p.hr.dtype == np.float32
        assert p.lr.shape[:2] == (p.hr.shape[0] // 4, p.hr.shape[1] // 4)
        lr8 = p.lr * 255
        np.testing.assert_allclose(lr8, np.round(lr8), atol=1e-4)  # on the 8-bit grid
    # Usable for training as is.
    ds = PatchDataset(train, patch_size=64, scale=4, length=8)
    assert ds[7]["lr"].shape == (3, 16, 16)

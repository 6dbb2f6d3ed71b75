"""esrgan.files: the one atomic writer (file mode, full disk), output checks, the PNG encoder."""

from __future__ import annotations

import errno
import functools
import io
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esrgan.data import build_cache, load_pairs, write_image
from esrgan.data.png import write_png
from esrgan.files import (
    NoSpaceError,
    OutputError,
    atomic_write,
    check_output_dir,
    check_output_path,
)
from esrgan.weights import save_checkpoint, save_generator

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- file mode, no leftovers


def test_written_files_get_the_umask_mode(tmp_path: Path, umask_022) -> None:
    from esrgan.archs.rrdbnet import build_generator

    out = tmp_path / "out"
    write_image(out / "sr.png", _noise(9, 7) / 255.0)
    save_checkpoint(out / "ckpt.pth", {"step": 3, "w": torch.zeros(4)})
    save_generator(out / "g.safetensors", build_generator(nf=8, nb=1, gc=4))
    hr = tmp_path / "hr"
    write_image(hr / "a.png", _noise(40, 36, 1) / 255.0)
    cache = build_cache(hr, tmp_path / "cache", scale=4, progress=False)
    load_pairs(hr, scale=4, cache_dir=tmp_path / "lr_cache")  # the LR cache (PNG)
    files = [out / "sr.png", out / "ckpt.pth", out / "g.safetensors", cache / "a.hr.npy",
             cache / "a.lr.npy", cache / "cache.json", *(tmp_path / "lr_cache").glob("*.png")]
    assert len(files) == 7
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files} == \
        {str(p.relative_to(tmp_path)): "0o644" for p in files}
    # No temporary or probe file is left anywhere.
    assert not [p for p in tmp_path.rglob(".*")]


def test_two_processes_writing_one_file_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "shared.bin"
    script = textwrap.dedent(f"""
        import sys
        from esrgan.files import atomic_write
        tag = sys.argv[1].encode()
        for i in range(200):
            atomic_write({str(target)!r}, tag * 50_000)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script, tag], env=env,
                              stderr=subprocess.PIPE, text=True) for tag in "ab"]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert target.read_bytes() in (b"a" * 50_000, b"b" * 50_000)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_a_failing_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_bytes(b"old")

    def broken(f) -> None:
        f.write(b"half of the new conte")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------- full disk


_FULL_DISK_SCRIPT = """
import io, json, sys
from pathlib import Path
import numpy as np, torch
from esrgan.data import write_image
from esrgan.data.png import write_png
from esrgan.files import NoSpaceError
from esrgan.weights import save_checkpoint

disk = Path(sys.argv[1])
(disk / "old.pth").write_bytes(b"the checkpoint from before")
(disk / "keep.png").write_bytes(b"an image from before")
image = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
ckpt = {"params": {"w": torch.arange(800_000, dtype=torch.float32)}, "step": 7}
png, pth = io.BytesIO(), io.BytesIO()
write_png(png, image)
torch.save(ckpt, pth)
result = {"png_bytes": len(png.getvalue()), "pth_bytes": len(pth.getvalue())}
for key, call in [("png", lambda: write_image(disk / "keep.png", image)),
                  ("pth", lambda: save_checkpoint(disk / "old.pth", ckpt))]:
    try:
        call()
        result[key] = "written"
    except NoSpaceError as exc:
        result[key] = str(exc)
        result[key + "_type"] = [c.__name__ for c in type(exc).__mro__]
result["files"] = {p.name: p.read_bytes().decode() for p in sorted(disk.iterdir())}
print(json.dumps(result))
"""


@functools.lru_cache(maxsize=1)
def _mount_flags() -> tuple[str, ...] | None:
    """``unshare`` flags under which a tmpfs can be mounted here, or None."""
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        return None
    # -r: root in a user namespace (works unprivileged where user namespaces are allowed);
    # -m: a private mount namespace, so the tmpfs disappears with the process.
    for flags in (("-rm",), ("-m",)):
        probe = subprocess.run([unshare, *flags, "sh", "-c", "d=$(mktemp -d) && mount -t "
                                "tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"],
                               capture_output=True)
        if probe.returncode == 0:
            return flags
    return None


def _run_on_small_disk(tmp_path: Path) -> dict:
    """Run _FULL_DISK_SCRIPT on a real 2 MB tmpfs in its own mount namespace."""
    flags = _mount_flags()
    assert flags is not None
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(_FULL_DISK_SCRIPT)
    command = (f"mount -t tmpfs -o size=2m tmpfs {disk} && "
               f"{sys.executable} {script} {disk}")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(["unshare", *flags, "sh", "-c", command], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _expected_mb(size: int) -> int:
    return max(1, math.ceil(2 * size / 1e6))


def test_full_disk_on_a_real_small_filesystem(tmp_path: Path) -> None:
    if _mount_flags() is None:
        pytest.skip("no small filesystem can be mounted here (test_full_disk_injected runs)")
    result = _run_on_small_disk(tmp_path)
    disk = tmp_path / "disk"
    assert result["png"] == (f"no space left on device: {disk / 'keep.png'} (needs about "
                             f"{_expected_mb(result['png_bytes'])} MB: the image and its "
                             f"temporary copy)")
    assert result["pth"] == (f"no space left on device: {disk / 'old.pth'} (needs about "
                             f"{_expected_mb(result['pth_bytes'])} MB: the checkpoint and its "
                             f"temporary copy)")
    assert "OSError" in result["png_type"] and "OSError" in result["pth_type"]
    # No partial file remains, and what was there before is intact.
    assert result["files"] == {"keep.png": "an image from before",
                               "old.pth": "the checkpoint from before"}


def test_full_disk_injected(tmp_path: Path) -> None:
    """Fallback where no small filesystem can be made: a writer whose disk fills up."""
    if _mount_flags() is not None:
        pytest.skip("a real small filesystem was used (test_full_disk_on_a_real_small_filesystem)")
    target = tmp_path / "out.bin"

    def fills_the_disk(f) -> None:
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError) as info:
        atomic_write(target, fills_the_disk, what="the checkpoint")
    assert str(info.value) == (f"no space left on device: {target} (needs about 1 MB: the "
                               f"checkpoint and its temporary copy)")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- output checks


def test_a_file_in_the_path_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("not a folder")
    for check, path, message in [
        (check_output_path, "afile/x.pth", "cannot write afile/x.pth: afile is a file, not a "
                                           "folder"),
        (check_output_path, "afile/deeper/m.csv", "cannot write afile/deeper/m.csv: afile is a "
                                                  "file, not a folder"),
        (check_output_dir, "afile/out", "cannot write into afile/out: afile is a file, not a "
                                        "folder"),
        (check_output_dir, "afile", "cannot write into afile: it is a file, not a folder"),
        (check_output_path, ".", "cannot write .: it is a folder"),
    ]:
        with pytest.raises(OutputError) as info:
            check(path)
        assert str(info.value) == message
        assert isinstance(info.value, OSError)
    with pytest.raises(OutputError, match="^cannot write afile/y.png: afile is a file"):
        write_image("afile/y.png", np.zeros((2, 2, 3)))
    assert check_output_path("new/sub/x.pth") == Path("new/sub/x.pth")
    assert Path("new/sub").is_dir() and not list(Path("new/sub").iterdir())
    with pytest.raises(OutputError, match="^cannot write new/sub: it is a folder$"):
        save_checkpoint("new/sub", {"w": torch.zeros(1)})
    assert check_output_dir("made/here").is_dir()


def test_unwritable_folders_are_reported(unwritable_dirs: dict[str, Path]) -> None:
    for folder in unwritable_dirs.values():
        with pytest.raises(OutputError) as info:
            check_output_path(folder / "m.csv")
        assert str(info.value).startswith(f"cannot write {folder / 'm.csv'}: folder {folder} "
                                          f"is not writable (")
        with pytest.raises(OutputError, match=f"^cannot write into {folder}: folder {folder} "
                                              f"is not writable"):
            check_output_dir(folder)
        with pytest.raises(OutputError, match=f"^cannot write into {folder / 'new'}: cannot "
                                              f"create folder {folder / 'new'} \\("):
            check_output_dir(folder / "new")
        with pytest.raises(OutputError, match=f"^cannot write {folder / 'x.png'}: folder "):
            write_image(folder / "x.png", np.zeros((2, 2, 3)))


# ---------------------------------------------------------------- the PNG encoder


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 37, 3), (29, 1, 3), (33, 47, 3), (17, 23),
                                   (300, 5000, 3)])
def test_png_encoder_decodes_to_the_array(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    smooth = (128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(np.uint8)
    if len(shape) == 3:
        smooth = np.stack([smooth, smooth[::-1], 255 - smooth], axis=2)
    for img in (rng.integers(0, 256, shape, dtype=np.uint8), smooth):
        buf = io.BytesIO()
        write_png(buf, img)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            assert im.mode == ("RGB" if len(shape) == 3 else "L")
            np.testing.assert_array_equal(np.asarray(im), img)


def test_png_encoder_compresses_like_pillow(shared_dir: Path) -> None:
    with Image.open(shared_dir / "data" / "reference" / "baboon.png") as im:
        img = np.asarray(im.convert("RGB"))
    ours, pillow = io.BytesIO(), io.BytesIO()
    write_png(ours, img)
    Image.fromarray(img).save(pillow, format="PNG")
    # Same row filters as Pillow; the zlib builds differ (measured: 449 kB vs 466 kB).
    assert 0.85 < len(ours.getvalue()) / len(pillow.getvalue()) < 1.15
    with pytest.raises(ValueError, match="expected uint8"):
        write_png(io.BytesIO(), img.astype(np.float32))

"""Speed of the data and metric code (not a test): python benchmarks/bench_data_metrics.py

Prints, on this machine and in one run:
- MATLAB imresize (numpy, float32 RGB) x1/4 and x4 throughput in megapixels per second of the
  HR side, next to Pillow's bicubic resize (uint8 RGB, also antialiased) on the same images;
- NIQE seconds per 512x512 image;
- evaluate_images throughput (images/s) on bicubic Set14 for psnr + ssim + niqe.

Reads the shared test data from $ESRGAN_SHARED or ../shared next to the repository, and exits
with a message when it is absent. Takes well under a minute.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]

from esrgan.data.imresize import imresize  # noqa: E402
from esrgan.data.io import list_images, mod_crop, read_image  # noqa: E402
from esrgan.metrics import evaluate_images, niqe, quantize  # noqa: E402


def _best_of(fn, repeats: int = 3) -> float:
    """Fastest of a few runs, in seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_imresize(hr_images: list[np.ndarray]) -> None:
    pil_hr = [Image.fromarray(np.round(im * 255).astype(np.uint8)) for im in hr_images]
    lr_images = [imresize(im, scale=0.25) for im in hr_images]
    pil_lr = [Image.fromarray(np.clip(np.round(im * 255), 0, 255).astype(np.uint8))
              for im in lr_images]
    mpix = sum(im.shape[0] * im.shape[1] for im in hr_images) / 1e6

    def ours_down():
        for im in hr_images:
            imresize(im, scale=0.25)

    def pil_down():
        for im in pil_hr:
            im.resize((im.width // 4, im.height // 4), Image.Resampling.BICUBIC)

    def ours_up():
        for im in lr_images:
            imresize(im, scale=4)

    def pil_up():
        for im in pil_lr:
            im.resize((im.width * 4, im.height * 4), Image.Resampling.BICUBIC)

    print(f"imresize on {len(hr_images)} images, {mpix:.2f} HR megapixels "
          "(throughput = HR megapixels per second)")
    for label, ours, pil in (("x1/4", ours_down, pil_down), ("x4  ", ours_up, pil_up)):
        t_ours, t_pil = _best_of(ours), _best_of(pil)
        print(f"  {label}  esrgan imresize (float32) {mpix / t_ours:7.1f} MP/s   "
              f"Pillow bicubic (uint8) {mpix / t_pil:7.1f} MP/s   "
              f"ratio ours/Pillow {t_pil / t_ours:.2f}")


def bench_niqe(img: np.ndarray) -> None:
    crop = img[:512, :512]
    if crop.shape[:2] != (512, 512):
        crop = imresize(img, output_size=(512, 512))
    seconds = _best_of(lambda: niqe(crop))
    print(f"NIQE: {seconds:.3f} s per 512x512 image")


def bench_evaluate(shared: Path) -> None:
    root = shared / "data" / "Set14"
    names, srs, hrs = [], [], []
    for hr_path in list_images(root / "HR"):
        hr = mod_crop(read_image(hr_path), 4)
        lr = read_image(root / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png")
        names.append(hr_path.stem)
        srs.append(quantize(imresize(lr, scale=4)))
        hrs.append(hr)
    metrics = ["psnr", "ssim", "niqe"]
    start = time.perf_counter()
    table = evaluate_images(srs, hrs, names, metrics, crop_border=4)
    seconds = time.perf_counter() - start
    means = table.mean()
    print(f"evaluate_images on bicubic Set14 ({', '.join(metrics)}): "
          f"{len(names) / seconds:.1f} images/s ({seconds:.2f} s for {len(names)}); "
          f"means PSNR-Y {means['psnr']:.3f} SSIM-Y {means['ssim']:.4f} NIQE {means['niqe']:.3f}")


def main() -> int:
    shared = Path(os.environ.get("ESRGAN_SHARED", REPO_ROOT.parent / "shared"))
    if not (shared / "data").is_dir():
        print(f"skipped: shared data not found at {shared} (set ESRGAN_SHARED)")
        return 0
    hr_images = [mod_crop(read_image(p), 4)
                 for s in ("Set5", "Set14") for p in list_images(shared / "data" / s / "HR")]
    bench_imresize(hr_images)
    bench_niqe(read_image(shared / "data" / "Set5" / "HR" / "baby.png"))
    bench_evaluate(shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())

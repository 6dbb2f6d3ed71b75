"""Score a folder of SR images: against their HR originals, or alone (no-reference metrics).

    python -m esrgan.evaluate --sr DIR [--hr DIR] [--scale 4] [--crop N]
                              [--metrics psnr,ssim,niqe] [--csv OUT.csv] [--iqa-weights DIR]

Pairing (with ``--hr``): an SR file belongs to the HR file whose name (without extension) it
equals, or equals followed by a suffix made of at most two of ``x<digits>``, ``SR``, ``rlt``
(case-insensitive), each optionally preceded by ``_`` or ``-``: ``baby.png`` takes
``baby.png``, ``babyx4.png``, ``baby_x4.png``, ``baby_SR.png``, ``baby_x4_SR.png`` or
``baby_rlt.png``. Every SR file must match exactly one HR file and every HR file exactly one
SR file. With ``--hr`` both images are mod-cropped to a multiple of ``--scale`` (the HR
convention of every benchmark) and must then have the same size.

Without ``--hr`` only no-reference metrics (niqe, ma, pi) can be asked; every image of the SR
folder is scored as it is (no mod-crop).

``--crop`` pixels (default: the scale) are removed from each border before scoring: 4 is
PIRM's shave for x4, 0 scores the whole image (NIQE: the LIVE lab's released code, not
MATLAB's built-in ``niqe()``). The per-image table and the means are printed and written
as CSV (default ``<sr dir>_metrics.csv`` next to the SR folder), with a ``mean`` row and,
when ``rmse`` is asked, a ``rmse_pooled`` row (PIRM's set RMSE). The CSV's folder is
checked before anything is scored. Metrics whose weights are not on disk are reported as
missing (NaN), never 0. Errors print one line ``error: ...`` and exit with 2.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from esrgan.data.io import DataError, images_by_stem, mod_crop, read_image
from esrgan.files import atomic_write, check_output_path
from esrgan.metrics import METRICS, evaluate_images, summarize

__all__ = ["DEFAULT_METRICS", "EvaluateError", "main", "pair_images", "parse_metrics"]

DEFAULT_METRICS = ("psnr", "ssim")
_SUFFIX = re.compile(r"(?:[_-]?(?:x\d+|sr|rlt)){1,2}", re.IGNORECASE)


class EvaluateError(ValueError):
    """Bad command-line input: folders, file pairing, metric names."""


def _hr_stem_for(sr_stem: str, hr_stems: set[str]) -> list[str]:
    """All HR stems the SR stem can belong to (exact name, or HR name + an SR suffix)."""
    if sr_stem in hr_stems:
        return [sr_stem]
    return [h for h in hr_stems if sr_stem.startswith(h) and _SUFFIX.fullmatch(sr_stem[len(h):])]


def pair_images(sr_dir: Path, hr_dir: Path) -> list[tuple[str, Path, Path]]:
    """(HR stem, SR path, HR path) for every pair, sorted by name; EvaluateError if unpaired."""
    sr_files = list(_images_by_stem(sr_dir, "SR").values())
    hr_by_stem = _images_by_stem(hr_dir, "HR")
    pairs: dict[str, Path] = {}
    for sr in sr_files:
        stems = _hr_stem_for(sr.stem, set(hr_by_stem))
        if len(stems) != 1:
            why = "no HR image" if not stems else f"several HR images ({', '.join(sorted(stems))})"
            raise EvaluateError(f"SR file {sr} matches {why} in {hr_dir}")
        if stems[0] in pairs:
            raise EvaluateError(f"SR files {pairs[stems[0]].name} and {sr.name} both match "
                                f"{hr_by_stem[stems[0]]}")
        pairs[stems[0]] = sr
    missing = sorted(set(hr_by_stem) - set(pairs))
    if missing:
        shown = ", ".join(hr_by_stem[m].name for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise EvaluateError(f"HR image(s) {shown}{more} in {hr_dir} have no SR file in {sr_dir}")
    return [(stem, pairs[stem], hr_by_stem[stem]) for stem in sorted(pairs)]


def parse_metrics(text: str) -> list[str]:
    """Comma-separated metric names, validated against METRICS."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise EvaluateError("--metrics is empty")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise EvaluateError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def _check_sizes(pairs: Sequence[tuple[str, Path, Path]], scale: int) -> None:
    """Fail before scoring anything if a pair's sizes differ (reads image headers only)."""
    for _, sr_path, hr_path in pairs:
        try:
            with Image.open(sr_path) as a, Image.open(hr_path) as b:
                (sw, sh), (hw, hh) = a.size, b.size
        except OSError:
            continue  # read_image reports unreadable files with their name
        sw, sh, hw, hh = (v - v % scale for v in (sw, sh, hw, hh))
        if (sw, sh) != (hw, hh):
            raise EvaluateError(
                f"{sr_path} is {sw}x{sh} but {hr_path} is {hw}x{hh} "
                f"(after cropping both to a multiple of {scale})"
            )


def _load_pairs(
    pairs: Sequence[tuple[str, Path, Path]], scale: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for _, sr_path, hr_path in pairs:
        # Sizes were checked from the file headers by _check_sizes.
        yield mod_crop(read_image(sr_path), scale), mod_crop(read_image(hr_path), scale)


def _images_by_stem(folder: Path, kind: str) -> dict[str, Path]:
    """Every image in ``folder`` by its name without extension; EvaluateError on a clash."""
    try:
        return images_by_stem(folder, kind)
    except DataError as exc:
        raise EvaluateError(str(exc)) from exc


def _header(metrics: Sequence[str], scale: int, crop: int | None = None,
            reference: bool = True) -> str:
    crop = scale if crop is None else crop
    y = [m for m in metrics if METRICS[m].channel == "Y"]
    rgb = [m for m in metrics if METRICS[m].channel == "RGB"]
    parts = []
    if y:
        parts.append(f"Y channel (MATLAB BT.601 rgb2ycbcr): {', '.join(y)}")
    if rgb:
        parts.append(f"RGB: {', '.join(rgb)}")
    first = f"x{scale}, mod-cropped to {scale}, " if reference else "no reference, "
    return f"{first}{crop} px border cropped; " + "; ".join(parts)


def _check_reference(metrics: Sequence[str], hr_dir: Path | None) -> None:
    needing = [m for m in metrics if METRICS[m].needs_reference]
    if hr_dir is None and needing:
        no_ref = ", ".join(m for m in METRICS if not METRICS[m].needs_reference)
        raise EvaluateError(f"metric(s) {', '.join(needing)} compare with the HR image: give "
                            f"--hr HR_DIR (without it only {no_ref} can be computed)")


def run(
    sr_dir: Path,
    hr_dir: Path | None,
    scale: int,
    metrics: Sequence[str],
    csv_path: Path | None,
    iqa_weights: Path | None = None,
    crop: int | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Score the folders; returns the CSV table (images + summary rows) and where it went.

    ``hr_dir`` None scores the SR images alone (no-reference metrics only, no mod-crop).
    ``crop`` is the border removed before scoring (None: ``scale``).
    """
    if scale < 1:
        raise EvaluateError(f"--scale must be >= 1, got {scale}")
    crop = scale if crop is None else crop
    if crop < 0:
        raise EvaluateError(f"--crop must be >= 0, got {crop}")
    _check_reference(metrics, hr_dir)
    if csv_path is None:
        csv_path = sr_dir.resolve().parent / f"{sr_dir.resolve().name}_metrics.csv"
    if hr_dir is not None:
        pairs = pair_images(sr_dir, hr_dir)
        _check_sizes(pairs, scale)
        names = [name for name, _, _ in pairs]
        # Read lazily, one pair at a time (tee buffers a single pair: both consumed in step).
        for_sr, for_hr = itertools.tee(_load_pairs(pairs, scale))
        sr_images: Iterator[np.ndarray] = (sr for sr, _ in for_sr)
        hr_images: Iterator[np.ndarray | None] = (hr for _, hr in for_hr)
    else:
        files = list(_images_by_stem(sr_dir, "SR").items())
        names = [name for name, _ in files]
        sr_images = (read_image(path) for _, path in files)
        hr_images = (None for _ in files)
    check_output_path(csv_path)  # before scoring: an unwritable CSV is one error, not a loss
    table = evaluate_images(sr_images, hr_images, names, metrics, crop_border=crop,
                            iqa_weights=iqa_weights, progress=True)
    summary = summarize(table)
    rows = [table, summary[list(metrics)].to_frame("mean").T]
    if "rmse_pooled" in summary:
        pooled = pd.DataFrame({"rmse": [summary["rmse_pooled"]]}, index=["rmse_pooled"])
        rows.append(pooled.reindex(columns=list(metrics)))
    out = pd.concat(rows)
    out.index.name = "image"
    atomic_write(csv_path, out.to_csv().encode(), what="the table")
    return out, csv_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m esrgan.evaluate",
        description="Score SR images against HR images, or alone with no-reference metrics.",
    )
    p.add_argument("--sr", type=Path, required=True, help="folder of super-resolved images")
    p.add_argument("--hr", type=Path, default=None,
                   help="folder of ground-truth HR images; when given, SR and HR are "
                        "mod-cropped to a multiple of --scale and paired by name. Without it "
                        "only niqe, ma, pi can be asked and images are scored as they are")
    p.add_argument("--scale", type=int, default=4,
                   help="SR scale: the mod-crop (with --hr) and the default --crop (default 4)")
    p.add_argument("--crop", type=int, default=None,
                   help="pixels removed from each border before scoring (default: the scale; "
                        "4 = PIRM's shave, 0 = the whole image, NIQE of the LIVE release code)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from: {', '.join(METRICS)} (default psnr,ssim)")
    p.add_argument("--csv", type=Path, default=None,
                   help="CSV output (default <sr dir>_metrics.csv beside the SR folder)")
    p.add_argument("--iqa-weights", type=Path, default=None,
                   help="folder with pyiqa weight files for ma, pi, lpips")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table, csv_path = run(args.sr, args.hr, args.scale, metrics, args.csv,
                                  args.iqa_weights, crop=args.crop)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, OSError) as exc:  # DataError, ImageReadError, MetricInputError, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labelled = table.rename(columns={m: METRICS[m].label for m in metrics})
    print(_header(metrics, args.scale, args.crop, reference=args.hr is not None))
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.float_format", "{:.4f}".format):
        print(labelled.to_string(na_rep="n/a"))
    print(f"written: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

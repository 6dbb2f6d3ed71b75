"""Score a generator checkpoint, or plain bicubic, on benchmark folders: the paper-style table.

    python -m esrgan.benchmark --weights RRDB_PSNR_x4.pth --set Set5=HR_DIR --set Set14=HR_DIR \\
        [--lr Set5=LR_DIR] [--tile 256 --tile-overlap 32] [--metrics niqe,pi,lpips] [--out DIR]
    python -m esrgan.benchmark --set Set5=HR_DIR     # no --weights: bicubic upscaling

Pipeline, per image of every set:

1. HR: the images of the set's folder, mod-cropped to a multiple of the scale. LR: made by
   MATLAB bicubic ``imresize(HR, 1/scale)`` rounded to 8 bits (``esrgan.data.make_lr``),
   unless ``--lr NAME=LR_DIR`` gives the set's LR files, paired as ``esrgan.data.load_pairs``
   pairs them (``babyx4.png`` or ``baby.png`` for ``baby.png``).
2. SR: the generator of ``--weights`` (any published layout, ``esrgan.weights.load_generator``;
   tiled with ``--tile``, see ``esrgan.upscale``), or without ``--weights`` MATLAB bicubic
   ``imresize(LR, scale)``. The SR is clamped and rounded to 8 bits exactly as a saved PNG.
3. Scores: PSNR and SSIM (MATLAB's Gaussian SSIM) on the Y channel with ``scale`` pixels
   cropped from every border, under the ``--convention`` below; plus the ``--metrics``
   (default NIQE, PI, LPIPS and DISTS; PI, Ma, LPIPS and DISTS only when their weight files
   are on disk, else reported unavailable with the reason, never 0). A set's value is the
   mean over its images.

Conventions (``--convention``). They differ in how the 8-bit images become the plane scored:

- ``matlab`` (default): as MATLAB scripts score 8-bit files. ``rgb2ycbcr`` of a ``uint8``
  image returns a ``uint8`` Y plane, so Y is rounded to whole grey levels; and a grayscale
  (single-channel) HR file is not converted to Y at all (those scripts call ``rgb2ycbcr`` only
  on 3-channel images): it is scored on its grey values, 0..255, and its SR on the full-range
  BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (the grey value itself for a grey SR), rounded.
- ``float``: Y of the 8-bit RGB values, not rounded, and a grayscale file counts as three
  equal channels: the convention of ``esrgan.metrics``, ``esrgan.evaluate`` and BasicSR's
  Python metrics.

Measured for the bicubic benchmark (HR -> x1/4 -> x4, PSNR-Y dB / SSIM-Y), against the paper's
Bicubic row 28.42 / 0.8104, 26.00 / 0.7027, 25.96 / 0.6675:

=========  ==================  ==================  ==================
set        matlab              float               LR files given
=========  ==================  ==================  ==================
Set5       28.419 / 0.8102     28.431 / 0.8113     28.418 / 0.8102
Set14      25.993 / 0.7024     26.092 / 0.7050     25.992 / 0.7024
BSD100     25.958 / 0.6674     25.963 / 0.6682     25.958 / 0.6673
=========  ==================  ==================  ==================

(the last column: ``matlab`` with the released ``LR_bicubic/X4`` files instead of ``make_lr``).
``matlab`` reproduces every published PSNR to within 0.01 dB and every SSIM to within 0.0003,
so it is the default. Under ``float`` Set5 is 0.011 dB and Set14 0.09 dB high: Set14 holds one
grayscale image (``bridge``), scored 1.32 dB higher on Y (studio range, 219 levels) than on
its grey values (255 levels).

Outputs, in ``--out`` (default ``runs/benchmark/<weights file stem, or bicubic>``):
``benchmark.md`` (the table, also printed), ``benchmark.csv`` (one row per set: our value,
the published value and the difference ours - published, per metric) and ``per_image.csv``.
The published numbers are those of :mod:`esrgan.paper.published` (x4 only): the RRDB_PSNR
row when ``--weights`` is given, the Bicubic row without, another with ``--published``. A set
whose name is not in the table (or another scale than 4) gets no published value and a note.

Every input is checked before the first image is upscaled (folders, pairing, checkpoint, the
output folder); bad input prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from esrgan.data.datasets import load_pair, pair_files
from esrgan.data.imresize import imresize
from esrgan.data.io import DataError, images_by_stem, to_numpy, to_tensor
from esrgan.files import atomic_write, check_output_dir
from esrgan.metrics import METRICS, MetricInputError, MetricUnavailable
from esrgan.metrics.color import YCBCR_MATRIX, rgb2y
from esrgan.metrics.psnr_ssim import ssim_plane
from esrgan.paper.published import METHODS, PUBLISHED, SCALE, SETS, published
from esrgan.upscale import upscale
from esrgan.weights import PARAMS_CHOICES, PARAMS_HELP, load_generator

__all__ = [
    "CONVENTIONS",
    "BenchmarkError",
    "BenchmarkResult",
    "BenchmarkSet",
    "bicubic_upscale",
    "is_grayscale_file",
    "main",
    "paper_table",
    "png_round",
    "run_benchmark",
    "score_psnr_ssim",
    "to_markdown",
]

CONVENTIONS: tuple[str, ...] = ("matlab", "float")
DEFAULT_METRICS: tuple[str, ...] = ("niqe", "pi", "lpips", "dists")
# PSNR and SSIM are always scored, under the chosen convention; these are the other metrics.
EXTRA_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in ("psnr", "ssim"))
DEFAULT_OUT_ROOT = Path("runs") / "benchmark"

# Full-range BT.601 luma: MATLAB's studio-range Y weights divided by its 219-level range
# (65.481 / 219 = 0.299, 128.553 / 219 = 0.587, 24.966 / 219 = 0.114).
_FULL_RANGE_LUMA = YCBCR_MATRIX[0] / 219.0
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B")


class BenchmarkError(ValueError):
    """Bad benchmark input: options, set names, folders that do not fit together."""


@dataclass(frozen=True)
class BenchmarkSet:
    """One benchmark set: its name, HR folder and optional LR folder."""

    name: str
    hr_dir: Path
    lr_dir: Path | None = None


@dataclass
class BenchmarkResult:
    """Scores of one benchmark run.

    ``per_image``: index (set, image), columns ``grayscale``, ``psnr``, ``ssim`` and the extra
    metrics. ``per_set``: index set, columns ``images`` and the per-set means.
    ``unavailable``: metric name -> why it could not be computed (its values are NaN).
    """

    per_image: pd.DataFrame
    per_set: pd.DataFrame
    label: str
    scale: int
    convention: str
    metrics: tuple[str, ...]
    unavailable: dict[str, str] = field(default_factory=dict)


# --- scoring -------------------------------------------------------------------------------


def png_round(img: np.ndarray) -> np.ndarray:
    """``img`` clamped and rounded to 8 bits, as ``write_image`` then ``read_image`` give it.

    Returns float32 HWC in [0, 1] with values k / 255, bit-identical to reading back the PNG
    that ``python -m esrgan.upscale`` writes.
    """
    u8 = np.clip(np.round(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return u8.astype(np.float32) / 255.0


def is_grayscale_file(path: str | os.PathLike) -> bool:
    """True when the image file has a single channel (grey, with or without alpha)."""
    with Image.open(path) as im:
        return im.mode in _GRAY_MODES


def _matlab_round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (MATLAB's uint8 conversion) for values >= 0."""
    return np.floor(x + 0.5)


def _plane(img: np.ndarray, convention: str, grayscale: bool) -> np.ndarray:
    """The 2-D plane (float64, 0..255) that ``convention`` scores for an HWC RGB image."""
    if convention == "float":
        return rgb2y(img) * 255.0
    if grayscale:
        return _matlab_round(np.asarray(img, dtype=np.float64) @ _FULL_RANGE_LUMA * 255.0)
    return _matlab_round(rgb2y(img) * 255.0)


def score_psnr_ssim(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, convention: str = "matlab",
    grayscale: bool = False,
) -> tuple[float, float]:
    """(PSNR-Y in dB, SSIM-Y) of 8-bit HWC RGB images in [0, 1] under ``convention``.

    ``grayscale``: the HR file is single-channel (matters only for ``'matlab'``, see the
    module docstring). ``'float'`` equals ``esrgan.metrics.psnr`` / ``ssim``. Raises
    ValueError for mismatched shapes or images too small for the crop and the SSIM window.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r} (choose {', '.join(CONVENTIONS)})")
    if sr.shape != hr.shape or sr.ndim != 3 or sr.shape[2] != 3:
        raise ValueError(f"SR and HR must be HxWx3 of one size, got {sr.shape} and {hr.shape}")
    h, w = hr.shape[:2]
    c = crop_border
    if min(h, w) - 2 * c < 11:
        raise ValueError(f"image {w}x{h} is too small for a {c}-pixel crop and the 11x11 SSIM "
                         f"window")
    a, b = (_plane(x, convention, grayscale) for x in (sr, hr))
    if c:
        a, b = a[c:-c, c:-c], b[c:-c, c:-c]
    mse = float(np.mean((a - b) ** 2))
    value = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return value, ssim_plane(a, b)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic ``imresize(lr, scale)`` of an HWC [0, 1] image (not rounded)."""
    return np.asarray(imresize(np.asarray(lr, dtype=np.float64), scale=float(scale)))


def _network_upscale(model: nn.Module, lr: np.ndarray, device: torch.device, tile: int | None,
                     overlap: int) -> np.ndarray:
    x = to_tensor(lr).unsqueeze(0).to(device)
    return to_numpy(upscale(model, x, tile, overlap).clamp_(0, 1))


def _extra_scores(sr: np.ndarray, hr: np.ndarray, where: str, metrics: Sequence[str],
                  crop: int, iqa_weights: Path | None, unavailable: dict[str, str]) -> list[float]:
    """The extra metrics of one image; a metric without weights on disk goes to unavailable."""
    values = []
    for m in metrics:
        metric = METRICS[m]
        if m in unavailable:
            values.append(math.nan)
            continue
        args = (sr, hr, crop) if metric.needs_reference else (sr, crop)
        kwargs = {"weights_dir": iqa_weights} if metric.uses_iqa_weights else {}
        try:
            values.append(float(metric.function(*args, **kwargs)))
        except MetricUnavailable as exc:
            unavailable[m] = str(exc)
            values.append(math.nan)
        except ValueError as exc:
            raise MetricInputError(f"{where}: metric {m}: {exc}") from exc
    return values


def run_benchmark(
    sets: Sequence[BenchmarkSet],
    model: nn.Module | None = None,
    *,
    scale: int = 4,
    label: str = "bicubic",
    tile: int | None = None,
    overlap: int = 16,
    metrics: Sequence[str] = DEFAULT_METRICS,
    convention: str = "matlab",
    device: str | torch.device = "cpu",
    iqa_weights: str | os.PathLike | None = None,
    progress: bool = False,
) -> BenchmarkResult:
    """Upscale and score every image of ``sets`` (see the module docstring).

    ``model=None`` benchmarks bicubic upscaling; a model brings its own ``.scale``, which must
    equal ``scale``. Every set's pairing is checked before the first image is processed.
    Raises ``DataError`` / ``MetricInputError`` (ValueErrors) naming the file.
    """
    if convention not in CONVENTIONS:
        raise BenchmarkError(f"unknown convention {convention!r} "
                             f"(choose {', '.join(CONVENTIONS)})")
    unknown = [m for m in metrics if m not in EXTRA_METRICS]
    if unknown:
        raise BenchmarkError(f"unknown metric(s) {', '.join(unknown)} "
                             f"(choose from {', '.join(EXTRA_METRICS)})")
    if model is not None and model.scale != scale:
        raise BenchmarkError(f"the network upscales x{model.scale}, not x{scale}")
    names = [s.name for s in sets]
    if not sets or len(set(names)) != len(names):
        raise BenchmarkError(f"set names must be given and distinct, got {', '.join(names)}")
    device = torch.device(device)
    for bench_set in sets:  # one image given twice (cat.png, cat.jpg) would count twice
        images_by_stem(bench_set.hr_dir, "HR")
    files = {s.name: pair_files(s.hr_dir, s.lr_dir, scale) for s in sets}
    iqa = Path(iqa_weights) if iqa_weights is not None else None
    unavailable: dict[str, str] = {}
    rows: list[dict[str, object]] = []
    bar = tqdm(sets, desc="sets", unit="set", disable=not progress or len(sets) < 2)
    for bench_set in bar:
        images = tqdm(files[bench_set.name], desc=bench_set.name, unit="img", leave=False,
                      disable=not progress)
        for hr_path, lr_path in images:
            pair = load_pair(hr_path, lr_path, scale)
            if model is None:
                sr = bicubic_upscale(pair.lr, scale)
            else:
                sr = _network_upscale(model, pair.lr, device, tile, overlap)
            sr = png_round(sr)
            where = f"{bench_set.name}/{hr_path.name}"
            gray = is_grayscale_file(hr_path)
            try:
                p, s = score_psnr_ssim(sr, pair.hr, scale, convention, gray)
            except ValueError as exc:
                raise MetricInputError(f"{where}: {exc}") from exc
            extra = _extra_scores(sr, pair.hr, where, metrics, scale, iqa, unavailable)
            rows.append({"set": bench_set.name, "image": pair.name, "grayscale": gray,
                         "psnr": p, "ssim": s, **dict(zip(metrics, extra, strict=True))})
    per_image = pd.DataFrame(rows).set_index(["set", "image"])
    score_cols = ["psnr", "ssim", *metrics]
    grouped = per_image.groupby(level="set", sort=False)
    per_set = grouped[score_cols].mean()
    per_set.insert(0, "images", grouped.size())
    per_set = per_set.reindex(names)
    return BenchmarkResult(per_image, per_set, label, scale, convention, tuple(metrics),
                           unavailable)


# --- the paper-style table ------------------------------------------------------------------


def paper_table(result: BenchmarkResult, row: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Per-set table with the published ``row`` beside our PSNR/SSIM, and notes for the reader.

    Columns: ``images``, ``psnr``, ``psnr_published``, ``psnr_diff`` (ours - published),
    the same for ``ssim``, then the extra metrics. Published cells the table does not have
    are NaN, explained by the notes. ``row=None``: no published columns.
    """
    table = result.per_set.copy()
    notes: list[str] = []
    if row is not None:
        pub_psnr, pub_ssim = [], []
        for name in table.index:
            score = published(row, name, result.scale)
            pub_psnr.append(score.psnr if score else math.nan)
            pub_ssim.append(score.ssim if score and score.ssim is not None else math.nan)
            if score is None and result.scale == SCALE:
                notes.append(f"{name}: not in the published table (its sets: "
                             f"{', '.join(SETS)}), so no published value")
        if result.scale != SCALE:
            notes.append(f"the published numbers are x{SCALE}; this run is x{result.scale}, "
                         "so no published values")
        if all(score.ssim is None for score in PUBLISHED[row].values()):
            notes.append(f"the paper gives no SSIM for {row}")
        table.insert(table.columns.get_loc("psnr") + 1, "psnr_published", pub_psnr)
        table.insert(table.columns.get_loc("psnr_published") + 1, "psnr_diff",
                     table["psnr"] - table["psnr_published"])
        table.insert(table.columns.get_loc("ssim") + 1, "ssim_published", pub_ssim)
        table.insert(table.columns.get_loc("ssim_published") + 1, "ssim_diff",
                     table["ssim"] - table["ssim_published"])
    for m, reason in result.unavailable.items():
        notes.append(f"{m}: unavailable ({reason})")
    return table, notes


def _fmt(value: object, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _header_label(column: str, row: str | None) -> str:
    base, _, suffix = column.partition("_")
    if column == "images":
        return "images"
    if column in ("psnr", "ssim"):
        return f"{column.upper()}-Y" + (" (dB)" if column == "psnr" else "")
    if suffix == "published" and base in ("psnr", "ssim"):
        return f"{row} (paper)"
    if suffix == "diff" and base in ("psnr", "ssim"):
        return "diff"
    return METRICS[column].label


def to_markdown(result: BenchmarkResult, table: pd.DataFrame, notes: Sequence[str],
                row: str | None) -> str:
    """The table as Markdown, with a title, how it was scored and the notes."""
    cols = list(table.columns)
    lines = [
        f"# Benchmark: {result.label}, x{result.scale}",
        "",
        f"SR rounded to 8 bits; PSNR/SSIM on Y with a {result.scale}-pixel border crop "
        f"(convention `{result.convention}`, see `python -m esrgan.benchmark --help`); "
        "means over the images of each set.",
    ]
    if row is not None:
        lines.append(f"Published: the {row} row of X. Wang et al. 2018 (ESRGAN), supplementary "
                     "material, Table; diff = ours - published.")
    lines += ["", "| set | " + " | ".join(_header_label(c, row) for c in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for name, values in table.iterrows():
        cells = []
        for c in cols:
            v = values[c]
            if c == "images":
                cells.append(str(int(v)))
            elif c in result.unavailable:
                cells.append("unavailable")
            elif c.startswith("psnr"):
                cells.append(_fmt(float(v), 3 if c != "psnr_published" else 2,
                                  c.endswith("_diff")))
            elif c.startswith("ssim"):
                cells.append(_fmt(float(v), 4, c.endswith("_diff")))
            else:
                cells.append(_fmt(float(v), 3))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# --- files --------------------------------------------------------------------------------


def write_outputs(out_dir: Path, result: BenchmarkResult, table: pd.DataFrame,
                  markdown: str, row: str | None) -> list[Path]:
    """Write benchmark.md, benchmark.csv and per_image.csv into ``out_dir``; their paths."""
    summary = table.copy()
    summary.insert(0, "published_row", row or "")
    summary.insert(0, "convention", result.convention)
    summary.insert(0, "method", result.label)
    summary.index.name = "set"
    paths = [out_dir / "benchmark.md", out_dir / "benchmark.csv", out_dir / "per_image.csv"]
    atomic_write(paths[0], markdown.encode(), what="the table")
    atomic_write(paths[1], summary.to_csv(na_rep="n/a", float_format="%.6f").encode(),
                 what="the table")
    atomic_write(paths[2], result.per_image.to_csv(na_rep="n/a", float_format="%.6f").encode(),
                 what="the table")
    return paths


# --- command line -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one ``error: ...`` line (no usage dump) for bad options, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def _parse_named(items: Sequence[str], option: str) -> dict[str, Path]:
    """``NAME=DIR`` strings -> {name: dir}; BenchmarkError for a malformed or repeated one."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise BenchmarkError(f"{option} {item!r}: expected NAME=DIR, e.g. {option} Set5=HR")
        if name in out:
            raise BenchmarkError(f"{option}: set {name} given twice")
        out[name] = Path(folder)
    return out


def _sets_from_args(set_items: Sequence[str], lr_items: Sequence[str]) -> list[BenchmarkSet]:
    hr = _parse_named(set_items, "--set")
    lr = _parse_named(lr_items, "--lr")
    stray = [n for n in lr if n not in hr]
    if stray:
        raise BenchmarkError(f"--lr {stray[0]}=...: no --set {stray[0]}=HR_DIR to pair it with")
    for name, folder in [*hr.items(), *lr.items()]:
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise DataError(f"set {name}: folder {folder} {what}")
    return [BenchmarkSet(name, hr[name], lr.get(name)) for name in hr]


def _parse_metrics(text: str) -> tuple[str, ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in EXTRA_METRICS]
    if unknown:
        raise BenchmarkError(f"--metrics: unknown metric(s) {', '.join(unknown)} "
                             f"(choose from {', '.join(EXTRA_METRICS)}, or none)")
    return tuple(dict.fromkeys(names))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m esrgan.benchmark",
        description="Score a generator checkpoint (or bicubic upscaling) on benchmark sets\n"
                    "and print the paper-style table beside the published numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="conventions (--convention):\n"
               "  matlab  (default) as MATLAB scripts score 8-bit files: the Y plane rounded\n"
               "          to whole grey levels (rgb2ycbcr of uint8); a grayscale HR file\n"
               "          scored on its grey values 0..255 (SR: 0.299R+0.587G+0.114B).\n"
               "          Reproduces the paper's bicubic row: Set5 28.419/0.8102,\n"
               "          Set14 25.993/0.7024, BSD100 25.958/0.6674 (paper 28.42/0.8104,\n"
               "          26.00/0.7027, 25.96/0.6675).\n"
               "  float   Y of the 8-bit RGB values, not rounded; grayscale = three equal\n"
               "          channels (esrgan.evaluate, BasicSR's Python metrics): bicubic\n"
               "          Set5 28.431/0.8113, Set14 26.092/0.7050, BSD100 25.963/0.6682.\n"
               "Outputs: benchmark.md, benchmark.csv (ours, published, diff = ours -\n"
               "published) and per_image.csv in --out. Bad input: one 'error:' line, exit 2.")
    p.add_argument("--weights", type=Path, default=None,
                   help="generator checkpoint (any published layout); omit it, or give "
                        "'bicubic', to benchmark MATLAB bicubic upscaling (no network)")
    p.add_argument("--params", choices=PARAMS_CHOICES, default="auto", help=PARAMS_HELP)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=HR_DIR",
                   help="a benchmark set and its HR folder (repeat for several sets); names "
                        "of the paper's table (Set5, Set14, BSD100, Urban100, Manga109) get "
                        "the published numbers")
    p.add_argument("--lr", action="append", default=[], metavar="NAME=LR_DIR",
                   help="LR files for set NAME (babyx4.png or baby.png for baby.png); "
                        "default: made from the HR by MATLAB bicubic, rounded to 8 bits")
    p.add_argument("--scale", type=int, default=None,
                   help="upscaling factor (default: the network's, 4 for bicubic)")
    p.add_argument("--tile", type=int, default=None,
                   help="LR tile size for the network (default: whole image)")
    p.add_argument("--tile-overlap", type=int, default=16,
                   help="LR context around each tile (default 16; the table equals the "
                        "untiled one at >= the receptive field, 349 for the paper net)")
    p.add_argument("--convention", choices=CONVENTIONS, default="matlab",
                   help="how the 8-bit images are scored (default matlab; see below)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"extra metrics beside PSNR/SSIM, comma-separated from "
                        f"{', '.join(EXTRA_METRICS)}, or none (default "
                        f"{','.join(DEFAULT_METRICS)}); pi, ma, lpips and dists need their "
                        "weight files (`make weights`), else 'unavailable'")
    p.add_argument("--iqa-weights", type=Path, default=None,
                   help="folder with pyiqa weight files for ma, pi, lpips")
    p.add_argument("--published", choices=("auto", *METHODS, "none"), default="auto",
                   help="published row to compare with (default auto: RRDB_PSNR with "
                        "--weights, Bicubic without)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/benchmark/<weights stem>-<digest of "
                        "its path>, or runs/benchmark/bicubic)")
    p.add_argument("--device", default="auto",
                   help="torch device for the network (default auto: cuda if available)")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BenchmarkError(f"--device {name}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError(f"--device {name}: CUDA is not available")
    return device


def default_out_dir(weights: Path | None) -> Path:
    """``runs/benchmark/<name>``: one folder per input file, so that two cells' ``G_gan.pth``
    never write into the same folder (the name ends with a digest of the file's full path)."""
    if weights is None:
        return DEFAULT_OUT_ROOT / "bicubic"
    digest = hashlib.sha256(str(weights.resolve()).encode()).hexdigest()[:8]
    return DEFAULT_OUT_ROOT / f"{weights.stem}-{digest}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, one line already printed)
        return int(exc.code or 0)
    bicubic = args.weights is None or str(args.weights).lower() == "bicubic"
    try:
        if not args.sets:
            raise BenchmarkError("no benchmark set: give --set NAME=HR_DIR (e.g. Set5=HR)")
        if args.tile is not None and args.tile < 1:
            raise BenchmarkError(f"--tile must be >= 1, got {args.tile}")
        if args.tile_overlap < 0:
            raise BenchmarkError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
        if args.scale is not None and args.scale < 1:
            raise BenchmarkError(f"--scale must be >= 1, got {args.scale}")
        metrics = _parse_metrics(args.metrics)
        sets = _sets_from_args(args.sets, args.lr)
        device = _device(args.device)
        model = None
        if bicubic:
            label, scale = "bicubic", args.scale or 4
        else:
            model = load_generator(args.weights, params=args.params).to(device).eval()
            label, scale = str(args.weights), args.scale or model.scale
            if scale != model.scale:
                raise BenchmarkError(f"--scale {scale}: {args.weights} upscales x{model.scale}")
        row = {"auto": "Bicubic" if bicubic else "RRDB_PSNR", "none": None}.get(
            args.published, args.published)
        out_dir = args.out or default_out_dir(None if bicubic else args.weights)
        check_output_dir(out_dir)
        result = run_benchmark(sets, model, scale=scale, label=label, tile=args.tile,
                               overlap=args.tile_overlap, metrics=metrics,
                               convention=args.convention, device=device,
                               iqa_weights=args.iqa_weights, progress=True)
        table, notes = paper_table(result, row)
        markdown = to_markdown(result, table, notes, row)
        paths = write_outputs(out_dir, result, table, markdown, row)
    except torch.OutOfMemoryError:
        print("error: out of memory on the device (try a smaller --tile)", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as exc:  # Data/Checkpoint/Metric errors too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown, end="")
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

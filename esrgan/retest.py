"""Re-score the kept checkpoints of a training run on benchmark folders: a table and a curve.

    python -m esrgan.retest work/stage1/<stage1 key> work/stage2/<cell key> \\
        --set Set5=HR_DIR [--set Set14=HR_DIR ...] [--metrics niqe] [--out DIR]

Each FOLDER is a stage's checkpoint folder (give both of a cell for its whole training): its
kept periodic checkpoints ``checkpoint_<step>.pth`` (``keep_last``), the resume point
``checkpoint.pth`` and the best generators ``best_<metric>.pth``; a checkpoint file may be
given too. Every distinct (stage, step) is scored once, with ``esrgan.benchmark``'s scoring
(MATLAB bicubic LR, PSNR/SSIM-Y under ``--convention``, the ``--metrics``), on the moving
average when the run kept one (``--params``, as the run validated it) and the raw weights
otherwise.

Outputs, in ``--out`` (default ``runs/retest``): ``retest.csv`` (one row per checkpoint and
set: stage, step, what kept it, the file, the scores) and ``retest.png`` (each metric against
the step, one line per stage and set; the best files marked). Bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from esrgan.benchmark import (
    CONVENTIONS,
    BenchmarkError,
    BenchmarkSet,
    _device,
    _parse_metrics,
    _Parser,
    _sets_from_args,
    run_benchmark,
)
from esrgan.checkpoints import best_files, kept_checkpoints
from esrgan.files import atomic_write, check_output_dir
from esrgan.metrics import METRICS
from esrgan.weights import (
    PARAMS_CHOICES,
    PARAMS_HELP,
    CheckpointError,
    load_checkpoint,
    load_generator,
)

DEFAULT_OUT = Path("runs") / "retest"


@dataclass
class Kept:
    """One kept generator: its stage and step, what kept it, and the file it comes from."""

    path: Path
    stage: int
    step: int
    kinds: list[str] = field(default_factory=list)  # 'periodic', 'latest', 'best_<metric>'


def _kept_in(folder: Path) -> dict[Path, str]:
    """The files a stage folder keeps (``esrgan.train``'s names), each with what kept it."""
    resume = folder / "checkpoint.pth"
    found = {resume: "latest"} if resume.is_file() else {}
    found.update({path: "periodic" for _, path in kept_checkpoints(resume)})
    found.update({path: path.stem for path in best_files(resume)})
    return found


def _generator_dict(obj: object, source: str) -> dict:
    """A BasicSR-layout dict (``params``, ``params_ema``, ``arch``) of a training checkpoint
    or a best file."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: not a checkpoint of a training run")
    if "params" in obj:  # a best file (or any generator file)
        return obj
    if "generator" not in obj:
        raise CheckpointError(f"{source}: no generator weights (not a checkpoint of a run)")
    out = {"params": obj["generator"]}
    ema = obj.get("generator_ema")
    if isinstance(ema, dict):  # an AveragedModel's state: module.<key> and n_averaged
        out["params_ema"] = {k.removeprefix("module."): v for k, v in ema.items()
                             if k.startswith("module.")}
    if isinstance(obj.get("arch"), dict):
        out["arch"] = obj["arch"]
    return out


def find_kept(folders: Sequence[Path]) -> list[Kept]:
    """Every kept generator of ``folders`` (stage folders or checkpoint files), one per
    (stage, step), ordered by stage and step. Raises BenchmarkError when there is none."""
    files: dict[Path, str] = {}
    for folder in folders:
        if folder.is_file():
            if folder.suffix != ".pth":
                raise BenchmarkError(f"{folder}: not a checkpoint (give a stage's folder or "
                                     "a .pth file)")
            files[folder] = _kept_in(folder.parent).get(folder, "file")
        elif folder.is_dir():
            found = _kept_in(folder)
            if not found:
                raise BenchmarkError(f"{folder}: no checkpoint.pth, checkpoint_<step>.pth or "
                                     "best_<metric>.pth here (a stage's checkpoint folder?)")
            files.update(sorted(found.items()))
        else:
            raise BenchmarkError(f"{folder} does not exist")
    kept: dict[tuple[int, int], Kept] = {}
    for path, kind in files.items():
        obj = load_checkpoint(path)
        if not isinstance(obj, dict) or "step" not in obj:
            raise CheckpointError(f"{path}: no step recorded (not a file a training run kept)")
        stage, step = int(obj.get("stage", 0)), int(obj["step"])
        entry = kept.setdefault((stage, step), Kept(path, stage, step))
        entry.kinds.append(kind)
    return [kept[k] for k in sorted(kept)]


def load_kept(entry: Kept, params: str = "auto") -> nn.Module:
    """The generator of a kept file, its architecture from the file (else from its keys)."""
    obj = _generator_dict(load_checkpoint(entry.path), str(entry.path))
    return load_generator(obj, params=params, source=str(entry.path))


def retest(folders: Sequence[Path], sets: Sequence[BenchmarkSet], *,
           metrics: Sequence[str] = ("niqe",), params: str = "auto",
           convention: str = "matlab", device: str | torch.device = "cpu",
           tile: int | None = None, iqa_weights: Path | None = None,
           progress: bool = False) -> pd.DataFrame:
    """Score every kept generator of ``folders`` on ``sets``: one row per (checkpoint, set)
    with stage, step, kinds, file, images, psnr, ssim and the ``metrics``."""
    rows = []
    entries = find_kept(folders)
    for entry in tqdm(entries, desc="checkpoints", disable=not progress):
        model = load_kept(entry, params).to(device).eval()
        result = run_benchmark(sets, model, scale=model.scale, label=entry.path.name,
                               tile=tile, metrics=metrics, convention=convention,
                               device=device, iqa_weights=iqa_weights)
        for set_name, scores in result.per_set.iterrows():
            rows.append({"stage": entry.stage, "step": entry.step,
                         "kept_as": "+".join(entry.kinds), "file": str(entry.path),
                         "set": set_name, **scores.to_dict()})
    table = pd.DataFrame(rows)
    return table.astype({"images": int}) if len(table) else table


def curve_png(table: pd.DataFrame) -> bytes:
    """Each metric against the step (one panel per metric; a line per stage and set; the
    best files circled), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in table.columns if c in METRICS and table[c].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for (stage, set_name), rows in table.groupby(["stage", "set"], sort=True):
            rows = rows.sort_values("step")
            (line,) = ax.plot(rows["step"], rows[metric], marker=".",
                              label=f"stage {stage}, {set_name}")
            best = rows[rows["kept_as"].str.contains("best_")]
            ax.scatter(best["step"], best[metric], s=90, facecolors="none",
                       edgecolors=line.get_color())
        ax.set_xlabel("step (of its stage)")
        arrow = "higher" if METRICS[metric].higher_is_better else "lower"
        ax.set_title(f"{METRICS[metric].label} ({arrow} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("kept checkpoints re-scored (circles: best by validation)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m esrgan.retest",
                description="Re-score every kept checkpoint of a run's stage folders on "
                            "benchmark sets; writes retest.csv and retest.png.")
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                   help="a stage's checkpoint folder (work/stage1/<key>, work/stage2/<key>) "
                        "or a checkpoint file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=HR_DIR",
                   help="a set and its HR folder (repeat for several)")
    p.add_argument("--lr", action="append", default=[], metavar="NAME=LR_DIR",
                   help="LR files for set NAME (default: MATLAB bicubic of the HR)")
    p.add_argument("--metrics", default="niqe",
                   help="extra metrics beside PSNR/SSIM, comma-separated, or none")
    p.add_argument("--params", choices=PARAMS_CHOICES, default="auto", help=PARAMS_HELP)
    p.add_argument("--convention", choices=CONVENTIONS, default="matlab",
                   help="how the 8-bit images are scored (esrgan.benchmark; default matlab)")
    p.add_argument("--tile", type=int, default=None, help="LR tile size (default: whole image)")
    p.add_argument("--iqa-weights", type=Path, default=None,
                   help="folder with pyiqa weight files for ma, pi, lpips")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if any)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if not args.sets:
            raise BenchmarkError("no set to score on: give --set NAME=HR_DIR")
        if args.tile is not None and args.tile < 1:
            raise BenchmarkError(f"--tile must be >= 1, got {args.tile}")
        metrics = _parse_metrics(args.metrics)
        sets = _sets_from_args(args.sets, args.lr)
        device = _device(args.device)
        check_output_dir(args.out)
        table = retest(args.folders, sets, metrics=metrics, params=args.params,
                       convention=args.convention, device=device, tile=args.tile,
                       iqa_weights=args.iqa_weights, progress=True)
        paths = [args.out / "retest.csv", args.out / "retest.png"]
        atomic_write(paths[0], table.to_csv(index=False, na_rep="n/a",
                                            float_format="%.6f").encode(), what="the table")
        atomic_write(paths[1], curve_png(table), what="the curve")
    except torch.OutOfMemoryError:
        print("error: out of memory on the device (try a smaller --tile)", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = table.drop(columns=["file"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

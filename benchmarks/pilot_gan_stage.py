"""Pilots of the GAN stage on the validation photos: one difference from a base regime per arm.

Each arm is the ``cpu`` preset's cell (full ESRGAN) with a few config overrides, trained for a
few seeds with ``experiments/run.py`` (test sets off: pilots never look at the held-out photos).
The table gives, per arm, the mean over seeds of the GAN model's validation NIQE-Y, its
periodic-artifact index (``esrgan.metrics.artifact_index``, with bicubic's beside it) and its
PSNR-Y minus its PSNR-oriented model's.

    python benchmarks/pilot_gan_stage.py run  [--arms a b ...] [--seeds 0 1] [--jobs 2]
    python benchmarks/pilot_gan_stage.py table [--arms ...] [--seeds ...] [--out docs/x.md]

Both are resumable: a finished (arm, seed) is not trained again. ``--base k=v ...`` changes the
regime every arm starts from (e.g. a chosen GAN regime, to search around it). Runs go to
``--work`` (default ``runs/pilots``; its file store at ``<work>/runs``).
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# arm -> overrides of the base regime (one difference each; "base" is the regime itself)
ARMS: dict[str, dict[str, Any]] = {
    "base": {},
    "no adversarial term (lambda 0)": {"lambda_adv": 0.0},
    "no perceptual term": {"percep_weight": 0.0},
    "VGG conv3_4": {"vgg_layer": "conv3_4"},
    "VGG conv4_4": {"vgg_layer": "conv4_4"},
    "VGG average pooling": {"vgg_pool": "avg"},
    "no perceptual normaliser": {"percep_normalize": False},
    "lambda 1e-3": {"lambda_adv": 1e-3},
    "L1 weight eta 0.1": {"eta_l1": 0.1},
    "L1 weight eta 1": {"eta_l1": 1.0},
    "D width 64": {"d_nf": 64},
    "stage-2 patch 128": {"patch2": 128},
    "stage-2 steps 1500": {"steps2": 1500},
    "stage-1 lr 2e-4": {"lr1": 2e-4},
    # features smooth in the image instead of the random VGG19's (issue 29)
    "gabor bank": {"percep_net": "gabor"},
    "gabor bank, energy": {"percep_net": "gabor_energy"},
    "gabor bank + low-pass residual": {"percep_net": "gabor", "gabor_lowpass": 1.0},
    # around the bank with its low-pass residual (two differences from the default each)
    "gabor bank + low-pass residual, energy": {"percep_net": "gabor_energy",
                                               "gabor_lowpass": 1.0},
    "gabor bank + low-pass residual + SN D": {"percep_net": "gabor", "gabor_lowpass": 1.0,
                                              "d_spectral_norm": True},
    "gabor bank + low-pass residual, lambda 5e-2": {"percep_net": "gabor",
                                                    "gabor_lowpass": 1.0, "lambda_adv": 5e-2},
    "gabor bank + low-pass residual, lambda 2e-2": {"percep_net": "gabor",
                                                    "gabor_lowpass": 1.0, "lambda_adv": 2e-2},
    "gabor bank + low-pass residual, lambda 1e-1": {"percep_net": "gabor",
                                                    "gabor_lowpass": 1.0, "lambda_adv": 1e-1},
    # the bank with its low-pass residual, given the adversarial term more room
    "gabor bank + low-pass residual, 1000 GAN steps": {"percep_net": "gabor",
                                                       "gabor_lowpass": 1.0, "steps2": 1000},
    "gabor bank + low-pass residual, lambda 2e-2, 1000 GAN steps": {
        "percep_net": "gabor", "gabor_lowpass": 1.0, "lambda_adv": 2e-2, "steps2": 1000},
    "gabor bank + low-pass residual, lambda 5e-2, 1000 GAN steps": {
        "percep_net": "gabor", "gabor_lowpass": 1.0, "lambda_adv": 5e-2, "steps2": 1000},
    "gabor bank + low-pass residual, stage-2 patch 128": {"percep_net": "gabor",
                                                          "gabor_lowpass": 1.0, "patch2": 128},
    "gabor bank + low-pass residual 0.25, lambda 2e-2": {
        "percep_net": "gabor", "gabor_lowpass": 0.25, "lambda_adv": 2e-2},
    "VGG on blurred input sigma 1.5": {"percep_blur": 1.5},
    "VGG on blurred input sigma 3": {"percep_blur": 3.0},
    # the adversarial side
    "SN D": {"d_spectral_norm": True},
    "lr_d 2.5e-5": {"lr_d": 2.5e-5},
}
# what every pilot shares: the random VGG19 (offline), no test sets, a quiet run
PILOT = {"vgg_weights": "random", "test_sets": [], "progress": False, "tb_dir": ""}


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def arm_overrides(arm: str, seed: int, base: dict[str, Any], work: Path) -> dict[str, Any]:
    return {**PILOT, **base, **ARMS[arm], "seed": seed, "work_dir": str(work / "work")}


def arm_config(arm: str, seed: int, base: dict[str, Any], work: Path) -> dict[str, Any]:
    """The resolved config of one pilot run."""
    from experiments import presets

    return presets.resolve("cpu", arm_overrides(arm, seed, base, work))


def out_dir(cfg: dict[str, Any]) -> Path:
    from experiments import identity

    return Path(cfg["work_dir"]) / "stage2" / identity.cell_key(cfg)


def _overrides(cfg: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The command line's ``key=value`` list: every key given, and the normaliser, which
    otherwise follows ``vgg_weights`` (so that an arm can switch it off)."""
    return [f"{k}={cfg[k]!r}" for k in {**given, "percep_normalize": None}]


def run_one(arm: str, seed: int, base: dict[str, Any], work: Path, threads: int) -> str:
    cfg = arm_config(arm, seed, base, work)
    if (out_dir(cfg) / "metrics.csv").is_file():
        return f"{arm} seed {seed}: done before"
    log = work / "logs" / f"{out_dir(cfg).name}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "--runs",
           str(work / "runs"), "with", "cpu",
           *_overrides(cfg, arm_overrides(arm, seed, base, work))]
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    return f"{arm} seed {seed}: {'ok' if rc == 0 else f'FAILED (rc {rc}, {log})'}"


def measure(arm: str, seed: int, base: dict[str, Any], work: Path) -> dict[str, float] | None:
    """The val scores of one pilot: NIQE and PSNR of the GAN model and its PSNR model (the
    run's metrics.csv), and the artifact index of both and of bicubic, computed here from the
    saved generators (so that every arm is read with the same index)."""
    import torch

    from esrgan.data.embedded import embedded_pairs
    from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL, bicubic_images, super_resolve
    from esrgan.metrics import artifact_index
    from esrgan.weights import load_generator

    cfg = arm_config(arm, seed, base, work)
    folder = out_dir(cfg)
    if not (folder / "metrics.csv").is_file():
        return None
    with (folder / "metrics.csv").open() as f:
        rows = {r["model"]: r for r in csv.DictReader(f) if r["set"] == "val"}
    gan, psnr_model = rows[GAN_MODEL], rows[PSNR_MODEL]
    scale = int(cfg["scale"])
    pairs = embedded_pairs("val", scale=scale)
    images = {BICUBIC: bicubic_images(pairs, scale)}
    for model, name in ((GAN_MODEL, "G_gan.pth"), (PSNR_MODEL, "G_psnr.pth")):
        images[model] = super_resolve(load_generator(folder / name), pairs,
                                      torch.device("cpu"))
    index = {model: sum(artifact_index(img, p.hr, scale) for img, p in
                        zip(imgs, pairs, strict=True)) / len(pairs)
             for model, imgs in images.items()}
    return {"niqe": float(gan["niqe"]), "niqe_psnr_model": float(psnr_model["niqe"]),
            "artifact_gan": index[GAN_MODEL], "artifact_psnr_model": index[PSNR_MODEL],
            "artifact_bicubic": index[BICUBIC],
            "psnr_cost": float(gan["psnr"]) - float(psnr_model["psnr"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "pilots")
    parser.add_argument("--out", type=Path, help="write the table (markdown) here too")
    args = parser.parse_args(argv)
    base = dict((kv.split("=", 1)[0], _value(kv.split("=", 1)[1])) for kv in args.base)
    if args.what == "run":
        # the seeds of one arm first, so that the jobs in flight train different stage-1
        # models (or reuse the ones already cached)
        todo = [(a, s) for a in args.arms for s in args.seeds]
        threads = max(1, (os.cpu_count() or 2) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda t: run_one(*t, base, args.work, threads), todo):
                print(line, flush=True)
        return
    print(table(args.arms, args.seeds, base, args.work, args.out))


def table(arms: list[str], seeds: list[int], base: dict[str, Any], work: Path,
          out: Path | None) -> str:
    import numpy as np

    lines = ["| arm | seeds | NIQE-Y (GAN) | NIQE-Y (PSNR model) | artifact index (GAN) | "
             "artifact index (PSNR model) | artifact index (bicubic) | "
             "PSNR-Y GAN - PSNR model |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        rows = [r for s in seeds if (r := measure(arm, s, base, work)) is not None]
        if not rows:
            continue

        def cell(key: str, fmt: str = "{:.2f}", rows: list = rows) -> str:
            values = np.array([r[key] for r in rows])
            per_seed = ", ".join(fmt.format(v) for v in values)
            return f"{fmt.format(values.mean())} ({per_seed})"

        lines.append(f"| {arm} | {len(rows)} | {cell('niqe')} | {cell('niqe_psnr_model')} | "
                     f"{cell('artifact_gan', '{:.3f}')} | {cell('artifact_psnr_model', '{:.3f}')}"
                     f" | {cell('artifact_bicubic', '{:.3f}')} | {cell('psnr_cost', '{:+.2f}')} |")
    text = "\n".join(lines)
    if out:
        out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()

"""The bf16 quality guard (not a test): python benchmarks/bench_precision.py [--presets tiny cpu]

For each preset, real runs of experiments/run.py with the same seed and steps: plain fp32,
full bf16 (``precision1=bf16 precision2=bf16``) and the mixed setting (stage 1 in bf16, stage 2
``bf16-losses``: G in fp32, VGG19 and D in bf16), both bf16 ones with ``channels_last=True``,
and a control in fp32 with the fused Adam kernel (rounding alone: the floor a precision
difference is read against), all with ``vgg_weights=random`` (a random VGG19 has the ImageNet
one's cost; no file needed). Prints the validation PSNR-Y of the PSNR-oriented
(stage 1) and the GAN (stage 2) generator of each, the GAN model's NIQE-Y and periodic-artifact
index, their differences against the guard (|bf16 - fp32| <= 0.05 dB PSNR for both models;
for the GAN model also NIQE within the ledger's smallest NIQE effect of interest and an
artifact index at most 0.005 above fp32's; validation metrics are always computed in fp32),
and the training seconds of each stage with the speed-up. About 30 s for tiny and 7 min a
setting for cpu on 2 cores (``--paths`` picks the settings);
nothing else should run meanwhile (shared cores distort the times, not the PSNR).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esrgan.paper.claims import NIQE_DELTA

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = REPO_ROOT / "experiments" / "run.py"
GUARD_DB = 0.05
GUARD_ARTIFACTS = 0.005  # a grid of 2 grey levels adds about 0.015 (esrgan.metrics.artifacts)
PATHS = {"fp32": ["precision1=fp32", "precision2=fp32", "channels_last=False"],
         "bf16 + channels_last": ["precision1=bf16", "precision2=bf16", "channels_last=True"],
         "bf16 / bf16-losses + CL": ["precision1=bf16", "precision2=bf16-losses",
                                     "channels_last=True"],
         # fp32 with another Adam kernel: how far rounding alone moves the models, i.e. the
         # noise floor a precision difference is read against
         "fp32, fused Adam (control)": ["precision1=fp32", "precision2=fp32",
                                        "channels_last=False", "adam=fused"]}


def run(preset: str, switches: list[str], folder: Path) -> dict:
    """One run in ``folder`` (its own file store and work dir); returns Sacred's result."""
    folder.mkdir(parents=True)
    env = {**os.environ, "ESRGAN_RUNS": str(folder / "runs")}
    proc = subprocess.run([sys.executable, str(RUN), "with", preset, "vgg_weights=random",
                           "progress=False", *switches], cwd=folder, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {preset} {switches}\n{proc.stderr[-2000:]}")
    (record,) = [json.loads((r / "run.json").read_text())
                 for r in (folder / "runs").iterdir() if r.name.isdigit()]
    return record["result"]


def guard(fast: dict, ref: dict) -> tuple[list[str], bool]:
    """The differences of a fast setting against fp32 on val, and whether all are in bounds:
    PSNR of both models, NIQE and the artifact index of the GAN model."""
    checks, passed = [], True
    bounds = [("psnr_model", "psnr", GUARD_DB, "stage 1 PSNR {:+.3f} dB"),
              ("gan_model", "psnr", GUARD_DB, "GAN PSNR {:+.3f} dB"),
              ("gan_model", "niqe", NIQE_DELTA, "GAN NIQE {:+.3f}"),
              ("gan_model", "artifacts", GUARD_ARTIFACTS, "GAN artifact index {:+.4f}")]
    for model, metric, bound, text in bounds:
        diff = fast[model]["val"][metric] - ref[model]["val"][metric]
        ok = diff <= bound if metric == "artifacts" else abs(diff) <= bound
        checks.append(text.format(diff) + ("" if ok else f" (bound {bound})"))
        passed = passed and ok
    return checks, passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu"])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="which settings to run (fp32, the baseline, always runs)")
    args = parser.parse_args()
    paths = {label: PATHS[label] for label in PATHS if label == "fp32" or label in args.paths}
    verdicts: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        for preset in args.presets:
            t0 = time.perf_counter()
            results = {label: run(preset, switches, Path(tmp) / preset / str(i))
                       for i, (label, switches) in enumerate(paths.items())}
            print(f"\npreset {preset} ({time.perf_counter() - t0:.0f} s for {len(results)} runs)")
            print(f"  {'':26s} {'PSNR-Y stage 1':>14s} {'PSNR-Y GAN':>11s} "
                  f"{'train s stage 1':>15s} {'stage 2':>8s}")
            for label, result in results.items():
                print(f"  {label:26s} {result['psnr_model']['val']['psnr']:14.3f} "
                      f"{result['gan_model']['val']['psnr']:11.3f} "
                      f"{result['seconds']['stage1']:15.1f} {result['seconds']['stage2']:8.1f}")
            ref = results["fp32"]
            for label, fast in list(results.items())[1:]:
                checks, passed = guard(fast, ref)
                verdicts[(preset, label)] = passed
                speed = [ref["seconds"][s] / fast["seconds"][s] for s in ("stage1", "stage2")]
                print(f"  {label:26s} - fp32: {', '.join(checks)} "
                      f"({'PASS' if passed else 'FAIL'}); training "
                      f"{speed[0]:.2f}x / {speed[1]:.2f}x faster")
    print()
    for (preset, label), ok in verdicts.items():
        print(f"quality guard {preset:5s} {label:26s}: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

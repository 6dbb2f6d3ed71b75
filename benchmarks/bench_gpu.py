"""Stage-1 and stage-2 step times of the ``paper`` preset on a GPU, eager vs fast path.

    python benchmarks/bench_gpu.py                      # on a CUDA machine (a few minutes)
    python benchmarks/bench_gpu.py --device cpu --preset tiny --budget 5   # smoke run

Without CUDA (and no ``--device``) it prints that it skipped and exits 0, so ``make bench``
runs everywhere. The steps are those of the experiment (``esrgan.train.train_psnr`` /
``train_gan`` built through ``experiments.build``, timestamped through their log callback as
in bench_training.py), on the embedded training photos. Settings compared:

- eager fp32 (the baseline, same code);
- fast: bf16 autocast + channels_last + fused Adam + torch.compile(mode='reduce-overhead')
  (CUDA graphs); its compile time is printed apart from its step times.

Target (issue 8): stage 2 <= 35 ms per step on an H200. Prints the card, torch version, date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import torch  # noqa: E402
from bench_training import StepClock, bench_settings, run_until_budget  # noqa: E402

from esrgan.archs.vgg import imagenet_weights_path  # noqa: E402
from esrgan.train import train_gan, train_psnr  # noqa: E402
from experiments import build, presets  # noqa: E402

SETTINGS = {
    "eager fp32 (baseline)": {"precision": "fp32", "channels_last": False, "adam": "foreach",
                              "compile": "off"},
    "fast: bf16+CL+fused+compile": {"precision": "bf16", "channels_last": True, "adam": "fused",
                                    "compile": "reduce-overhead"},
}


def config(preset: str, device: str) -> dict:
    vgg = "imagenet" if imagenet_weights_path().is_file() else "random"
    fixed = {"device": device, "progress": False, "vgg_weights": vgg}
    return presets.resolve(preset, fixed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", choices=sorted(presets.NAMED))
    parser.add_argument("--device", default=None, help="default: cuda, skipped if absent")
    parser.add_argument("--budget", type=float, default=20.0, help="timed seconds per phase")
    args = parser.parse_args()
    if args.device is None and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here: skipped (run it on a GPU machine)")
        return 0
    device = torch.device(args.device or "cuda")
    cfg = config(args.preset, str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{dt.date.today()}  {name}  torch {torch.__version__}  preset {args.preset}: "
          f"nf {cfg['nf']} nb {cfg['nb']} gc {cfg['gc']} batch {cfg['batch']} "
          f"HR {cfg['patch']} VGG {cfg['vgg_layer']} ({cfg['vgg_weights']})")
    torch.backends.cudnn.benchmark = True
    pairs = build.train_pairs(cfg, cache_dir=None)
    seed = int(cfg["seed"])
    gan = dict(ragan=bool(cfg["ragan"]), weights=build.gan_weights(cfg),
               lr_d=float(cfg["lr_d"]))
    rows = []
    for label, fields in SETTINGS.items():
        warm = 3 if fields["compile"] == "off" else 5  # compile + CUDA-graph recording
        out = {}
        for stage in (1, 2):
            settings = dataclasses.replace(bench_settings(cfg, stage, warm + 2000), **fields)
            data = build.patch_dataset(cfg, pairs, seed=seed,
                                       length=settings.steps * settings.batch_size)
            batches = functools.partial(build.loader, data, settings, device=device)
            clock = StepClock(f"stage{stage}_lr", warm, args.budget)
            generator = build.make_generator(cfg, seed=0)
            t0 = time.perf_counter()
            if stage == 1:
                train = functools.partial(train_psnr, generator, batches, settings,
                                          device=device, log=clock, progress=False)
            else:
                train = functools.partial(
                    train_gan, generator, build.new_discriminator(cfg),
                    build.make_perceptual_loss(cfg), batches, settings, device=device,
                    log=clock, progress=False, **gan)
            run_until_budget(train)
            warmup_s = clock.stamps[warm - 1] - t0
            out[stage] = (1000 * statistics.median(clock.step_times()), warmup_s)
        rows.append((label, out))
    print(f"{'':30s} {'stage 1 ms':>10s} {'ratio':>6s} {'stage 2 ms':>10s} {'ratio':>6s}  "
          "warm-up s (incl. compile) 1 / 2")
    base = rows[0][1]
    for label, out in rows:
        print(f"{label:30s} {out[1][0]:10.1f} {base[1][0] / out[1][0]:5.2f}x "
              f"{out[2][0]:10.1f} {base[2][0] / out[2][0]:5.2f}x  "
              f"{out[1][1]:.0f} / {out[2][1]:.0f}")
    fast2 = rows[-1][1][2][0]
    print(f"stage 2 fast path: {fast2:.1f} ms per step (target <= 35 ms on an H200: "
          f"{'PASS' if fast2 <= 35 else 'FAIL'} on {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

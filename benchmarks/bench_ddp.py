"""Data-parallel training on the CPU (not a test): python benchmarks/bench_ddp.py

Runs the ``tiny`` preset (more steps than its default, ``vgg_weights=random``) three ways
with the same global batch: one process with all cores (the baseline), one process with one
thread, and ``torchrun --nproc_per_node=2`` (gloo, one thread per process). Prints training
samples per second of each stage (steps x global batch / training seconds, as the run
records them) and the ratios against the baseline. On 2 cores expect little: two processes
share the same cores and add all-reduces; the point of DDP is more machines or GPUs, and its
correctness is tests/test_distributed.py. About 2 minutes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = str(REPO_ROOT / "experiments" / "run.py")
CONFIG = ["tiny", "steps1=300", "steps2=100", "batch=8", "progress=False", "val_crops=0",
          "val_metrics=['psnr']", "ckpt_every=1000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(label: str, launcher: list[str], threads: str | None, folder: Path) -> dict:
    folder.mkdir(parents=True)
    env = {**os.environ, "ESRGAN_RUNS": str(folder / "runs")}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    proc = subprocess.run([*launcher, RUN, "with", *CONFIG], cwd=folder, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-2000:]}")
    (run,) = [r for r in (folder / "runs").iterdir() if r.name.isdigit()]
    result = json.loads((run / "run.json").read_text())["result"]
    batch = 8
    return {stage: result["steps"][stage] * batch / result["seconds"][stage]
            for stage in ("stage1", "stage2")}


def main() -> int:
    py = [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}"]
    cases = [("1 process, all threads (baseline)", py, None),
             ("1 process, 1 thread", py, "1"),
             ("torchrun 2 processes x 1 thread", torchrun, "1")]
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        rates = {label: measure(label, launch, threads, Path(tmp) / str(i))
                 for i, (label, launch, threads) in enumerate(cases)}
    print(f"tiny preset, global batch 8, {os.cpu_count()} CPUs; training samples per second")
    print(f"{'':36s} {'stage 1':>9s} {'ratio':>6s} {'stage 2':>9s} {'ratio':>6s}")
    base = rates[cases[0][0]]
    for label, rate in rates.items():
        print(f"{label:36s} {rate['stage1']:9.1f} {rate['stage1'] / base['stage1']:5.2f}x "
              f"{rate['stage2']:9.1f} {rate['stage2'] / base['stage2']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wall time of one seed of a design: an earlier revision against this checkout, in one run.

    python benchmarks/bench_seed.py [--preset cpu] [--before fe2fa9d] [--design default]
                                    [--jobs 2] [--keep DIR]

Each side runs ``experiments/matrix.py run DESIGN --preset PRESET --seeds 1`` into a fresh
store and work folder (nothing cached is reused), the earlier revision from a temporary git
worktree on this checkout's Python environment. Printed: each side's wall seconds and their
ratio, then per cell the total seconds each run recorded (training, validation, scoring, the
interpolation sweep). Run it alone: two torch jobs on the same cores slow each other many times
over. The CPU is named in the first line (its vector extensions decide the speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model and its widest vector extensions (they decide a step's speed)."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(shown) or 'no AVX2'}), {os.cpu_count()} cores"


def run_side(checkout: Path, folder: Path, preset: str, design: str, jobs: int
             ) -> tuple[float, dict[str, float]]:
    """Wall seconds of one seed of ``design`` run from ``checkout``, and each cell's recorded
    total seconds by its label."""
    folder.mkdir(parents=True)
    env = {**os.environ, "ESRGAN_RUNS": str(folder / "runs"), "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(checkout / "experiments" / "matrix.py"), "run", design,
           "--preset", preset, "--seeds", "1", "--jobs", str(jobs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {checkout}: the matrix failed:\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-2000:]}")
    cells: dict[str, float] = {}
    for run in sorted((folder / "runs").glob("[0-9]*")):
        config = json.loads((run / "config.json").read_text())
        record = json.loads((run / "run.json").read_text())
        info = json.loads((run / "info.json").read_text()).get("esrgan", {})
        seconds = ((record.get("result") or {}).get("seconds") or {}).get("total")
        kind = info.get("kind", "cell")
        label = (f"{kind} {config.get('study')} rrdb={config.get('rrdb')} "
                 f"bn={config.get('bn')} ragan={config.get('ragan')} "
                 f"small_init={config.get('small_init')} beta={config.get('beta')} "
                 f"steps2={config.get('steps2')}")
        if seconds is not None:
            cells[label] = float(seconds)
    return wall, cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--design", default="default")
    parser.add_argument("--before", default="fe2fa9d", help="the earlier revision")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", default=None, help="keep the stores in this folder")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_name()}; one seed of design {args.design}, preset {args.preset}, "
          f"--jobs {args.jobs}")
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="bench-seed-"))
    before = scratch / "checkout-before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before),
                    args.before], check=True, capture_output=True)
    try:
        wall_b, cells_b = run_side(before, scratch / "before", args.preset, args.design,
                                   args.jobs)
        wall_a, cells_a = run_side(REPO, scratch / "after", args.preset, args.design,
                                   args.jobs)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                        str(before)], check=False, capture_output=True)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"wall per seed: before ({args.before}) {wall_b:.0f} s, after {wall_a:.0f} s, "
          f"after/before {wall_a / wall_b:.2f}")
    print(f"{'cell':<95} {'before s':>9} {'after s':>9}")
    for label in sorted(set(cells_b) | set(cells_a)):
        b, a = cells_b.get(label), cells_a.get(label)
        print(f"{label:<95} {b if b is not None else float('nan'):9.1f} "
              f"{a if a is not None else float('nan'):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

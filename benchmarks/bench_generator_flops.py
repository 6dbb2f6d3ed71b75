"""Paper generator forward speed against this machine's matmul peak: bench_generator_flops.py

    python benchmarks/bench_generator_flops.py [--repeats 3]

Prints, measured in one run on this machine (CPU, ``torch.get_num_threads()`` threads):

- the matrix-multiply peak: ``torch.mm`` of square n x n matrices (n = 2048, 4096), best of
  5 runs, GFLOP/s = 2 n^3 / t, in fp32 and in bf16. It is measured at the start and again
  (n = 2048) after every forward case; the ratios use the best of all these, so a moment
  when another process held a core lowers no peak (the spread printed shows how busy it was);
- the forward pass of the paper generator (``build_generator()`` defaults: RRDB, nf 64, nb 23,
  gc 32, x4; random weights) on batch-1 LR patches of 32x32 (the paper's 128x128 HR training
  patch) and 64x64, under ``torch.no_grad``: fp32 eager, fp32 channels_last and bf16 autocast.
  Each line gives the seconds per forward (best of ``--repeats`` (5) after a warm-up call), the
  GFLOP/s and its ratio to the matmul peak of the same dtype (fp32 peak for fp32, bf16 peak
  for bf16).

The FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward: the
convolutions (2 x multiply-accumulates), which are all but a fraction of a percent of the
work; the pointwise ops (LeakyReLU, residual adds and scaling, concatenation copies, nearest
upsampling) are not counted. Another process using the CPU lowers the numbers: run it twice
if they look noisy. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parents[1]

from esrgan.archs.rrdbnet import build_generator  # noqa: E402


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096),
                repeats: int = 5) -> tuple[float, int]:
    """(best GFLOP/s of ``torch.mm`` over the square sizes, the size that reached it)."""
    best_rate, best_n = 0.0, sizes[0]
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        seconds = _best_of(lambda a=a, b=b: torch.mm(a, b), repeats)
        rate = 2 * n ** 3 / seconds / 1e9
        if rate > best_rate:
            best_rate, best_n = rate, n
    return best_rate, best_n


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``x``, as counted by FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per case")
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(torch.get_num_threads()), CPU")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    samples: dict[str, list[tuple[float, int]]] = {
        name: [matmul_peak(dtype)] for name, dtype in dtypes.items()}
    results: list[tuple[str, float, float, str]] = []  # label, seconds, GFLOP/s, peak dtype

    torch.manual_seed(0)
    model = build_generator().eval()
    model_cl = build_generator().eval().to(memory_format=torch.channels_last)
    model_cl.load_state_dict(model.state_dict())
    print("paper generator (RRDB nf64 nb23 gc32 x4, random weights), batch 1, no_grad:")
    for size in (32, 64):
        x = torch.rand(1, 3, size, size)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        flops = count_flops(model, x)
        print(f"  LR {size}x{size} -> HR {4 * size}x{4 * size}: {flops / 1e9:.2f} GFLOP "
              f"({flops / size ** 2 / 1e6:.1f} MFLOP per LR pixel)")
        cases = [
            ("fp32 eager", model, x, nullcontext, "fp32"),
            ("fp32 channels_last", model_cl, x_cl, nullcontext, "fp32"),
            ("bf16 autocast", model, x,
             lambda: torch.autocast("cpu", dtype=torch.bfloat16), "bf16"),
        ]
        for label, net, inp, context, peak_name in cases:
            def forward(net=net, inp=inp, context=context):
                with torch.no_grad(), context():
                    return net(inp)
            seconds = _best_of(forward, args.repeats)
            results.append((f"LR {size}x{size} {label}", seconds, flops / seconds / 1e9,
                            peak_name))
            samples[peak_name].append(matmul_peak(dtypes[peak_name], (2048,), 3))
    peaks = {}
    for name, values in samples.items():
        peaks[name], n = max(values)
        rates = [rate for rate, _ in values]
        print(f"matmul peak {name}: {peaks[name]:7.1f} GFLOP/s (torch.mm {n}x{n}; "
              f"{len(rates)} measurements during the run, {min(rates):.1f} to {max(rates):.1f})")
    print("forward speed (ratio to the matmul peak of the same dtype):")
    for label, seconds, rate, peak_name in results:
        print(f"  {label:29s} {seconds:7.3f} s  {rate:7.1f} GFLOP/s  "
              f"{100 * rate / peaks[peak_name]:5.1f}% of the {peak_name} matmul peak")
    return 0



if __name__ == "__main__":
    sys.exit(main())

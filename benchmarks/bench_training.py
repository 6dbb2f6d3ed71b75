"""Training speed of the ``cpu`` preset (not a test): python benchmarks/bench_training.py

Prints, on this machine and in one run of about two minutes:
- stage-1 (``esrgan.train.train_psnr``) and stage-2 (``esrgan.train.train_gan``) seconds per
  step and steps per second, warm-up steps excluded, on the embedded training photos;
- where a stage-2 step goes: generator, discriminator, VGG19 perceptual loss, optimiser, data
  (measured on the real ``train_gan`` step through module and optimiser hooks);
- the ratio stage-2 / stage-1 step time and the projected training time of one cpu-preset run;
- the torch thread counts, and the CPU time other processes took during each timed phase
  (on shared cores timings inflate, with 2 intra-op threads often many times over);
- the speed switches against plain fp32 eager, same code and same steps: bf16 autocast +
  channels_last (the fast path), + fused Adam, and (``--compile``) torch.compile; ratio per
  stage, against the target of 1.8x on stage 2. Quality of bf16: benchmarks/bench_precision.py.

Everything is built through ``experiments.build`` from the ``cpu`` preset
(``experiments.presets.resolve``), with ``vgg_weights='random'``: a random-weight VGG19 has the
same layers as the ImageNet one, so the same cost, and needs no weight file.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

# sacred 0.8.7 imports pkg_resources (hence setuptools<81); its deprecation warning is noise
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.optim.optimizer import (  # noqa: E402
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from esrgan.data import ImagePair  # noqa: E402
from esrgan.train import StageSettings, train_gan, train_psnr  # noqa: E402
from experiments import build, presets  # noqa: E402

CPU = torch.device("cpu")
# Warm-up steps (first-call allocations, oneDNN primitive creation) run but are not timed.
# Each timed phase stops at MAX_* timed steps or once BUDGET_* seconds are spent (at least
# MIN_TIMED steps): the script stays near two minutes even when the cores are shared.
WARMUP1, MAX1, BUDGET1 = 5, 300, 15.0
WARMUP2, MAX2, BUDGET2 = 3, 60, 30.0
MIN_TIMED = 5
# fp32 eager for the headline and the breakdown; the preset's speed settings are compared
# against it in compare_fast_paths
OVERRIDES = {"vgg_weights": "random", "device": "cpu", "progress": False,
             "precision1": "fp32", "precision2": "fp32", "channels_last": False}
PARTS = ("G", "D", "VGG", "optimizer", "data", "other")
Batches = Callable[[int], Iterable[dict[str, Tensor]]]


def cpu_config() -> dict[str, Any]:
    """The cpu preset's config as Sacred computes it."""
    return presets.resolve("cpu", OVERRIDES)


def bench_settings(cfg: Mapping[str, Any], stage: int, steps: int) -> StageSettings:
    """The stage's settings from the config, shortened to ``steps`` and logging every step.

    Shortening moves the learning-rate milestones (fractions of ``steps``): that changes
    values, not cost. ``log_every=1`` lets the log callback timestamp every step.
    """
    return dataclasses.replace(build.stage_settings(cfg, stage), steps=steps, log_every=1,
                               ckpt_every=0)


def batch_source(cfg: Mapping[str, Any], pairs: list[ImagePair], settings: StageSettings,
                 seed: int) -> Batches:
    """``batches(start)`` exactly as experiments/run.py makes it."""
    data = build.patch_dataset(cfg, pairs, seed=seed, length=settings.steps * settings.batch_size)
    return lambda start: build.loader(data, settings, start, CPU)


class StopTiming(Exception):
    """Raised by StepClock out of a training call whose time budget is spent."""


class StepClock:
    """A ``log`` callback for train_psnr / train_gan that timestamps the end of every step.

    With ``log_every=1`` the training functions call ``log(f'stage{k}_lr', ...)`` once per
    step, right after the step's bookkeeping; the interval between two such calls is one full
    step of the real training loop (batch fetch, forward, backward, optimiser, schedulers,
    loss checks), with nothing of the benchmark's own inside it. Once ``min_timed`` steps
    after the warm-up are done and ``budget_s`` seconds have passed since the warm-up, it
    raises StopTiming (after a complete step: the weights are those of ``steps_done`` steps).
    """

    def __init__(self, marker: str, warmup: int, budget_s: float,
                 min_timed: int = MIN_TIMED) -> None:
        if warmup < 1:
            raise ValueError("warmup must be >= 1: the end of the last warm-up step starts timing")
        self.marker, self.warmup, self.budget_s, self.min_timed = marker, warmup, budget_s, \
            min_timed
        self.stamps: list[float] = []

    def __call__(self, name: str, value: float, step: int) -> None:
        if name != self.marker:
            return
        now = time.perf_counter()
        self.stamps.append(now)
        timed = len(self.stamps) - self.warmup
        if timed >= self.min_timed and now - self.stamps[self.warmup - 1] > self.budget_s:
            raise StopTiming

    @property
    def steps_done(self) -> int:
        return len(self.stamps)

    def step_times(self) -> list[float]:
        """Seconds of each step after the warm-up."""
        ends = self.stamps[self.warmup - 1:]
        return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def run_until_budget(train: Callable[[], object]) -> None:
    """Call a training function; its StepClock ends it early by raising StopTiming."""
    try:
        train()
    except StopTiming:
        pass


def cpu_counters() -> tuple[int, int, int] | None:
    """(all CPU time, busy CPU time, this process's CPU time) in clock ticks, None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return sum(ticks), busy, int(own[11]) + int(own[12])  # utime + stime, all threads


def others_share(before: tuple[int, int, int] | None,
                 after: tuple[int, int, int] | None) -> str:
    """CPU time that other processes took between two snapshots, in % of all CPUs.

    Other work on the cores inflates timings (and, with 2 intra-op threads, far more than its
    share: a thread waiting at a parallel barrier for a descheduled sibling wastes a slice).
    """
    if before is None or after is None or after[0] <= before[0]:
        return "n/a"
    others = (after[1] - before[1]) - (after[2] - before[2])
    return f"{100 * max(others, 0) / (after[0] - before[0]):.0f} %"


class PhaseClock:
    """Where the time of the real training step goes, from hooks on its networks.

    Every hook marks the start of a phase; the time until the next mark belongs to it:
    a network's forward (forward pre-hook; the forward hook hands back to 'other'), its
    backward (full backward pre-hook: the gradient of its output is ready; the backward then
    runs until the next network's backward or the optimiser step starts), the optimiser step
    (global optimiser step hooks), and the batch fetch. On a CPU every op is synchronous, so
    the marks are exact. The hooks change no value: the caller checks that the hooked run
    trains to the same weights as the plain one.
    """

    def __init__(self) -> None:
        self.phase, self.since = "other", time.perf_counter()
        self.totals: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self.handles: list[Any] = []

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.totals[self.phase] += now - self.since
        self.phase, self.since = phase, now

    def attach(self, modules: Mapping[str, nn.Module]) -> None:
        for name, module in modules.items():
            self.handles += [
                module.register_forward_pre_hook(lambda *_, n=name: self.mark(n)),
                module.register_forward_hook(lambda *_: self.mark("other")),
                module.register_full_backward_pre_hook(lambda *_, n=name: self.mark(n)),
            ]
        self.handles += [
            register_optimizer_step_pre_hook(
                lambda *_: self.mark("optimizer")),
            register_optimizer_step_post_hook(
                lambda *_: self.mark("other")),
        ]

    def batches(self, source: Batches) -> Batches:
        """``source`` with the batch fetch timed as 'data'."""

        def timed(start: int) -> Iterator[dict[str, Tensor]]:
            iterator = iter(source(start))
            while True:
                self.mark("data")
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.mark("other")
                yield batch

        return timed

    def snapshot(self) -> dict[str, float]:
        self.mark(self.phase)
        return dict(self.totals)

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()


def gan_step_parts(generator: nn.Module, discriminator: nn.Module, perceptual: nn.Module,
                   batches: Batches, settings: StageSettings, gan: Mapping[str, Any],
                   warmup: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each part of the real ``train_gan`` step (after ``warmup``)."""
    clock = PhaseClock()
    per_step: dict[str, list[float]] = {name: [] for name in (*PARTS, "total")}
    marks: list[tuple[float, dict[str, float]]] = []

    def log(name: str, value: float, step: int) -> None:
        if name == "stage2_lr":  # once per step, after its bookkeeping
            marks.append((time.perf_counter(), clock.snapshot()))
            if len(marks) >= warmup + steps + 1:
                raise StopTiming

    clock.attach({"G": generator, "D": discriminator, "VGG": perceptual})
    try:
        run_until_budget(lambda: train_gan(generator, discriminator, perceptual,
                                           clock.batches(batches), settings, device=CPU,
                                           log=log, progress=False, **gan))
    finally:
        clock.detach()
    for (t_a, a), (t_b, b) in zip(marks[warmup:], marks[warmup + 1:], strict=False):
        for name in PARTS:
            per_step[name].append(b[name] - a[name])
        per_step["total"].append(t_b - t_a)
    return per_step


def max_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the parameters of two copies of one network."""
    with torch.no_grad():
        return max(float((p - q).abs().max())
                   for p, q in zip(a.parameters(), b.parameters(), strict=True))


def load_line() -> str:
    """The 1-minute load average next to the CPU count."""
    load1 = os.getloadavg()[0]
    return f"load average (1 min) {load1:.2f} on {len(os.sched_getaffinity(0))} CPUs"


def summary(times: list[float]) -> tuple[float, float, float]:
    """(median, mean, fastest) seconds per step."""
    return statistics.median(times), statistics.fmean(times), min(times)


FAST_PATHS = {  # label -> StageSettings fields on top of the preset's (fp32 eager);
    # "precision1" is stage 1's precision where it differs from stage 2's
    "fp32 eager (baseline)": {"precision": "fp32", "channels_last": False},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
    "bf16 + channels_last + fused Adam": {"precision": "bf16", "channels_last": True,
                                          "adam": "fused"},
    "bf16 / bf16-losses + CL": {"precision1": "bf16", "precision": "bf16-losses",
                                "channels_last": True},
    "fp32 + channels_last (cpu default)": {"precision": "fp32", "channels_last": True},
}
FAST_BUDGET1, FAST_BUDGET2 = 8.0, 15.0


def compare_fast_paths(cfg: Mapping[str, Any], pairs: list[ImagePair], generator: nn.Module,
                       with_compile: bool) -> None:
    """Median step time of each speed setting, both stages, same code as the experiment."""
    paths = dict(FAST_PATHS)
    if with_compile:
        # the default's arithmetic compiled (what `compile=default` would change for a user),
        # and the fastest eager path compiled
        for eager in ("fp32 + channels_last (cpu default)", "bf16 + channels_last"):
            label = eager.removesuffix(" (cpu default)") + " + compile"
            paths[label] = {**FAST_PATHS[eager], "compile": "default"}
    seed = int(cfg["seed"])
    perceptual = build.make_perceptual_loss(cfg)
    gan = dict(ragan=bool(cfg["ragan"]), weights=build.gan_weights(cfg),
               lr_d=float(cfg["lr_d"]))
    results: dict[str, tuple[float, float, str]] = {}
    for label, fields in paths.items():
        # compile: its first steps are the compilation, so warm up longer
        warm = 3 if fields.get("compile", "off") == "off" else 2
        stage2_fields = {k: v for k, v in fields.items() if k != "precision1"}
        stage1_fields = {**stage2_fields, "precision": fields.get("precision1",
                                                                  stage2_fields["precision"])}
        s1 = dataclasses.replace(bench_settings(cfg, 1, warm + 200), **stage1_fields)
        g1 = copy.deepcopy(generator)
        clock1 = StepClock("stage1_lr", warm, FAST_BUDGET1)
        before = cpu_counters()
        t0 = time.perf_counter()
        run_until_budget(functools.partial(train_psnr, g1, batch_source(cfg, pairs, s1, 0), s1,
                                           device=CPU, log=clock1, progress=False))
        s2 = dataclasses.replace(bench_settings(cfg, 2, warm + 60), **stage2_fields)
        clock2 = StepClock("stage2_lr", warm, FAST_BUDGET2)
        run_until_budget(functools.partial(
            train_gan, copy.deepcopy(generator), build.new_discriminator(cfg),
            perceptual, batch_source(cfg, pairs, s2, seed), s2, device=CPU, log=clock2,
            progress=False, **gan))
        results[label] = (statistics.median(clock1.step_times()),
                          statistics.median(clock2.step_times()),
                          f"{others_share(before, cpu_counters())}, "
                          f"{time.perf_counter() - t0:.0f} s incl. warm-up")
    print()
    print(f"{'speed switches (same code, median step)':44s} {'stage 1 s':>9s} {'ratio':>6s} "
          f"{'stage 2 s':>9s} {'ratio':>6s}  others CPU, wall")
    base1, base2, _ = results["fp32 eager (baseline)"]
    for label, (t1, t2, note) in results.items():
        print(f"{label:44s} {t1:9.3f} {base1 / t1:5.2f}x {t2:9.3f} {base2 / t2:5.2f}x  {note}")
    for label in ("bf16 + channels_last", "bf16 / bf16-losses + CL"):
        fast = base2 / results[label][1]
        print(f"stage-2 speed-up of {label}: {fast:.2f}x (target >= 1.8x: "
              f"{'PASS' if fast >= 1.8 else 'FAIL'})")
    if with_compile:
        default = results["fp32 + channels_last (cpu default)"]
        compiled = results["fp32 + channels_last + compile"]
        print(f"torch.compile of the cpu default (fp32 + channels_last): stage 1 "
              f"{default[0] / compiled[0]:.2f}x, stage 2 {default[1] / compiled[1]:.2f}x "
              "(steps after the compilation; the compilation itself is in the wall time)")


def main() -> None:
    with_compile = "--compile" in sys.argv[1:]
    wall = time.perf_counter()
    cfg = cpu_config()
    problems = presets.validate(cfg)
    if problems:
        raise SystemExit("bench_training: bad config: " + "; ".join(problems))
    print(f"torch {torch.__version__}: intra-op threads {torch.get_num_threads()}, inter-op "
          f"threads {torch.get_num_interop_threads()}, os.cpu_count() {os.cpu_count()}; "
          f"{load_line()}")
    print(f"preset {cfg['preset']}: nf {cfg['nf']}, nb {cfg['nb']} RRDB, gc {cfg['gc']}, "
          f"d_nf {cfg['d_nf']}, batch {cfg['batch']}, HR patch {cfg['patch']}, "
          f"x{cfg['scale']}, {'RaGAN' if cfg['ragan'] else 'standard GAN'}, "
          f"perceptual {cfg['vgg_layer']}")
    print("VGG19: random weights (vgg_weights='random'): the ImageNet file is not on this "
          "machine; same layers, same cost")
    print("data: embedded training photos, batches from build.patch_dataset / build.loader "
          f"(num_workers {cfg['num_workers']})")
    pairs = build.train_pairs(cfg, cache_dir=None)
    rows: list[tuple[str, list[float], str]] = []

    # ---- stage 1: train_psnr itself, steps timestamped through its log callback
    settings1 = bench_settings(cfg, 1, WARMUP1 + MAX1)
    generator = build.make_generator(cfg, seed=int(cfg["stage1_seed"]))
    clock1 = StepClock("stage1_lr", WARMUP1, BUDGET1)
    batches1 = batch_source(cfg, pairs, settings1, int(cfg["stage1_seed"]))
    before = cpu_counters()
    run_until_budget(lambda: train_psnr(generator, batches1, settings1, device=CPU, log=clock1,
                                        progress=False))
    rows.append(("stage 1  train_psnr (L1)", clock1.step_times(),
                 others_share(before, cpu_counters())))

    # ---- stage 2: train_gan itself (timestamped the same way), from the generator above;
    # then the same train_gan again from identical copies, with hooks on its networks for
    # the breakdown (checked to train to the same weights and to cost about the same).
    settings2 = bench_settings(cfg, 2, WARMUP2 + MAX2)
    seed = int(cfg["seed"])
    perceptual = build.make_perceptual_loss(cfg)
    gan = dict(ragan=bool(cfg["ragan"]), weights=build.gan_weights(cfg),
               lr_d=float(cfg["lr_d"]))
    g_train, g_hooked = copy.deepcopy(generator), copy.deepcopy(generator)
    d_train = build.new_discriminator(cfg)
    d_hooked = build.new_discriminator(cfg)
    clock2 = StepClock("stage2_lr", WARMUP2, BUDGET2)
    batches2 = batch_source(cfg, pairs, settings2, seed)
    before = cpu_counters()
    run_until_budget(lambda: train_gan(g_train, d_train, perceptual, batches2, settings2,
                                       device=CPU, log=clock2, progress=False, **gan))
    rows.append(("stage 2  train_gan (G step + D step)", clock2.step_times(),
                 others_share(before, cpu_counters())))

    before = cpu_counters()
    timed_steps = clock2.steps_done - WARMUP2
    parts = gan_step_parts(g_hooked, d_hooked, perceptual, batches2, settings2, gan,
                           WARMUP2 - 1, timed_steps)
    rows.append(("stage 2  train_gan with hooks", parts["total"],
                 others_share(before, cpu_counters())))

    # ---- report
    print()
    print(f"{'step times, warm-up excluded':36s} {'steps':>5s} {'median s':>9s} {'mean s':>7s} "
          f"{'best s':>7s} {'steps/s':>8s} {'others CPU':>10s}")
    stats = {}
    for label, times, others in rows:
        median, mean, best = stats[label] = summary(times)
        print(f"{label:36s} {len(times):5d} {median:9.3f} {mean:7.3f} {best:7.3f} "
              f"{1 / median:8.2f} {others:>10s}")
    print("steps/s from the median step; best = the fastest step; others CPU = CPU time of "
          "other processes\nduring the phase, in % of all CPUs (above ~5 % timings are "
          "inflated, with 2 threads often many times over)")
    t1_median, _, t1_best = stats[rows[0][0]]
    t2_median, _, t2_best = stats[rows[1][0]]
    th_median = stats[rows[2][0]][0]

    print()
    # Shares from the fastest half of the steps (ranked by total): other processes on the
    # cores slow some steps a lot and unevenly between parts; these steps are the cleanest,
    # and averaging whole steps keeps the parts summing to a real step.
    timed = len(parts["total"])
    ranked = sorted(range(timed), key=lambda i: parts["total"][i])[: max(1, timed // 2)]
    means = {name: statistics.fmean(parts[name][i] for i in ranked) for name in PARTS}
    share_total = sum(means.values())
    labels = {"G": "G      generator forward + backward",
              "D": "D      4 forwards, G-step input grads, D-step backward",
              "VGG": "VGG    perceptual loss forward (SR, HR) + backward",
              "optimizer": "optim  Adam steps, G and D",
              "data": "data   batch from the loader",
              "other": "other  losses, zero_grad, requires_grad toggles, schedulers, checks"}
    print(f"stage-2 step breakdown (train_gan with hooks; mean of the fastest {len(ranked)} "
          f"of {timed} steps)")
    for name in PARTS:
        share = 100 * means[name] / share_total
        print(f"  {labels[name]:58s} {means[name]:7.3f} s {share:5.1f} %")
    print(f"  {'step':58s} {share_total:7.3f} s")
    # The hooks must not change the training: same weights after the same steps (the
    # distance G travelled shows that the comparison is not trivially zero).
    d_g, d_d = max_difference(g_train, g_hooked), max_difference(d_train, d_hooked)
    moved = max_difference(g_train, generator)
    verdict = "same training" if max(d_g, d_d) == 0 else "DIFFERENT training: check the hooks"
    print(f"hooked vs plain train_gan after {clock2.steps_done} steps: max |dG| {d_g:.1e}, "
          f"max |dD| {d_d:.1e}, G moved {moved:.1e} from stage 1 ({verdict}); "
          f"median step hooked / plain {th_median / t2_median:.2f}")

    steps1, steps2 = int(cfg["steps1"]), int(cfg["steps2"])
    print()
    print(f"stage-2 / stage-1 step time: {t2_median / t1_median:.1f} (medians), "
          f"{t2_best / t1_best:.1f} (fastest steps)")
    print("projected training time of one cpu-preset run (training only: no validation, NIQE, "
          "evaluation; stage 1 is shared by cells with the same generator):")
    for label, t1, t2 in (("median steps", t1_median, t2_median),
                          ("fastest steps", t1_best, t2_best)):
        proj1, proj2 = steps1 * t1, steps2 * t2
        print(f"  {label:13s} steps1 {steps1} x {t1:.3f} s + steps2 {steps2} x {t2:.3f} s = "
              f"{proj1:.0f} s + {proj2:.0f} s = {(proj1 + proj2) / 60:.1f} min")
    compare_fast_paths(cfg, pairs, generator, with_compile)
    print(f"bench_training: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()

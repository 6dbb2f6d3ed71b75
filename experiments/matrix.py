"""The ablation matrix: designs -> cells -> commands, skipping what the run store already holds.

    python experiments/matrix.py run [DESIGN] [--preset cpu] [--seeds 2] [--jobs 1]
                                     [--budget MINUTES] [--mongo URL] [--runs DIR]
                                     [key=value ...]
    python experiments/matrix.py commands DESIGN [--preset ...] [--seeds ...]   # one per line
    python experiments/matrix.py list DESIGN [--preset ...]                     # cells + status

Designs (the switches and the paper's path: ``esrgan.paper.switches``; the claims each
design tests: ``esrgan.paper.claims``):

- ``default`` = ``claims`` + ``deep``: every claim of the ledger in the regime where it shows.
- ``claims``: ESRGAN, ESRGAN with the standard GAN and with after-activation VGG features
  (both stages), and the PSNR-oriented models of ESRGAN +BN and ESRGAN w/o RRDB.
- ``deep``: claim C1, a deep no-BN residual trunk (stage 1 only) with plain MSRA init, x0.1
  init, beta 0.2 and both.
- ``paper``: the cumulative path of the paper's ablation figure: SRGAN (ResBlock, BN,
  after-activation VGG, standard GAN, beta 1, plain init) -> remove BN -> VGG before activation
  -> RaGAN -> RRDB trunk with beta 0.2 and small init (= full ESRGAN).
- ``one-at-a-time``: full ESRGAN and, for each of the six switches, ESRGAN with that switch
  flipped; ``switches`` = ``paper`` + ``one-at-a-time`` (11 cells per seed).
- ``factorial``: every combination of the six switches (64 cells; for a GPU).

A cell is one configuration and seed; it is one ``experiments/run.py`` command, so cells run
anywhere (``JOBS=N`` here, a SLURM array elsewhere) as long as they share one run store. A cell
is done when the store holds a COMPLETED run with its cell key (``experiments.store.record``).
Interrupted cells simply run again: run.py continues from the cell's checkpoint in
``work_dir``. After the cells, the interpolation sweep (network vs image interpolation and back
projection) runs for the full ESRGAN cell of every seed. With ``--budget`` (``make ablation``'s
BUDGET) the claims still undecided after the preset's first seeds get more seeds while the
minutes last (``analysis.sequential`` plans them; the plan is kept in the file store). The
MongoDB URL reaches the cells through the environment (ESRGAN_MONGO), never their command line
or their logs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm import tqdm

from esrgan.evaluation import GAN_MODEL
from esrgan.paper.claims import BY_ID, CLAIMS, DEEP_STUDY, DEEP_VARIANTS, deep_label
from esrgan.paper.switches import (
    ESRGAN,
    PAPER_PATH,
    PAPER_SWITCHES,
    SRGAN,
    known_labels,
    matches,
    variant_label,
    variant_switches,
)
from experiments import build, identity, presets
from experiments.guards import ALREADY_COMPLETED, BEING_RUN_BY
from experiments.store import completed
from experiments.store.mongo import MongoUnavailable, ping, redact
from experiments.store.plan import LOOKS, Extension, Plan, read_plan, write_plan
from experiments.store.reader import FileStore
from experiments.store.targets import MONGO_ENV, StoreTargets

RUN_PY = Path(__file__).resolve().parent / "run.py"


@dataclass(frozen=True)
class Spec:
    """One configuration of a design: its six switches and the settings the design adds.

    ``overrides`` are the design's defaults for its cells (command-line overrides win over
    them); ``fixed`` make the cell what it is (a stage-1 cell, a study) and always win.
    """

    switches: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    # run only with a trained VGG19: the claim it serves rests on a premise a random one lacks
    trained_vgg_only: str = ""  # the claim, '' for every cell


STAGE1_ONLY = {"steps2": 0}  # a cell that trains and scores the PSNR-oriented model only


def design_paper(preset: str) -> list[Spec]:
    """SRGAN -> -BN -> +before-activation -> +RaGAN -> +RRDB/beta/small init (ESRGAN)."""
    return [Spec(dict(values)) for _, values in PAPER_PATH]


def design_one_at_a_time(preset: str) -> list[Spec]:
    """ESRGAN, then ESRGAN with each of the paper's switches flipped to its SRGAN value
    (a switch the paper does not have is set by an override: ``d_spectral_norm=True``)."""
    return [Spec(dict(ESRGAN))] + [Spec({**ESRGAN, s: SRGAN[s]}) for s in PAPER_SWITCHES]


def design_factorial(preset: str) -> list[Spec]:
    """Every combination of the paper's six switches (extensions at their paper value)."""
    values = [(ESRGAN[s], SRGAN[s]) for s in PAPER_SWITCHES]
    return [Spec({**ESRGAN, **dict(zip(PAPER_SWITCHES, combo, strict=True))})
            for combo in itertools.product(*values)]


def design_deep(preset: str) -> list[Spec]:
    """Claim C1: a deep no-BN residual trunk, stage 1 only, plain MSRA / x0.1 init / beta 0.2
    / both (the trunk's depth and width: ``presets.DEEP``)."""
    base = {**ESRGAN, "rrdb": False, "bn": False}
    return [Spec({**base, **values}, dict(presets.DEEP[preset]),
                 {**STAGE1_ONLY, "study": DEEP_STUDY})
            for values in DEEP_VARIANTS.values()]


def design_claims(preset: str) -> list[Spec]:
    """The cells the claims of the ledger read beside the deep design, computed from
    ``esrgan.paper.claims.CLAIMS``: one spec per variant an effect names, in plot order.

    A variant whose GAN model no effect reads is a stage-1 cell (its PSNR-oriented model
    only); a variant read only by claims whose premise rests on the perceptual network runs
    only with a trained VGG19 (``Spec.trained_vgg_only``). Today: ESRGAN (both stages: C6,
    C7, C8), ESRGAN with the standard GAN (C4) and with after-activation features (C5), and
    the PSNR-oriented models of ESRGAN +BN (C2) and ESRGAN w/o RRDB (C3); beta and x0.1 init
    are tested where the paper makes their claim: at depth (``deep``).
    """
    gan_read: dict[str, bool] = {}
    claims_of: dict[str, set[str]] = {}
    for claim in CLAIMS:
        for effect in claim.effects:
            if effect.study == DEEP_STUDY:
                continue
            for side in (effect.a, effect.b):
                gan_read[side.variant] = gan_read.get(side.variant, False) or \
                    side.model == GAN_MODEL
                claims_of.setdefault(side.variant, set()).add(claim.id)
    specs = []
    for label in [v for v in known_labels() if v in gan_read]:
        premised = sorted(c for c in claims_of[label] if BY_ID[c].needs.has_premise)
        only = premised[0] if premised and len(premised) == len(claims_of[label]) else ""
        specs.append(Spec(variant_switches(label),
                          fixed={} if gan_read[label] else dict(STAGE1_ONLY),
                          trained_vgg_only=only))
    return specs


def design_default(preset: str) -> list[Spec]:
    """What ``make ablation`` runs: every claim in the regime where it can show."""
    return design_claims(preset) + design_deep(preset)


def design_switches(preset: str) -> list[Spec]:
    """The paper's path and the one-switch flips, full cells (the earlier default)."""
    return unique(design_paper(preset) + design_one_at_a_time(preset))


DESIGNS = {"default": design_default, "claims": design_claims, "deep": design_deep,
           "paper": design_paper, "one-at-a-time": design_one_at_a_time,
           "switches": design_switches, "factorial": design_factorial}


def unique(specs: Iterable[Spec]) -> list[Spec]:
    seen, out = set(), []
    for spec in specs:
        key = (tuple(sorted(spec.switches.items())), tuple(sorted(spec.overrides.items())),
               tuple(sorted(spec.fixed.items())))
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out


# ------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` as Sacred reads it on the command line (Python literal, else string)."""
    from sacred.arg_parser import _convert_value

    key, _, value = text.partition("=")
    if not key or not _:
        raise SystemExit(f"error: override {text!r} is not key=value")
    return key, _convert_value(value)


@dataclass
class Cell:
    """One configuration and seed of the matrix, as a run.py command."""

    switches: dict[str, Any]
    seed: int
    preset: str
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "cell"  # or 'interpolation'

    @property
    def overrides(self) -> dict[str, Any]:
        return {**self.switches, **self.extra, "seed": self.seed}

    @cached_property
    def config(self) -> dict[str, Any]:
        """The config run.py will run (computed once: a Sacred config evaluation)."""
        return presets.resolve(self.preset, self.overrides)

    @property
    def key(self) -> str:
        """The cell key run.py will record."""
        return identity.cell_key(self.config)

    def argv(self) -> list[str]:
        cmd = [sys.executable, str(RUN_PY)]
        if self.kind == "interpolation":
            cmd.append("interpolate")
        cmd += ["with", self.preset]
        cmd += [f"{k}={v!r}" for k, v in self.overrides.items()]
        return cmd + ["progress=False"]

    def label(self) -> str:
        prefix = "interpolation " if self.kind == "interpolation" else ""
        name = variant_label(self.switches)
        if self.extra.get("study") == DEEP_STUDY:
            name = "deep " + deep_label(self.switches)
        elif int(self.config["steps2"]) == 0:
            name += " (PSNR model)"
        return f"{prefix}{name} seed {self.seed}"


def make_cells(design: str, preset: str, seeds: Iterable[int],
               extra: Mapping[str, Any]) -> list[Cell]:
    """The design's cells for every seed, in an order that lets ``--jobs`` cells run side by
    side without waiting for each other's stage-1 model (seeds interleaved, then the cells that
    reuse a stage-1 model)."""
    if design not in DESIGNS:
        raise SystemExit(f"error: unknown design {design!r}; choose {sorted(DESIGNS)}")
    specs = [s for s in DESIGNS[design](preset) if not left_out(s, preset, extra)]
    cells = [Cell(spec.switches, seed, preset, {**spec.overrides, **extra, **spec.fixed})
             for spec in specs for seed in seeds]
    first, reusing, owners = [], [], set()
    for cell in cells:
        key = identity.stage1_key(cell.config)
        (reusing if key in owners else first).append(cell)
        owners.add(key)
    return first + reusing


def left_out(spec: Spec, preset: str, extra: Mapping[str, Any]) -> str:
    """Why a spec's cells are not run with these settings ('' when they are): a claim whose
    premise needs a trained VGG19 reads 'premise not met' with a random one, whatever its
    runs show, so its own cells could not change a verdict."""
    if not spec.trained_vgg_only:
        return ""
    cfg = presets.resolve(preset, {**spec.overrides, **extra, **spec.fixed, **spec.switches})
    if cfg["vgg_weights"] != "random":
        return ""
    return (f"{variant_label(spec.switches)} (claim {spec.trained_vgg_only}) is left out: its "
            "premise needs a trained VGG19, and with a random one the ledger reads 'premise "
            "not met' (measured on the VGG19 in use) whatever the runs show; `make weights` "
            "gets the ImageNet VGG19")


def interpolation_cells(cells: list[Cell]) -> list[Cell]:
    """The sweep of each seed's full ESRGAN cell (only when the design has one)."""
    return [Cell(c.switches, c.seed, c.preset, c.extra, kind="interpolation")
            for c in cells if matches(c.switches, ESRGAN) and int(c.config["steps2"]) > 0
            and c.config["study"] == "ablation"]


def is_done(cell: Cell, done: set[tuple[str, str]]) -> bool:
    return (cell.kind, cell.key) in done


# ------------------------------------------------------------------------------------------


def vgg_fallback(preset: str, extra: dict[str, Any]) -> str | None:
    """The VGG19 in use, for the opening line: a random one when the ImageNet file is missing
    (and say so); ValueError when the file there does not hash as published."""
    if not presets.needs_vgg_fallback(preset, extra):
        return None
    notice = presets.random_vgg_notice("this matrix")
    if notice:
        extra["vgg_weights"] = "random"
        return notice
    from esrgan.archs.vgg import imagenet_weights_path

    return (f"weights: ImageNet VGG19 {imagenet_weights_path()} (verified: the paper's "
            "perceptual loss)")


# Relative cost of one training step, per generator parameter and LR pixel of the batch: a
# GAN step adds VGG19 and D to the generator's forward and backward passes (about 6x a stage-1
# step of the cpu preset, README "How the default was chosen"); each run also scores its
# models, about 100 stage-1 steps' worth. Only the ratios matter: they weight the progress bar.
GAN_STEP_COST = 6.0
SCORING_STEPS = 100


def expected_cost(cell: Cell, trains_stage1: bool) -> float:
    """The work of one cell in stage-1-step units of its generator (for progress and ETA)."""
    return config_cost(cell.config, cell.kind, trains_stage1)


def config_cost(cfg: Mapping[str, Any], kind: str, trains_stage1: bool) -> float:
    """:func:`expected_cost` of a run's config."""
    if kind == "interpolation":
        return 1.0
    size = sum(p.numel() for p in build.make_generator(cfg, seed=0).parameters())

    def per_step(stage: int) -> float:  # generator size x LR pixels of a batch
        return size * int(cfg["batch"]) * (build.stage_patch(cfg, stage) // int(cfg["scale"])) ** 2

    stage1 = (int(cfg["steps1"]) if trains_stage1 else 0) + SCORING_STEPS
    return per_step(1) * stage1 + per_step(2) * GAN_STEP_COST * int(cfg["steps2"])


def outcome(log: Path) -> str:
    """What a cell's command did, from its log: 'trained', 'waited' or 'found'.

    'found': another process had completed the cell already; 'waited': this command waited
    for another process running the cell, then found it completed.
    """
    text = log.read_text(errors="replace") if log.exists() else ""
    if ALREADY_COMPLETED not in text:
        return "trained"
    return "waited" if BEING_RUN_BY in text else "found"


def run_cells(cells: list[Cell], jobs: int, log_dir: Path, env: Mapping[str, str],
              desc: str) -> tuple[list[Cell], Counter]:
    """Run the commands, ``jobs`` at a time, with one progress bar weighted by each cell's
    expected cost; returns the failed cells and how many were trained, found or waited for.

    On SIGTERM (a scheduler stopping the job) the running cells get SIGTERM too and are waited
    for: each saves its checkpoint, and running the same command again goes on.
    """
    global _stopping
    failed: list[Cell] = []
    counts: Counter = Counter()
    if not cells:
        return failed, counts
    log_dir.mkdir(parents=True, exist_ok=True)
    owners: set[str] = set()
    costs: dict[int, float] = {}  # by id(cell): a Cell holds dicts and is not hashable
    for cell in cells:
        key = identity.stage1_key(cell.config)
        costs[id(cell)] = expected_cost(cell, key not in owners)
        owners.add(key)
    bar = tqdm(total=sum(costs.values()), desc=f"{desc} 0/{len(cells)} runs",
               dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    running: dict[int, subprocess.Popen] = {}

    def log_of(cell: Cell) -> Path:
        # One log per matrix process: two matrices on one store run the same cell command,
        # and each must read what its own command did.
        return log_dir / f"{cell.kind}-{cell.key}-{os.getpid()}.log"

    def launch(cell: Cell) -> int:
        log = log_of(cell)
        with open(log, "w") as handle:
            handle.write(shlex.join(cell.argv()) + "\n")
            handle.flush()
            proc = subprocess.Popen(cell.argv(), stdout=handle, stderr=subprocess.STDOUT,
                                    env=dict(env), cwd=os.getcwd())
            running[id(cell)] = proc
            try:
                return proc.wait()
            finally:
                running.pop(id(cell), None)

    done = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future, Cell] = {}
        queue = list(cells)
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    cell = queue.pop(0)
                    pending[pool.submit(launch, cell)] = cell
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = pending.pop(future)
                    log = log_of(cell)
                    if future.result() != 0:
                        failed.append(cell)
                        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
                        tqdm.write(f"FAILED: {cell.label()}: {' '.join(tail)} (log: {log})")
                    else:
                        counts[outcome(log)] += 1
                    done += 1
                    bar.set_description_str(f"{desc} {done}/{len(cells)} runs", refresh=False)
                    bar.set_postfix_str(f"last: {cell.label()}", refresh=False)
                    bar.update(costs[id(cell)])
        except KeyboardInterrupt as stop:
            _stopping = True  # a SIGTERM now (the parent shell ended on Ctrl-C) changes nothing
            queue.clear()
            if isinstance(stop, Terminated):  # a terminal's Ctrl-C reaches every process
                for proc in list(running.values()):
                    proc.send_signal(signal.SIGTERM)
            for proc in list(running.values()):
                proc.wait()  # each cell saves its checkpoint first
            tqdm.write("interrupted: finished cells are stored; run the same command to go on")
            raise
        finally:
            bar.close()
    return failed, counts


# ------------------------------------------------------------------------------------------
# the sequential seed budget: analysis.sequential plans it after the first seeds; this carries
# it out, one seed per round for the cells of the planned claims, while the budget lasts


SEQUENTIAL_DESIGNS = ("default", "claims", "deep")  # designs whose cells the claims name


def cell_variant(cell: Cell) -> tuple[str, str | None]:
    """(variant, study) as the claims name them (``esrgan.paper.claims.Side``)."""
    if cell.extra.get("study") == DEEP_STUDY:
        return deep_label(cell.switches), DEEP_STUDY
    return variant_label(cell.switches), None


def claim_cells(cells: list[Cell], claims: Iterable[str]) -> list[Cell]:
    """The cells (and interpolation sweeps) the effects of ``claims`` are measured on, each
    training only what those effects read: a variant whose GAN model none of them reads gets
    a stage-1 cell (its PSNR-oriented model, from the stage-1 cache that a full cell of the
    same seed shares)."""
    effects = [e for c in claims for e in BY_ID[c].effects]
    wanted = {(side.variant, e.study) for e in effects for side in (e.a, e.b)}
    gan_read = {(side.variant, e.study) for e in effects for side in (e.a, e.b)
                if side.model == GAN_MODEL or e.kind == "interpolation"}
    chosen = []
    for cell in cells:
        if cell.kind != "cell" or cell_variant(cell) not in wanted:
            continue
        if cell_variant(cell) not in gan_read and int(cell.config["steps2"]) > 0:
            cell = Cell(cell.switches, cell.seed, cell.preset, {**cell.extra, **STAGE1_ONLY})
        chosen.append(cell)
    sweep = any(e.kind == "interpolation" for e in effects)
    return chosen + (interpolation_cells(chosen) if sweep else [])


def stage1_claims() -> list[str]:
    """The claims that read only stage-1 models (PSNR-oriented and bicubic): cheap to seed."""
    return [c.id for c in CLAIMS if not c.reads_gan_stage]


def first_cells(design: str, preset: str, seeds: int, cheap_seeds: int,
                extra: Mapping[str, Any]) -> list[Cell]:
    """The first seeds of a design: every cell at ``seeds`` seeds and, for a design the
    claims name, the cells of the claims that read only stage-1 models up to
    ``cheap_seeds`` (stage-1 cells: no GAN stage, a fraction of a full cell's time)."""
    cells = make_cells(design, preset, range(seeds), extra)
    if design in SEQUENTIAL_DESIGNS:
        for seed in range(seeds, cheap_seeds):
            cells += claim_cells(make_cells(design, preset, [seed], extra), stage1_claims())
    return cells


def cell_kind(cfg: Mapping[str, Any], switches: Mapping[str, Any], trains_stage1: bool
              ) -> tuple[str, str, bool, bool]:
    """What a cell's wall time depends on: its variant, study, whether it has a GAN stage and
    whether it trains its stage-1 model (or finds it in the cache)."""
    study = str(cfg.get("study") or "ablation")
    label = deep_label(dict(switches)) if study == DEEP_STUDY else variant_label(switches)
    return label, study, int(cfg["steps2"]) > 0, trains_stage1


def _recorded_seconds(record: Any) -> dict[str, Any]:
    """The ``seconds`` a run recorded in its result (``total`` and its parts), or {}."""
    return (record.result or {}).get("seconds", {}) if isinstance(record.result, dict) else {}


def measured_seconds(runs_dir: str | Path, preset: str
                     ) -> dict[tuple[str, str, bool, bool], float]:
    """The median wall seconds of the store's completed cells, by :func:`cell_kind`."""
    from statistics import median

    from experiments.keys import complete

    seen: dict[tuple[str, str, bool, bool], list[float]] = {}
    for record in FileStore(runs_dir).runs(("COMPLETED",)):
        took = _recorded_seconds(record)
        if record.preset != preset or record.kind != "cell" or "total" not in took:
            continue
        cfg = complete(record.config)
        kind = cell_kind(cfg, {n: cfg.get(n) for n in ESRGAN},
                         not record.meta.get("stage1_reused"))
        seen.setdefault(kind, []).append(float(took["total"]))
    return {kind: median(values) for kind, values in seen.items()}


def seconds_per_cost(runs_dir: str | Path, preset: str) -> float:
    """Seconds per unit of :func:`expected_cost`, measured on the store's completed runs."""
    seconds = cost = 0.0
    for record in FileStore(runs_dir).runs(("COMPLETED",)):
        took = _recorded_seconds(record)
        if record.preset != preset or record.kind != "cell" or "total" not in took:
            continue
        seconds += float(took["total"])
        cost += config_cost(record.config, "cell", not record.meta.get("stage1_reused"))
    return seconds / cost if cost else math.nan


def stored_minutes(runs_dir: str | Path, cells: list[Cell], jobs: int) -> float:
    """The minutes ``cells`` took as the store recorded them: their runs' total seconds over
    ``jobs`` parallel jobs (0 for cells without a completed run that recorded its time)."""
    wanted = {(c.kind, c.key) for c in cells}
    seconds = 0.0
    for record in FileStore(runs_dir).runs(("COMPLETED",)):
        took = _recorded_seconds(record)
        if record.key in wanted and "total" in took:
            wanted.discard(record.key)  # a cell run twice counts once
            seconds += float(took["total"])
    return seconds / max(1, jobs) / 60


def plan_seeds(runs_dir: str | Path, preset: str, first_seeds: int, cap: int,
               budget_min: float, first_min: float, cheap_seeds: int = 0) -> Plan:
    """Look 1: ``python -m analysis.sequential plan`` on the store (experiments never import
    the analysis), as a :class:`Plan`."""
    cmd = [sys.executable, "-m", "analysis.sequential", "plan", "--store", str(runs_dir),
           "--preset", preset, "--first-seeds", str(first_seeds), "--cap", str(cap),
           "--cheap-seeds", str(cheap_seeds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"planning the added seeds failed: {last}")
    data = json.loads(out.stdout)
    return Plan(LOOKS, first_seeds, cap, budget_min,
                [Extension(**e) for e in data["extensions"]], data["left"], first_min=first_min,
                first_by_claim=dict(data.get("first_by_claim") or {}))


def print_status(runs_dir: str | Path, preset: str, claims: Iterable[str]) -> None:
    """The current validation verdicts of ``claims`` (a progress line each)."""
    cmd = [sys.executable, "-m", "analysis.sequential", "status", "--store", str(runs_dir),
           "--preset", preset, "--claims", *claims]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in (out.stdout if out.returncode == 0 else out.stderr).strip().splitlines()[-20:]:
        tqdm.write(f"  {line}")


def add_seeds(design: str, preset: str, extra: dict[str, Any], runs_dir: str | Path,
              budget_min: float, first_min: float, jobs: int, log_dir: Path,
              env: Mapping[str, str]) -> tuple[list[Cell], Counter]:
    """Plan (once per store) and run the added seeds; returns the failed cells and counts."""
    plan = read_plan(runs_dir)
    if plan is None:
        first = presets.MATRIX_SEEDS[preset]
        plan = plan_seeds(runs_dir, preset, first, presets.MAX_SEEDS[preset], budget_min,
                          first_min, presets.CHEAP_SEEDS[preset])
        write_plan(runs_dir, plan)
    plan.budget_min = budget_min
    for ext in plan.extensions:
        print(f"extra seeds: {ext.claim} up to {ext.target} ({ext.why})")
    for line in plan.left:
        print(f"no extra seeds: {line}")
    rate = seconds_per_cost(runs_dir, preset)
    measured = measured_seconds(runs_dir, preset)
    failed: list[Cell] = []
    counts: Counter = Counter()
    plan.stopped = "no claim was both undecided and within the seed cap after the first seeds"
    for seed, active in plan_rounds(plan):
        cells = make_cells(design, preset, [seed], extra)
        cells += interpolation_cells(cells)
        done = completed(runs_dir, None, sync=False)
        # cheapest claims first, as many as the budget holds
        chosen: list[str] = []
        for ext in sorted(active, key=lambda e: _round_seconds(
                claim_cells(cells, [e.claim]), done, rate, jobs, measured)):
            trial = claim_cells(cells, [*chosen, ext.claim])
            left = budget_min - plan.first_min - plan.spent_min
            if _round_seconds(trial, done, rate, jobs, measured) / 60 <= left:
                chosen.append(ext.claim)
        if not chosen:
            plan.stopped = (f"the budget ({budget_min:g} min) was spent before seed {seed} "
                            "of the extended claims")
            break
        todo = [c for c in claim_cells(cells, chosen) if not is_done(c, done)]
        tqdm.write(f"seed {seed} for {', '.join(chosen)}: {len(todo)} runs")
        t0 = time.perf_counter()
        for kind in ("cell", "interpolation"):
            bad, got = run_cells([c for c in todo if c.kind == kind], jobs, log_dir, env,
                                 f"seed {seed}")
            failed += bad
            counts += got
        plan.spent_min += (time.perf_counter() - t0) / 60
        for ext in plan.extensions:
            if ext.claim in chosen:
                ext.reached = seed + 1
        write_plan(runs_dir, plan)
        if failed:
            plan.stopped = "a run failed"
            break
        print_status(runs_dir, preset, chosen)
    else:
        if plan.extensions:
            plan.stopped = "every extended claim reached its target"
    write_plan(runs_dir, plan)
    print(f"extra seeds stopped: {plan.stopped} ({plan.spent_min:.1f} min)")
    return failed, counts


def plan_rounds(plan: Plan) -> list[tuple[int, list[Extension]]]:
    """The rounds of ``plan`` in order: each added seed with the extended claims that run it
    (a claim from the seeds it had at the first look up to its target; a claim that started
    at more seeds than the others joins at its own first added seed)."""
    rounds = []
    for seed in range(plan.first_seeds, plan.cap):
        active = [e for e in plan.extensions if plan.first_of(e.claim) <= seed < e.target]
        if active:
            rounds.append((seed, active))
    return rounds


def _round_seconds(cells: list[Cell], done: set[tuple[str, str]], rate: float,
                   jobs: int, measured: Mapping[tuple[str, str, bool, bool], float] | None = None
                   ) -> float:
    """Expected wall seconds of the cells not yet done (their stage-1 models counted once):
    each cell's, the median wall time of the store's completed cells of its kind
    (:func:`cell_kind`), else its expected cost at the store's measured rate; ``jobs`` share
    the work, but no round is shorter than its longest cell."""
    owners: set[str] = set()
    seconds = []
    for cell in cells:
        key = identity.stage1_key(cell.config)
        trains = key not in owners
        owners.add(key)
        if is_done(cell, done):
            continue
        kind = cell_kind(cell.config, cell.switches, trains) if cell.kind == "cell" else None
        if measured and kind in measured:
            seconds.append(measured[kind])
        elif math.isfinite(rate):
            seconds.append(rate * expected_cost(cell, trains))
        else:
            return 0.0  # nothing measured yet: run the round
    if not seconds:
        return 0.0
    return max(sum(seconds) / min(jobs, len(seconds)), max(seconds))


class Terminated(KeyboardInterrupt):
    """SIGTERM to the matrix: its cells are stopped the same way, then it exits."""


_stopping = False  # a SIGTERM has been taken: the cells are being stopped


def _terminate(signum: int, frame: Any) -> None:
    global _stopping
    if _stopping:
        # A second SIGTERM (the process group's, then the one for a parent that ended) must
        # not cut short the wait for the cells saving their checkpoints.
        return
    _stopping = True
    raise Terminated()


def stop_with_parent(pid: int, every_s: float = 0.5) -> None:
    """Stop as on SIGTERM (cells included) once process ``pid``, the shell that started this
    one (or started a wrapper that started it), has ended.

    ``make ablation`` passes the pid of the shell that runs its recipe: GNU make hands a
    SIGTERM to that shell only, and the shell ends without passing it on, so the matrix would
    go on running cells with no one to wait for it. Checked every ``every_s`` seconds.
    """
    direct = os.getppid() == pid

    def ended() -> bool:
        if direct:
            return os.getppid() != pid  # adopted by another process: the shell has ended
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process is there
        except ProcessLookupError:
            return True
        except PermissionError:  # there, but another user's
            pass
        return False

    def watch() -> None:
        while not ended():
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def thread_env(jobs: int) -> dict[str, str]:
    """Split the cores between parallel cells (torch would otherwise oversubscribe)."""
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def command_prefix(stores: StoreTargets) -> str:
    """The environment part of a printed command: the stores, the password never shown.

    A MongoDB URL with credentials is left to the environment of whoever runs the commands
    (``ESRGAN_MONGO`` must then be set there, which the command checks).
    """
    env = stores.environment()
    parts = [f"ESRGAN_RUNS={shlex.quote(env['ESRGAN_RUNS'])}"]
    if MONGO_ENV in env:
        url = env[MONGO_ENV]
        if redact(url) != url:
            parts.append(f'{MONGO_ENV}="${{{MONGO_ENV}:?set it to the MongoDB URL}}"')
        else:
            parts.append(f"{MONGO_ENV}={shlex.quote(url)}")
    return " ".join(parts) + " "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "commands", "list"))
    parser.add_argument("design", nargs="?", default="default", choices=sorted(DESIGNS))
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.NAMED))
    parser.add_argument("--seeds", type=int, default=None,
                        help="replicates per cell: seeds 0..N-1 (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once")
    parser.add_argument("--mongo", default=None,
                        help="MongoDB URL shared by every cell (default: env ESRGAN_MONGO)")
    parser.add_argument("--runs", default=None,
                        help="file store (default: env ESRGAN_RUNS, else runs/)")
    parser.add_argument("--budget", type=float, default=0.0, metavar="MINUTES",
                        help="after the first seeds, add seeds to the claims still undecided "
                             "and within reach while this many minutes (from the start) last "
                             f"(designs {', '.join(SEQUENTIAL_DESIGNS)}; 0: the first seeds only)")
    parser.add_argument("--stop-with-parent", type=int, default=None, metavar="PID",
                        help="stop as on SIGTERM once process PID, the shell that started "
                             "this one, has ended (make ablation passes its shell's)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every cell")
    args = parser.parse_intermixed_args(argv)
    if args.stop_with_parent is not None:
        stop_with_parent(args.stop_with_parent)

    from experiments.store.targets import from_argv

    flags = [*(["--runs", args.runs] if args.runs else []),
             *(["--mongo", args.mongo] if args.mongo else [])]
    try:
        stores, _ = from_argv(flags)
        seeds = args.seeds if args.seeds is not None else presets.MATRIX_SEEDS[args.preset]
        cheap = seeds if args.seeds is not None else presets.CHEAP_SEEDS[args.preset]
        extra = dict(parse_override(o) for o in args.overrides)
        notice = vgg_fallback(args.preset, extra)
        cells = first_cells(args.design, args.preset, seeds, cheap, extra)
        cells += interpolation_cells(cells)
        skipped = [why for spec in DESIGNS[args.design](args.preset)
                   if (why := left_out(spec, args.preset, extra))]
        for cell in cells:
            _ = cell.config  # an unknown key fails here, once, before anything runs
        if stores.mongo_url_db:
            ping(stores.mongo_url_db[0])
        done = completed(stores.runs, stores.mongo_target)
    except (presets.ConfigError, MongoUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.action == "commands":
        prefix = command_prefix(stores)
        for cell in cells:
            print(prefix + shlex.join(cell.argv()))
        return 0
    if args.action == "list":
        for cell in cells:
            print(f"{'done' if is_done(cell, done) else 'todo'}  {cell.key}  {cell.label()}")
        return 0

    todo = [c for c in cells if not is_done(c, done)]
    if notice:
        print(notice)
    for why in skipped:
        print(f"NOTE: {why}")
    sweeps = sum(c.kind == "interpolation" for c in cells)
    seeds_text = f"{seeds}" + (f" ({cheap} for the claims that read only PSNR-oriented "
                               "models)" if cheap > seeds and args.design in SEQUENTIAL_DESIGNS
                               else "")
    print(f"matrix {args.design} / preset {args.preset} / seeds {seeds_text}: {len(cells)} runs "
          f"({len(cells) - sweeps} training, {sweeps} interpolation sweeps), "
          f"{len(cells) - len(todo)} already in the store, {len(todo)} to run")
    t0 = time.perf_counter()
    env = {**thread_env(args.jobs), **stores.environment()}
    log_dir = Path(str(cells[0].config["work_dir"])) / "logs" if cells else Path("work/logs")
    failed, counts = run_cells([c for c in todo if c.kind == "cell"], args.jobs, log_dir,
                               env, "training")
    failed2, counts2 = run_cells([c for c in todo if c.kind == "interpolation"], args.jobs,
                                 log_dir, env, "interpolation")
    failed += failed2
    counts += counts2
    if args.budget > 0 and args.design in SEQUENTIAL_DESIGNS and not failed \
            and args.seeds is None:
        # what the first seeds cost: this process's minutes, or, where earlier processes ran
        # them (a stopped `make ablation` run again), what the store recorded, so that a
        # resumed matrix does not count its budget from zero again
        first_min = max((time.perf_counter() - t0) / 60,
                        stored_minutes(stores.runs, cells, args.jobs))
        try:
            failed3, counts3 = add_seeds(args.design, args.preset, extra, stores.runs,
                                         args.budget, first_min, args.jobs, log_dir, env)
        except (RuntimeError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        failed += failed3
        counts += counts3
    minutes = (time.perf_counter() - t0) / 60
    print(f"matrix finished in {minutes:.1f} min: {counts['trained']} run by this process, "
          f"{counts['found']} found completed by another, {counts['waited']} waited for while "
          f"another ran them, {len(failed)} failed")
    if notice:
        print(notice)
    return 1 if failed else 0


def command_line() -> int:
    """``python experiments/matrix.py ...``: Ctrl-C and SIGTERM end it with one line."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main()
    except KeyboardInterrupt as stop:
        return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(command_line())

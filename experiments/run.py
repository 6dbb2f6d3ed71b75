"""The ESRGAN experiment: one cell of the ablation matrix, trained, evaluated and logged by Sacred.

    python experiments/run.py with rrdb=True ragan=False          # one run, cpu preset sizes
    python experiments/run.py with tiny                           # a run in well under a minute
    python experiments/run.py print_config with paper             # every setting, one place
    python experiments/run.py --mongo mongodb://host:27017/esrgan with cpu vgg_weights=random
    python experiments/run.py with resume=runs/7                  # continue a killed run
    python experiments/run.py interpolate with ...                # the sweep of a trained cell
    torchrun --nproc_per_node=4 experiments/run.py with paper     # data-parallel, 4 processes

A cell is read top to bottom in :func:`run_cell`: build the data and the perceptual loss,
stage 1 (the PSNR-oriented model, shared through ``experiments.stage1``), stage 2 (the GAN,
from the stage-1 model), then the evaluation of both models and bicubic on every set.
:func:`interpolation_sweep` is the paper's network interpolation against image interpolation.

Stores (``experiments.store.targets``): always Sacred's file store (``--runs DIR``, Sacred's
``-F DIR`` or ESRGAN_RUNS; default ``runs/``), and MongoDB with ``--mongo URL`` (or Sacred's
``-m HOST:PORT:DB``, or ESRGAN_MONGO). An unreachable MongoDB fails within seconds, before
anything trains; one lost mid-run costs a warning, and the file store keeps the full record.
A configuration these stores already hold as COMPLETED is not run again (``fresh=True`` forces
it). Checkpoints live under ``work_dir``: ``stage1/<stage1 key>/`` and ``stage2/<cell key>/``;
running a configuration again continues from them.

Under torchrun (``esrgan.distributed``) every process runs this script; ``batch`` stays the
global batch. Only rank 0 attaches observers, writes checkpoints and evaluates.
"""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

# sacred 0.8.7 imports pkg_resources (hence setuptools<81); its deprecation warning is noise
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import sacred.experiment  # noqa: E402
from sacred import Experiment  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

from esrgan import distributed  # noqa: E402
from esrgan.backprojection import back_project  # noqa: E402
from esrgan.checkpoints import remove_checkpoints  # noqa: E402
from esrgan.data import write_image  # noqa: E402
from esrgan.evaluation import (  # noqa: E402
    BICUBIC,
    GAN_MODEL,
    PSNR_MODEL,
    bicubic_images,
    center_crop,
    score,
    super_resolve,
)
from esrgan.files import OutputError, atomic_write  # noqa: E402
from esrgan.paper.departures import departures  # noqa: E402
from esrgan.speed import set_deterministic  # noqa: E402
from esrgan.train import TrainingDiverged, train_gan  # noqa: E402
from esrgan.weights import interpolate_state, load_generator_state, save_generator  # noqa: E402
from experiments import build, identity, presets  # noqa: E402
from experiments.guards import RunError, cell_lock, check_disk, skip_if_completed  # noqa: E402
from experiments.stage1 import stage1_model  # noqa: E402
from experiments.store import targets as store_targets  # noqa: E402
from experiments.store.mongo import MongoUnavailable  # noqa: E402
from experiments.store.targets import StoreTargets  # noqa: E402
from experiments.tblog import TensorBoard, open_view, run_folder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
_sacred_format_error = sacred.experiment.format_sacred_error
TB_IMAGES = 4  # validation images whose centre crops TensorBoard shows at each validation


class Sink:
    """Where a run reports: Sacred's run object (log_scalar, artifacts, info), and with
    ``tb`` the run's TensorBoard event files (every scalar mirrored, validation crops)."""

    def __init__(self, run: Any, tb: TensorBoard | None = None) -> None:
        self.run = run
        self.tb = tb
        self.scalars: list[tuple[str, float, int]] = []

    def log(self, name: str, value: float, step: int) -> None:
        self.scalars.append((name, float(value), int(step)))
        self.run.log_scalar(name, float(value), int(step))
        if self.tb is not None:
            self.tb.scalar(name, float(value), int(step))

    def image(self, name: str, image: np.ndarray, step: int) -> None:
        """A small image for the live view only (the run store keeps the final crops)."""
        if self.tb is not None:
            self.tb.image(name, image, int(step))

    def artifact(self, path: Path, name: str | None = None) -> None:
        self.run.add_artifact(str(path), name=name or path.name)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run_meta(cfg: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """What every run records in ``info['esrgan']``, whatever its kind (cell, interpolation).

    Its departures from the paper twice: as data (``departures``, what the analysis reads) and
    as sentences (``substitutes``, the record's older form, kept for readers of it).
    """
    found = departures(cfg)
    return {"kind": kind, "preset": cfg["preset"], "git": git_revision(),
            "stage1_key": identity.stage1_key(cfg), "cell_key": identity.cell_key(cfg),
            "substitutes": [d.text for d in found], "departures": [d.record() for d in found]}


# ------------------------------------------------------------------------------------------
# one cell


def run_cell(cfg: Mapping[str, Any], sink: Sink) -> dict[str, Any]:
    """Train both stages of one configuration and evaluate them; returns the result dict.

    ``steps2=0`` is a stage-1 cell: only the PSNR-oriented model is trained and evaluated.
    """
    t_start = time.perf_counter()
    device = distributed.init(build.device(cfg))  # under torchrun: join the job
    work = Path(cfg["work_dir"])
    parts = build.cell_parts(cfg)  # bad input fails here, before any training
    scale, val, metric_names = parts.scale, parts.val, parts.metrics
    info = sink.run.info
    info["esrgan"] = meta = {
        **run_meta(cfg, "cell"), "device": str(device), "study": cfg["study"],
        "generator_arch": build.generator_arch(cfg),
        "train_data": cfg["train_hr"] or "embedded (photos shipped with the installed packages)",
        "val_data": cfg["val_hr"] or "embedded (photos shipped with the installed packages)",
    }
    if parts.perceptual is not None:
        meta["vgg"] = parts.perceptual.extractor.description
        meta.update(build.vgg_premise(cfg, parts.perceptual.extractor))

    crop = int(cfg["val_crops"])
    shown: set[tuple[int, str]] = set()  # HR crops already in the live view

    def validation(stage: int) -> Callable[[torch.nn.Module, int], dict[str, float]]:
        """Scores ``val``; shows the centre crops of the first few images in TensorBoard."""
        def validate(generator: torch.nn.Module, step: int) -> dict[str, float]:
            images = super_resolve(generator, val, device)
            pairs = list(zip(val, images, strict=True))[:TB_IMAGES] if crop else []
            for pair, img in pairs:
                if (stage, pair.name) not in shown:
                    shown.add((stage, pair.name))
                    sink.image(f"stage{stage}_hr_{pair.name}", center_crop(pair.hr, crop), step)
                sink.image(f"stage{stage}_sr_{pair.name}", center_crop(img, crop), step)
            return score(images, val, metric_names, scale)
        return validate

    # ---- stage 1: PSNR-oriented (shared between runs with the same generator settings)
    generator, ema1, record1 = stage1_model(cfg, parts, validation(1), device, sink)
    meta["stage1_reused"] = record1["reused"]
    main = distributed.is_main()  # the other torchrun ranks only train
    out_dir = work / "stage2" / identity.cell_key(cfg)
    psnr_path = out_dir / "G_psnr.pth"
    sets = {"val": val, **parts.tests}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_generator(psnr_path, generator, ema=ema1)
        sink.artifact(psnr_path)
        scored = ema1 if ema1 is not None else generator  # the moving average, when kept
        sr = {PSNR_MODEL: {name: super_resolve(scored, pairs, device)
                             for name, pairs in sets.items()}}

    # ---- stage 2: GAN, G from stage 1's raw weights and its average from stage 1's (BasicSR's
    # ESRGAN recipe loads params into G and params_ema into the average)
    outcome2 = None
    if parts.gan_stage:
        if cfg["fresh"] and main:
            remove_checkpoints(out_dir / "checkpoint.pth")
        distributed.barrier()  # nobody reads the checkpoint before rank 0 removed it
        outcome2 = train_gan(generator, parts.new_discriminator(), parts.perceptual,
                             parts.batches(2, device), parts.stage2, ragan=parts.ragan,
                             weights=parts.gan, lr_d=parts.lr_d, device=device,
                             checkpoint=out_dir / "checkpoint.pth", log=sink.log,
                             validate=validation(2), progress=cfg["progress"] and main,
                             ema_start=ema1)
    if not main:
        return {"rank": distributed.rank()}  # not observed; rank 0 reports the run
    if parts.gan_stage:
        gan_path = out_dir / "G_gan.pth"
        save_generator(gan_path, generator, ema=outcome2.ema)
        sink.artifact(gan_path)
        scored = outcome2.ema if outcome2.ema is not None else generator
        sr[GAN_MODEL] = {name: super_resolve(scored, pairs, device)
                           for name, pairs in sets.items()}

    # ---- evaluation: validation set and test sets, the trained models and bicubic
    result: dict[str, Any] = {BICUBIC: {}, **{model: {} for model in sr}}
    left_out: dict[str, str] = {}  # metrics asked for whose weight files are not on disk
    rows = []
    for set_name, pairs in sets.items():
        images = {BICUBIC: bicubic_images(pairs, scale),
                  **{model: by_set[set_name] for model, by_set in sr.items()}}
        for model, imgs in images.items():
            means = score(imgs, pairs, metric_names, scale, left_out)
            result[model][set_name] = means
            rows.append({"set": set_name, "model": model, **means})
    table = out_dir / "metrics.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(table, text.getvalue().encode(), what="the metrics table")
    sink.artifact(table)

    # a few small crops of the validation images, the same window for every run
    if crop:
        tags = {"psnr": sr[PSNR_MODEL]["val"], **({"gan": sr[GAN_MODEL]["val"]}
                                                     if parts.gan_stage else {})}
        for i, pair in enumerate(val):
            for tag, img in (("hr", pair.hr), *((t, imgs[i]) for t, imgs in tags.items())):
                path = out_dir / f"crop_{pair.name}_{tag}.png"
                write_image(path, center_crop(img, crop))
                sink.artifact(path)

    result["seconds"] = {"stage1": record1["seconds"],
                         "stage2": outcome2.seconds if outcome2 else 0.0,
                         "total": time.perf_counter() - t_start}
    result["steps"] = {"stage1": record1["steps"], "stage2": outcome2.steps if outcome2 else 0}
    meta["stage2_resumed_from"] = outcome2.resumed_from if outcome2 else 0
    meta["metrics_left_out"] = left_out
    return result


# ------------------------------------------------------------------------------------------
# the interpolation sweep


def interpolation_sweep(cfg: Mapping[str, Any], sink: Sink) -> dict[str, Any]:
    """Network vs image interpolation between this configuration's PSNR and GAN generators.

    Needs the cell trained first (its generators in ``work_dir/stage2/<cell key>/``).
    Network: theta = (1 - a) theta_PSNR + a theta_GAN; image: (1 - a) SR_PSNR + a SR_GAN.
    Scored on the validation set (the result's top level, and the curves logged) and on
    every test set (``result['sets'][name]``). Plus back projection (``bp_iterations``)
    applied to the GAN model's output on the validation set.
    """
    device = distributed.init(build.device(cfg))  # under torchrun: join the job
    if not distributed.is_main():
        return {"rank": distributed.rank()}  # evaluation only: nothing to share out
    scale = int(cfg["scale"])
    meta = run_meta(cfg, "interpolation")
    work = Path(cfg["work_dir"])
    folder = work / "stage2" / meta["cell_key"]
    paths = [folder / "G_psnr.pth", folder / "G_gan.pth"]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} not found: train this configuration first "
                                "(experiments/run.py with the same settings)")
    sink.run.info["esrgan"] = {**meta, "vgg": cfg["vgg_weights"], "study": cfg["study"]}
    sets = {"val": build.val_pairs(cfg, cache_dir=work / "lr_cache"),
            **{build.test_set_name(f): build.load_test_set(f, scale, work / "lr_cache")
               for f in cfg["test_sets"]}}
    metric_names = list(cfg["val_metrics"])
    theta_psnr, theta_gan = (load_generator_state(p) for p in paths)
    generator = build.make_generator(cfg, seed=0).to(device)
    generator.load_state_dict(theta_psnr)
    sr_psnr = {name: super_resolve(generator, pairs, device) for name, pairs in sets.items()}
    generator.load_state_dict(theta_gan)
    sr_gan = {name: super_resolve(generator, pairs, device) for name, pairs in sets.items()}
    curves: dict[str, dict[str, list]] = {name: {"network": [], "image": []} for name in sets}
    # At alpha 0 and 1 both methods give the two models' own images (interpolate_state and
    # the blend return an end exactly): each end is scored once.
    ends: dict[tuple[str, float], dict[str, float]] = {}
    for alpha in tqdm(list(cfg["interp_alphas"]), desc="interpolation",
                      disable=not cfg["progress"]):
        alpha = float(alpha)
        inner = 0.0 < alpha < 1.0
        if inner:
            generator.load_state_dict(interpolate_state(theta_psnr, theta_gan, alpha))
        for name, pairs in sets.items():
            if inner:
                net = score(super_resolve(generator, pairs, device), pairs, metric_names,
                            scale)
                blend = [(1 - alpha) * a + alpha * b
                         for a, b in zip(sr_psnr[name], sr_gan[name], strict=True)]
                img = score(blend, pairs, metric_names, scale)
            else:
                if (name, alpha) not in ends:
                    images = sr_psnr[name] if alpha == 0.0 else sr_gan[name]
                    ends[name, alpha] = score(images, pairs, metric_names, scale)
                net = img = ends[name, alpha]
            curves[name]["network"].append({"alpha": alpha, **net})
            curves[name]["image"].append({"alpha": alpha, **img})
            if name == "val":
                for metric, value in net.items():
                    sink.log(f"interp_network_{metric}", value, round(alpha * 100))
                for metric, value in img.items():
                    sink.log(f"interp_image_{metric}", value, round(alpha * 100))
    iterations = int(cfg["bp_iterations"])
    val = sets["val"]
    refined = [np.clip(back_project(sr, pair.lr, scale, iterations), 0, 1)
               for sr, pair in zip(sr_gan["val"], val, strict=True)]
    return {**curves["val"],
            "back_projection": {"iterations": iterations,
                                **score(refined, val, metric_names, scale)},
            "sets": {name: c for name, c in curves.items() if name != "val"}}


# ------------------------------------------------------------------------------------------
# the Sacred experiment and its commands


# Exceptions whose message is the whole story (bad input, missing file, divergence).
KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, OSError,
                                                 TrainingDiverged)


def guarded(work: Callable[[Mapping[str, Any], Sink], dict[str, Any]], config: dict,
            run: Any) -> dict[str, Any]:
    """Run ``work(cfg, sink)`` as a Sacred command: known errors become one line."""
    cfg = dict(config)
    # Denormal floats (weights and activations decaying towards 0) make CPU kernels 10-100x
    # slower; flushing them to zero only touches values below 1e-38.
    torch.set_flush_denormal(True)
    set_deterministic(bool(cfg["deterministic"]))  # before the first CUDA operation
    torch.manual_seed(int(cfg["seed"]))
    tb = None
    try:
        folder = run_folder(cfg) if distributed.launch_rank() == 0 else None  # rank 0 writes
        tb = open_view(folder) if folder is not None else None  # unwritable: one warning
        if tb is not None:
            print(f"tensorboard: {folder} (watch: tensorboard --logdir {cfg['tb_dir']})")
        return work(cfg, Sink(run, tb))
    except OutputError as e:  # its message is the whole story already
        raise RunError(str(e)) from None
    except KNOWN_ERRORS as e:
        raise RunError(f"{type(e).__name__}: {e}") from None
    finally:
        if tb is not None:
            tb.close()  # flushed at the end, on an error and on Ctrl-C
        distributed.shutdown()


def make_experiment(stores: StoreTargets | None = None) -> Experiment:
    """The Sacred experiment, its config, presets and commands, checked against ``stores``.

    With ``stores`` None (an in-process experiment) nothing is skipped as already COMPLETED
    and no observer is attached.
    """
    ex = Experiment("esrgan", save_git_info=False)
    held = ExitStack()  # the cell lock, held until the process ends
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars: last state only
    ex.config(presets.base)
    for fn in presets.NAMED.values():
        ex.named_config(fn)

    @ex.config_hook
    def check_config(config: dict, command_name: str, logger: Any) -> dict:
        """Reject invalid values before any observer starts or anything trains."""
        runs = stores.runs if stores is not None else store_targets.runs_root()
        try:
            updates = presets.resume_updates(config, runs) if config.get("resume") else {}
        except presets.ConfigError as exc:
            raise RunError(str(exc)) from None
        if command_name.startswith("print"):
            return updates
        merged = {**config, **updates}
        problems = presets.validate(merged)
        if problems:
            raise RunError("invalid config: " + "; ".join(problems))
        if stores is not None:
            kind = "interpolation" if command_name == "interpolate" else "cell"
            skip_if_completed(merged, kind, stores)
            if distributed.launch_rank() == 0:  # torchrun workers follow rank 0
                check_disk(merged, stores)
                held.enter_context(cell_lock(merged, kind, stores))
        return updates

    @ex.main
    def main(_config: dict, _run: Any) -> dict[str, Any]:
        return guarded(run_cell, _config, _run)

    @ex.command
    def interpolate(_config: dict, _run: Any) -> dict[str, Any]:
        """Network vs image interpolation (and back projection) of an already trained cell."""
        return guarded(interpolation_sweep, _config, _run)

    return ex


class Terminated(KeyboardInterrupt):
    """SIGTERM, as SLURM and Kubernetes send before SIGKILL: handled exactly as Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    # A cell of the matrix gets SIGTERM twice when its whole process group is signalled
    # (once from the group, once passed on by the matrix): a second one must not cut short the
    # checkpoint save and Sacred's INTERRUPTED record that the first started, nor (Python
    # restores a function handler to the default at exit) kill the process on its way out.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


# What a stopped run says, and its exit status (128 + the signal's number, as a shell reports).
STOPPED = {Terminated: ("terminated (SIGTERM)", 128 + signal.SIGTERM),
           KeyboardInterrupt: ("interrupted", 130)}


def _format_error(error: BaseException, short_usage: str) -> str:
    """Sacred's error text, except that a :class:`RunError` is one ``error:`` line."""
    if isinstance(error, RunError):
        return f"error: {error}"
    return _sacred_format_error(error, short_usage)


def vgg_fallback(args: list[str]) -> tuple[list[str], str | None]:
    """Sacred's arguments with ``vgg_weights=random`` added when the ImageNet file is missing.

    What ``make ablation`` does for every cell, a single command does too (the notice says
    so); a command that names ``vgg_weights`` or ``resume``, or only prints, is left alone.
    """
    if any(a.startswith("print") for a in args[1:2]):
        return args, None
    updates = args[args.index("with") + 1:] if "with" in args else []
    words = [u for u in updates if not u.startswith("-")]
    named = [w for w in words if "=" not in w and w in presets.NAMED]
    overrides = dict(w.split("=", 1) for w in words if "=" in w)
    if not presets.needs_vgg_fallback(named[-1] if named else "cpu", overrides):
        return args, None
    notice = presets.random_vgg_notice("this run")
    if notice is None:
        return args, None
    return [*args, *([] if "with" in args else ["with"]), "vgg_weights=random"], notice


def unrecorded_end(observers: list[Any]) -> None:
    """Exit 1 with one line when the file store could not record the run as finished.

    Sacred only warns when an observer fails; a run store whose disk filled mid-run would keep
    the run RUNNING while the command exits 0, and the matrix would count it as done.
    """
    from experiments.store import files

    for observer in observers:
        folder = getattr(observer, "dir", None)
        if getattr(observer, "write_failed", None) is None or folder is None:
            continue
        status = (files.read_json(Path(folder) / files.RUN_FILE, {}) or {}).get("status")
        if status != "COMPLETED":
            raise SystemExit(
                f"error: the file store could not record the end of run {folder} "
                f"({observer.write_failed}); it stays {status} there: free space and run the "
                "same command again (it goes on from the checkpoints)")


def command_line(argv: list[str]) -> None:
    """``python experiments/run.py ...``: the stores from argv, observers, then Sacred."""
    from experiments.store.observer import attach_stores

    # A warning is one line for the user (the message says what and where), not a source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    # Sacred prints an error as "<module>.<class>: message"; every refusal of this suite is
    # one "error: ..." line, whichever command gives it.
    sacred.experiment.format_sacred_error = _format_error

    try:
        stores, rest = store_targets.from_argv(argv)
        rest, notice = vgg_fallback(rest)
        ex = make_experiment(stores)
        observed = not any(a.startswith("print_") for a in rest)  # print_config: no run
        # a torchrun worker logs nothing
        attach_stores(ex, stores, observed=observed and distributed.launch_rank() == 0)
    except (MongoUnavailable, ValueError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    # The training loop saves its checkpoint on KeyboardInterrupt; Terminated is one.
    signal.signal(signal.SIGTERM, _terminate)
    if notice:
        print(notice, flush=True)
    try:
        ex.run_commandline(rest)
        if notice:
            print(notice, flush=True)
        unrecorded_end(ex.observers)
    except KeyboardInterrupt as stop:
        # Sacred has stored the run as INTERRUPTED; the training saved its last checkpoint
        what, status = STOPPED[type(stop) if type(stop) in STOPPED else KeyboardInterrupt]
        print(f"{what}: the checkpoints are saved; run the same command to resume",
              file=sys.stderr)
        raise SystemExit(status) from None


if __name__ == "__main__":
    command_line(sys.argv)

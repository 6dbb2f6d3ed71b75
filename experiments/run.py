"""The ESRGAN experiment: one cell of the ablation matrix, trained, evaluated and logged by Sacred.

    python experiments/run.py with rrdb=True ragan=False          # one run, cpu preset sizes
    python experiments/run.py with tiny                           # a run in well under a minute
    python experiments/run.py print_config with paper             # every setting, one place
    python experiments/run.py --mongo mongodb://host:27017/esrgan with cpu vgg_weights=random
    python experiments/run.py with resume=runs/7                  # continue a killed run
    torchrun --nproc_per_node=4 experiments/run.py with paper     # data-parallel, 4 processes

Observers: always Sacred's FileStorageObserver under ``runs/`` (``--runs DIR`` or ESRGAN_RUNS
to move it); ``--mongo URL`` (or ESRGAN_MONGO) adds a MongoDB observer, and Sacred's own
``-m HOST:PORT:DB`` keeps working. Both are checked before anything trains (one clear error
within 5 s if the server is unreachable), and both survive losing the server mid-run: the file
store keeps the complete record (``experiments/observers.py``).

Checkpoints live under ``work_dir`` (default ``work/``): ``stage1/<stage1 key>/`` holds the
PSNR-oriented model shared by every run with the same generator and stage-1 settings, and
``stage2/<cell key>/`` the GAN stage of one configuration. Running a configuration again picks
up its checkpoint (``fresh=True`` starts over), which is what makes the matrix resumable.
A configuration the run store already holds as COMPLETED is not run again (it exits at once).

Under torchrun (``esrgan.distributed``) every process runs this script; ``batch`` stays the
global batch, so a cell means the same experiment on any number of processes. Only rank 0
attaches observers (the run is logged once), writes checkpoints and evaluates; the others
train and exit. Resume works the same way (every rank reads rank 0's checkpoint).
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `experiments` importable
    sys.path.insert(0, str(REPO_ROOT))

# sacred 0.8.7 imports pkg_resources (hence setuptools<81); its deprecation warning is noise
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from sacred import Experiment  # noqa: E402
from sacred.utils import SacredError, apply_backspaces_and_linefeeds  # noqa: E402

from esrgan import distributed  # noqa: E402
from esrgan.backprojection import back_project  # noqa: E402
from esrgan.data import ImagePair, imresize, to_numpy, to_tensor, write_image  # noqa: E402
from esrgan.metrics import (  # noqa: E402
    MetricUnavailable,
    lpips,
    niqe,
    pi,
    pooled_rmse,
    psnr,
    rmse,
    ssim,
)
from esrgan.train import TrainingDiverged, train_gan, train_psnr  # noqa: E402
from esrgan.weights import interpolate_state, load_generator_state, save_generator  # noqa: E402
from experiments import build, presets, store  # noqa: E402

ex = Experiment("esrgan", save_git_info=False)
ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars: last state only
ex.config(presets.base)
for _name, _fn in presets.NAMED.items():
    ex.named_config(_fn)


# The run store given on the command line (attach_observers): a rerun of a cell it already
# holds as COMPLETED does nothing. Unset when the experiment is driven in-process.
STORE_TARGETS: dict[str, str | None] = {"runs": None, "mongo": None}


class RunError(SacredError):
    """A bad input or a failed run: Sacred prints this one line instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_traceback=False)


@ex.config_hook
def check_config(config: dict, command_name: str, logger: Any) -> dict:
    """Reject invalid values before any observer starts or anything trains."""
    updates = presets.resume_updates(config) if config.get("resume") else {}
    if command_name.startswith("print"):
        return updates
    merged = {**config, **updates}
    problems = presets.validate(merged)
    if problems:
        raise RunError("invalid config: " + "; ".join(problems))
    skip_if_completed(merged, "interpolation" if command_name == "interpolate" else "cell")
    return updates


def skip_if_completed(cfg: Mapping[str, Any], kind: str) -> None:
    """Exit 0 before any observer starts when the store already holds this run as COMPLETED.

    That makes every command printed by ``matrix.py commands`` safe to rerun (a job array
    retried, a script run twice). ``fresh=True`` runs it again regardless.
    """
    if cfg.get("fresh") or STORE_TARGETS["runs"] is None:
        return
    key = build.cell_key(cfg)
    rank0 = distributed.launch_rank() == 0  # torchrun workers only read the store
    if (kind, key) in store.completed(STORE_TARGETS["runs"], STORE_TARGETS["mongo"], sync=rank0):
        print(f"{kind} {key} is already COMPLETED in the run store ({STORE_TARGETS['runs']}"
              f"{' + MongoDB' if STORE_TARGETS['mongo'] else ''}): nothing to do "
              "(fresh=True runs it again)")
        raise SystemExit(0)  # Sacred only catches Exception: this ends the process cleanly


# ------------------------------------------------------------------------------------------
# one run


class Sink:
    """Where a run reports: Sacred's run object (log_scalar, artifacts, info)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.scalars: list[tuple[str, float, int]] = []

    def log(self, name: str, value: float, step: int) -> None:
        self.scalars.append((name, float(value), int(step)))
        self.run.log_scalar(name, float(value), int(step))

    def artifact(self, path: Path, name: str | None = None) -> None:
        self.run.add_artifact(str(path), name=name or path.name)


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun this process's GPU (and the job is joined)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.init(torch.device(name))


@contextmanager
def file_lock(path: Path):
    """An exclusive lock, so two runs never train the same stage-1 model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def super_resolve(generator: torch.nn.Module, pairs: list[ImagePair],
                  device: torch.device) -> list[np.ndarray]:
    """Whole-image SR of every pair's LR (fp32, eval mode), clipped to [0, 1]."""
    was_training = generator.training
    generator.eval()
    out = []
    with torch.no_grad():
        for pair in pairs:
            sr = generator(to_tensor(pair.lr).unsqueeze(0).to(device))
            out.append(to_numpy(sr[0].clamp(0, 1).float().cpu()))
    generator.train(was_training)
    return out


def score(images: list[np.ndarray], pairs: list[ImagePair], metrics: list[str],
          scale: int) -> dict[str, float]:
    """Mean metrics over a set (PSNR/SSIM on Y with crop = scale; NIQE, PI on Y, shave = scale).

    ``rmse`` is PIRM's pooled RMSE on Y: sqrt of the mean per-image MSE (0..255).
    """
    functions = {"psnr": lambda sr, hr: psnr(sr, hr, crop_border=scale),
                 "ssim": lambda sr, hr: ssim(sr, hr, crop_border=scale),
                 "niqe": lambda sr, hr: niqe(sr, crop_border=scale),
                 "pi": lambda sr, hr: pi(sr, crop_border=scale),
                 "lpips": lambda sr, hr: lpips(sr, hr, crop_border=scale)}
    table: dict[str, list[float]] = {m: [] for m in metrics}
    rmses = []
    unavailable: set[str] = set()
    for sr, pair in zip(images, pairs, strict=True):
        for m in metrics:
            if m in unavailable:
                continue
            try:
                table[m].append(functions[m](sr, pair.hr))
            except MetricUnavailable as exc:  # PI/LPIPS without their weight files
                unavailable.add(m)
                # the same message from the same line is shown once (Python's warning registry)
                warnings.warn(f"{m} left out of this run: {exc}", stacklevel=2)
        rmses.append(rmse(sr, pair.hr, crop_border=scale))
    # an unavailable metric is missing from the result, never 0
    out = {m: float(np.mean(v)) for m, v in table.items() if v and m not in unavailable}
    out["rmse"] = pooled_rmse(rmses)
    return out


def bicubic_images(pairs: list[ImagePair], scale: int) -> list[np.ndarray]:
    return [np.clip(imresize(p.lr.astype(np.float64), scale), 0, 1).astype(np.float32)
            for p in pairs]


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = min(size, h, w)
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


def stage1_model(cfg: Mapping[str, Any], work: Path, batches, validate, device: torch.device,
                 sink: Sink) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The PSNR-oriented generator: trained here, or reused from the stage-1 cache."""
    key = build.stage1_key(cfg)
    folder = work / "stage1" / key
    done = folder / "generator.pth"
    main = distributed.is_main()  # under torchrun rank 0 locks, decides and writes for all
    with file_lock(work / "stage1" / f"{key}.lock") if main else nullcontext():
        generator = build.make_generator(cfg, seed=int(cfg["stage1_seed"]))
        if distributed.from_main(done.exists() and not cfg["fresh"]):
            generator.load_state_dict(load_generator_state(done))
            record = json.loads((folder / "record.json").read_text())
            for name, value, step in record["scalars"]:  # the curves, as if trained here
                sink.log(name, value, step)
            record["reused"] = True
            return generator.to(device), record
        if cfg["fresh"] and main:
            (folder / "checkpoint.pth").unlink(missing_ok=True)
        distributed.barrier()  # nobody reads the checkpoint before rank 0 removed it
        outcome = train_psnr(generator, batches(1), build.stage_settings(cfg, 1), device=device,
                             checkpoint=folder / "checkpoint.pth", log=sink.log,
                             validate=validate, progress=cfg["progress"] and main)
        record = {"key": key, "val": outcome.metrics, "seconds": outcome.seconds,
                  "steps": outcome.steps, "resumed_from": outcome.resumed_from,
                  "scalars": [s for s in sink.scalars if s[0].startswith("stage1_")]}
        if main:
            save_generator(done, generator)
            (folder / "record.json").write_text(json.dumps(record))
        record["reused"] = False
        return generator, record


def run_meta(cfg: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """What every run records in ``info['esrgan']``, whatever its kind (cell, interpolation)."""
    return {"kind": kind, "preset": cfg["preset"], "git": git_revision(),
            "stage1_key": build.stage1_key(cfg), "cell_key": build.cell_key(cfg),
            "substitutes": presets.substitutes(cfg)}


def run_cell(cfg: Mapping[str, Any], sink: Sink) -> dict[str, Any]:
    """Train both stages of one configuration and evaluate them; returns the result dict."""
    t_start = time.perf_counter()
    device = resolve_device(cfg["device"])
    work = Path(cfg["work_dir"])
    scale = int(cfg["scale"])
    info = sink.run.info
    info["esrgan"] = meta = {
        **run_meta(cfg, "cell"), "device": str(device),
        "generator_arch": build.generator_arch(cfg), "gan_loss": build.gan_loss_name(cfg),
        "train_data": cfg["train_hr"] or "embedded (scikit-image photos)",
        "val_data": cfg["val_hr"] or "embedded (scikit-image photos)",
    }

    # Everything that can fail on bad input fails here, before any training.
    perceptual = build.make_perceptual_loss(cfg)
    meta["vgg"] = perceptual.extractor.description
    train = build.train_pairs(cfg, cache_dir=work / "lr_cache")
    val = build.val_pairs(cfg, cache_dir=work / "lr_cache")
    tests = {build.test_set_name(folder): build.load_test_set(folder, scale, work / "lr_cache")
             for folder in cfg["test_sets"]}
    metric_names = list(cfg["val_metrics"])

    def validate(generator: torch.nn.Module, step: int) -> dict[str, float]:
        return score(super_resolve(generator, val, device), val, metric_names, scale)

    def batches(stage: int):
        settings = build.stage_settings(cfg, stage)
        seed = int(cfg["stage1_seed"] if stage == 1 else cfg["seed"])
        length = settings.steps * settings.batch_size
        data = build.patch_dataset(cfg, train, seed=seed, length=length)
        return lambda start: build.loader(data, settings, start, device)

    # ---- stage 1: PSNR-oriented (shared between runs with the same generator settings)
    generator, record1 = stage1_model(cfg, work, batches, validate, device, sink)
    meta["stage1_reused"] = record1["reused"]
    main = distributed.is_main()  # the other torchrun ranks only train
    out_dir = work / "stage2" / build.cell_key(cfg)
    psnr_path = out_dir / "G_psnr.pth"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_generator(psnr_path, generator)
        sink.artifact(psnr_path)
        psnr_sr = super_resolve(generator, val, device)
        psnr_tests = {n: super_resolve(generator, p, device) for n, p in tests.items()}

    # ---- stage 2: GAN, generator initialised from stage 1
    if cfg["fresh"] and main:
        (out_dir / "checkpoint.pth").unlink(missing_ok=True)
    distributed.barrier()  # nobody reads the checkpoint before rank 0 removed it
    discriminator = build.make_discriminator(cfg, seed=int(cfg["seed"]) + 1)
    outcome2 = train_gan(generator, discriminator, perceptual, batches(2),
                         build.stage_settings(cfg, 2), gan_loss=build.gan_loss_name(cfg),
                         weights=build.gan_weights(cfg), lr_d=float(cfg["lr_d"]), device=device,
                         checkpoint=out_dir / "checkpoint.pth", log=sink.log, validate=validate,
                         progress=cfg["progress"] and main)
    if not main:
        return {"rank": distributed.rank()}  # not observed; rank 0 reports the run
    gan_path = out_dir / "G_gan.pth"
    save_generator(gan_path, generator)
    sink.artifact(gan_path)
    gan_sr = super_resolve(generator, val, device)

    # ---- evaluation: validation set and test sets, both stages and bicubic
    result: dict[str, Any] = {"psnr_model": {}, "gan_model": {}, "bicubic": {}}
    sets = {"val": (val, psnr_sr, gan_sr)}
    for name, pairs in tests.items():
        sets[name] = (pairs, psnr_tests[name], super_resolve(generator, pairs, device))
    rows = []
    for set_name, (pairs, sr1, sr2) in sets.items():
        for model, images in (("bicubic", bicubic_images(pairs, scale)), ("psnr_model", sr1),
                              ("gan_model", sr2)):
            means = score(images, pairs, metric_names, scale)
            result[model][set_name] = means
            rows.append({"set": set_name, "model": model, **means})
    table = out_dir / "metrics.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sink.artifact(table)

    # a few small crops of the validation images, the same window for every run
    crop = int(cfg["val_crops"])
    if crop:
        for pair, a, b in zip(val, psnr_sr, gan_sr, strict=True):
            for tag, img in (("hr", pair.hr), ("psnr", a), ("gan", b)):
                path = out_dir / f"crop_{pair.name}_{tag}.png"
                write_image(path, center_crop(img, crop))
                sink.artifact(path)

    result["seconds"] = {"stage1": record1["seconds"], "stage2": outcome2.seconds,
                         "total": time.perf_counter() - t_start}
    result["steps"] = {"stage1": record1["steps"], "stage2": outcome2.steps}
    meta["stage2_resumed_from"] = outcome2.resumed_from
    return result


def interpolation_sweep(cfg: Mapping[str, Any], sink: Sink) -> dict[str, Any]:
    """Network vs image interpolation between this configuration's PSNR and GAN generators.

    Needs the cell trained first (its generators in ``work_dir/stage2/<cell key>/``).
    Network: theta = (1 - a) theta_PSNR + a theta_GAN; image: (1 - a) SR_PSNR + a SR_GAN.
    Plus back projection (``bp_iterations``) applied to the GAN model's output.
    """
    device = resolve_device(cfg["device"])
    if not distributed.is_main():
        return {"rank": distributed.rank()}  # evaluation only: nothing to share out
    scale = int(cfg["scale"])
    meta = run_meta(cfg, "interpolation")
    folder = Path(cfg["work_dir"]) / "stage2" / meta["cell_key"]
    paths = [folder / "G_psnr.pth", folder / "G_gan.pth"]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} not found: train this configuration first "
                                "(experiments/run.py with the same settings)")
    sink.run.info["esrgan"] = {**meta, "vgg": cfg["vgg_weights"]}
    val = build.val_pairs(cfg, cache_dir=Path(cfg["work_dir"]) / "lr_cache")
    metric_names = list(cfg["val_metrics"])
    theta_psnr, theta_gan = (load_generator_state(p) for p in paths)
    generator = build.make_generator(cfg, seed=0).to(device)
    generator.load_state_dict(theta_psnr)
    sr_psnr = super_resolve(generator, val, device)
    generator.load_state_dict(theta_gan)
    sr_gan = super_resolve(generator, val, device)
    result: dict[str, Any] = {"network": [], "image": []}
    for alpha in tqdm(list(cfg["interp_alphas"]), desc="interpolation",
                      disable=not cfg["progress"]):
        alpha = float(alpha)
        generator.load_state_dict(interpolate_state(theta_psnr, theta_gan, alpha))
        net = score(super_resolve(generator, val, device), val, metric_names, scale)
        blend = [(1 - alpha) * a + alpha * b for a, b in zip(sr_psnr, sr_gan, strict=True)]
        img = score(blend, val, metric_names, scale)
        result["network"].append({"alpha": alpha, **net})
        result["image"].append({"alpha": alpha, **img})
        for name, value in net.items():
            sink.log(f"interp_network_{name}", value, round(alpha * 100))
        for name, value in img.items():
            sink.log(f"interp_image_{name}", value, round(alpha * 100))
    iterations = int(cfg["bp_iterations"])
    refined = [np.clip(back_project(sr, pair.lr, scale, iterations), 0, 1)
               for sr, pair in zip(sr_gan, val, strict=True)]
    result["back_projection"] = {"iterations": iterations,
                                 **score(refined, val, metric_names, scale)}
    return result


# Exceptions whose message is the whole story (bad input, missing file, divergence).
KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, OSError,
                                                 TrainingDiverged)


def guarded(work: Any, config: dict, run: Any) -> dict[str, Any]:
    """Run ``work(cfg, sink)`` as a Sacred command: known errors become one line."""
    cfg = dict(config)
    # Denormal floats (weights and activations decaying towards 0) make CPU kernels 10-100x
    # slower; flushing them to zero only touches values below 1e-38.
    torch.set_flush_denormal(True)
    torch.manual_seed(int(cfg["seed"]))
    try:
        return work(cfg, Sink(run))
    except KNOWN_ERRORS as e:
        raise RunError(f"{type(e).__name__}: {e}") from None
    finally:
        distributed.shutdown()


@ex.main
def main(_config: dict, _run: Any) -> dict[str, Any]:
    return guarded(run_cell, _config, _run)


def attach_observers(argv: list[str]) -> list[str]:
    """Add the observers and check every MongoDB target before anything runs.

    Strips our own flags (``--mongo URL``, ``--runs DIR``) from argv and returns the rest for
    Sacred. The file store is always attached (it keeps the complete record if MongoDB is lost
    mid-run); an unreachable MongoDB, ours or Sacred's own ``-m``, exits with one line.
    """
    from experiments.observers import (
        MongoUnavailable,
        make_observers,
        parse_mongo_target,
        ping_mongo,
        sacred_mongo_arg,
        use_resilient_mongo,
    )

    rest, mongo, runs = [], os.environ.get("ESRGAN_MONGO") or None, str(presets.runs_root())
    args = iter(argv)
    for arg in args:
        if arg in ("--mongo", "--runs"):
            value = next(args, None)
            if value is None:
                raise SystemExit(f"error: {arg} needs a value")
            mongo, runs = (value, runs) if arg == "--mongo" else (mongo, value)
        elif arg.startswith(("--mongo=", "--runs=")):
            key, value = arg.split("=", 1)
            mongo, runs = (value, runs) if key == "--mongo" else (mongo, value)
        else:
            rest.append(arg)
    observed = not any(a.startswith("print_") for a in rest)  # print_config observes nothing
    if distributed.launch_rank() != 0:
        observed = False  # a torchrun worker: rank 0 logs the run, once
    STORE_TARGETS.update(runs=runs, mongo=mongo)
    try:
        if observed:
            ex.observers.extend(make_observers(runs, mongo))
            own = sacred_mongo_arg(rest)
            if own:
                ping_mongo(parse_mongo_target(own, default_db="sacred")[0], flag="-m")
    except (MongoUnavailable, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    use_resilient_mongo(ex)
    return rest


@ex.command
def interpolate(_config: dict, _run: Any) -> dict[str, Any]:
    """Network vs image interpolation (and back projection) of an already trained cell."""
    return guarded(interpolation_sweep, _config, _run)


if __name__ == "__main__":
    ex.run_commandline(attach_observers(sys.argv))

"""The stage-1 cache: one PSNR-oriented model per stage-1 key, shared by every run that agrees
on the generator switches and the stage-1 settings (``build.STAGE1_KEYS``).

    <work_dir>/stage1/<key>/generator.pth    the trained model (written last: it marks "done")
    <work_dir>/stage1/<key>/record.json      its validation, steps, seconds and training curves
    <work_dir>/stage1/<key>/checkpoint.pth   the training checkpoint (a killed run resumes here)
    <work_dir>/stage1/<key>.lock             held while one process trains or reads the entry

Two cells that need the same model at once: the second waits for the lock, then reuses it.
Under torchrun rank 0 locks, decides and writes for every rank.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from esrgan import distributed
from esrgan.train import train_psnr
from esrgan.weights import load_generator_state, save_generator
from experiments import build


class Sink(Protocol):
    """Where a run reports its scalars (``experiments.run.Sink``)."""

    scalars: list[tuple[str, float, int]]

    def log(self, name: str, value: float, step: int) -> None: ...


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stage1_model(cfg: Mapping[str, Any], work: Path, batches: Callable[[int], Any],
                 validate: Callable[[torch.nn.Module, int], dict[str, float]],
                 device: torch.device, sink: Sink) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The PSNR-oriented generator: trained here, or reused from the cache.

    ``batches(stage)`` gives the stage's ``batches(start_step)``; ``validate`` scores a
    generator on the validation set. A reused model's curves are logged again, as if trained
    here. Returns the generator (on ``device``) and its record (``reused`` says which).
    """
    key = build.stage1_key(cfg)
    folder = work / "stage1" / key
    done = folder / "generator.pth"
    main = distributed.is_main()
    with file_lock(work / "stage1" / f"{key}.lock") if main else nullcontext():
        generator = build.make_generator(cfg, seed=int(cfg["stage1_seed"]))
        if distributed.from_main(done.exists() and not cfg["fresh"]):
            generator.load_state_dict(load_generator_state(done))
            record = json.loads((folder / "record.json").read_text())
            for name, value, step in record["scalars"]:
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

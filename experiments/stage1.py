"""The stage-1 cache: one PSNR-oriented model per stage-1 key, shared by every run that agrees
on the generator switches and the stage-1 settings (``identity.STAGE1_KEYS``).

    <work_dir>/stage1/<key>/record.json      its validation, steps, seconds and training curves
    <work_dir>/stage1/<key>/generator.pth    the trained model (written last: it marks "done")
    <work_dir>/stage1/<key>/checkpoint.pth   the training checkpoint (a killed run resumes here)
    <work_dir>/stage1/<key>.lock             held while one process trains or reads the entry

Two cells that need the same model at once: the second waits for the lock, then reuses it.
Both files are written atomically, the record first, so a kill or a full disk never leaves an
entry that looks done but cannot be read; an entry that cannot be read anyway (a damaged
file) is set aside with a warning naming it, and the model is trained again. Under torchrun
rank 0 locks, decides and writes for every rank.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from esrgan import distributed
from esrgan.checkpoints import remove_checkpoints, set_aside
from esrgan.files import atomic_write
from esrgan.train import train_psnr
from esrgan.weights import (
    CheckpointError,
    load_checkpoint,
    load_generator_state,
    save_generator,
)
from experiments import identity
from experiments.build import CellParts
from experiments.guards import file_lock


class Sink(Protocol):
    """Where a run reports its scalars (``experiments.run.Sink``)."""

    scalars: list[tuple[str, float, int]]

    def log(self, name: str, value: float, step: int) -> None: ...


def stage1_model(cfg: Mapping[str, Any], parts: CellParts,
                 validate: Callable[[torch.nn.Module, int], dict[str, float]],
                 device: torch.device, sink: Sink
                 ) -> tuple[torch.nn.Module, torch.nn.Module | None, dict[str, Any]]:
    """The PSNR-oriented generator: trained here, or reused from the cache.

    ``parts`` are the cell's (its stage-1 settings, data and generator factory);
    ``validate`` scores a generator on the validation set. A reused model's curves are logged
    again, as if trained here. Returns the generator (raw weights, on ``device``), its moving
    average (with ``ema_decay``, else None) and its record (``reused`` says which).
    """
    work = Path(cfg["work_dir"])
    key = identity.stage1_key(cfg)
    folder = work / "stage1" / key
    done = folder / "generator.pth"
    main = distributed.is_main()
    with file_lock(work / "stage1" / f"{key}.lock") if main else nullcontext():
        generator = parts.new_generator(int(cfg["stage1_seed"]))
        cached = _cached(folder) if main and not cfg["fresh"] else None
        if distributed.from_main(cached is not None):
            state, ema_state, record = cached if main else (
                load_generator_state(done, params="params"), None, {})
            generator.load_state_dict(state)
            ema = None
            if ema_state is not None:
                ema = parts.new_generator(int(cfg["stage1_seed"]))
                ema.load_state_dict(ema_state)
                ema.to(device)
            for name, value, step in record.get("scalars", []):
                sink.log(name, value, step)
            record["reused"] = True
            return generator.to(device), ema, record
        if cfg["fresh"] and main:
            remove_checkpoints(folder / "checkpoint.pth")
        distributed.barrier()  # nobody reads the checkpoint before rank 0 removed it
        outcome = train_psnr(generator, parts.batches(1, device), parts.stage1, device=device,
                             checkpoint=folder / "checkpoint.pth", log=sink.log,
                             validate=validate, progress=cfg["progress"] and main)
        record = {"key": key, "val": outcome.metrics, "seconds": outcome.seconds,
                  "steps": outcome.steps, "resumed_from": outcome.resumed_from,
                  "scalars": [s for s in sink.scalars if s[0].startswith("stage1_")]}
        if main:
            atomic_write(folder / "record.json", json.dumps(record).encode(), what="the record")
            save_generator(done, generator, ema=outcome.ema)
        record["reused"] = False
        return generator, outcome.ema, record


def _cached(folder: Path) -> tuple[dict, dict | None, dict] | None:
    """(generator state, its moving average's state or None, record) of a finished cache
    entry; None when there is none.

    An entry whose files cannot be read is set aside (``*.unreadable-<time>``) with a warning.
    """
    done, record_file = folder / "generator.pth", folder / "record.json"
    if not done.exists():
        return None
    try:
        checkpoint = load_checkpoint(done)  # read once: both weights come from it
    except CheckpointError as exc:
        set_aside(done, str(exc))
        return None
    try:
        state = load_generator_state(checkpoint, params="params")
        ema_state = (load_generator_state(checkpoint, params="params_ema")
                     if isinstance(checkpoint, dict) and "params_ema" in checkpoint else None)
    except CheckpointError as exc:  # its message names the loaded dict, not the file
        set_aside(done, f"{done}: {exc}")
        return None
    try:
        record = json.loads(record_file.read_text())
        if not isinstance(record, dict) or "scalars" not in record:
            raise ValueError("not a stage-1 record")
    except (OSError, ValueError) as exc:
        set_aside(done, f"{record_file} cannot be read ({exc})")
        if record_file.exists():
            set_aside(record_file, f"{record_file} cannot be read")
        return None
    return state, ema_state, record

"""A training stage's files beside its resume point: the checkpoint itself, the periodic ones
kept (``<stem>_<step>.pth``, the last ``keep_last``), the best generator by a validation
metric (``best_<metric>.pth``), and what happens to a file that cannot be read (set aside,
never loaded half-way). ``esrgan.train``'s loop calls these; ``esrgan.retest`` finds the kept
files through :func:`kept_checkpoints` and :func:`best_files`.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from esrgan import distributed
from esrgan.files import atomic_write
from esrgan.metrics import METRICS
from esrgan.weights import CheckpointError, load_checkpoint, save_checkpoint


def atomic_save(obj: dict, path: Path) -> None:
    """The checkpoint written atomically (a kill or a full disk never leaves half a file)."""
    if not distributed.is_main():
        return  # one writer; every rank holds the same state
    save_checkpoint(path, obj)


_KEPT = re.compile(r"^(?P<stem>.+)_(?P<step>\d+)\.pth$")


def kept_checkpoints(checkpoint: Path) -> list[tuple[int, Path]]:
    """The periodic checkpoints kept beside ``checkpoint`` (``<stem>_<step>.pth``), by step."""
    found = []
    for path in checkpoint.parent.glob(f"{checkpoint.stem}_*.pth"):
        match = _KEPT.match(path.name)
        if match and match["stem"] == checkpoint.stem:
            found.append((int(match["step"]), path))
    return sorted(found)


def best_files(checkpoint: Path) -> list[Path]:
    """The best-by-validation generators kept beside ``checkpoint`` (``best_<metric>.pth``)."""
    return sorted(checkpoint.parent.glob("best_*.pth"))


def remove_checkpoints(checkpoint: Path) -> None:
    """``checkpoint``, the periodic checkpoints kept beside it and the best files (a fresh
    start: nothing of an earlier run is left to resume from or to re-score)."""
    for path in (checkpoint, *(p for _, p in kept_checkpoints(checkpoint)),
                 *best_files(checkpoint)):
        path.unlink(missing_ok=True)


def keep(checkpoint: Path, step: int, keep_last: int) -> None:
    """Keep the checkpoint just written as ``<stem>_<step>.pth`` and remove the oldest beyond
    the last ``keep_last`` (-1: keep all).

    A hard link to the same file: no second write, and replacing the resume point later
    leaves it intact; a copy where the file system has no hard links.
    """
    if not distributed.is_main():
        return
    kept = checkpoint.with_name(f"{checkpoint.stem}_{step}.pth")
    link = kept.with_name(f"{kept.name}.link")
    link.unlink(missing_ok=True)
    try:
        os.link(checkpoint, link)
        os.replace(link, kept)
    except OSError:
        link.unlink(missing_ok=True)
        data = checkpoint.read_bytes()
        atomic_write(kept, data, what="the kept checkpoint")
    if keep_last > 0:
        for _, old in kept_checkpoints(checkpoint)[:-keep_last]:
            old.unlink(missing_ok=True)


def settle_kept(checkpoint: Path, start: int, metric: str,
                 best: dict[str, Any] | None) -> dict[str, Any] | None:
    """Before a stage (re)starts at ``start``: remove the kept periodic checkpoints of later
    steps (a rollback abandoned them; they would crowd out the new ones), and return the best
    so far, the better of ``best`` (the checkpoint's record) and the best file's own record
    (the file may be newer than the checkpoint, or outlive a rollback: the best generator
    this folder has seen stays the best)."""
    for step, path in kept_checkpoints(checkpoint):
        if step > start:
            path.unlink(missing_ok=True)
    path = checkpoint.with_name(f"best_{metric}.pth")
    if not metric or not path.exists():
        return best
    try:
        saved = load_checkpoint(path)
        record = {"metric": metric, "value": float(saved["value"]), "step": int(saved["step"])}
    except (CheckpointError, KeyError, TypeError, ValueError):
        set_aside(path, f"{path}: not a best file of this stage")
        return best
    return record if better(metric, record["value"], best) else best


def better(metric: str, value: float, best: dict[str, Any] | None) -> bool:
    """Whether ``value`` of ``metric`` beats the best so far (strictly: ties keep the first)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    higher = METRICS[metric].higher_is_better
    return value > best["value"] if higher else value < best["value"]


def check_best_metric(metric: str) -> None:
    """ValueError unless ``metric`` ('' for none) has a direction: a best value to keep."""
    if metric and (metric not in METRICS or metric == "brightness_shift"):
        usable = [m for m in METRICS if m != "brightness_shift"]
        raise ValueError(f"best metric must be one of {', '.join(usable)} (or empty: none), "
                         f"got {metric!r}")


class CheckpointSetAside(UserWarning):
    """A checkpoint that could not be read was renamed and its stage starts over."""


def set_aside(path: Path, reason: str) -> Path:
    """Rename an unreadable file to ``NAME.unreadable-<time>`` (kept for inspection) and warn."""
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    warnings.warn(f"{reason}; set aside as {aside.name}, and its stage starts over",
                  CheckpointSetAside, stacklevel=3)
    return aside


def _readable_checkpoint(path: Path, parts: Iterable[str]) -> dict | None:
    """The checkpoint at ``path`` if it holds every part, else None (set aside if present)."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or "step" not in state:
            raise CheckpointError(f"{path}: not a training checkpoint (no step)")
        missing = [p for p in (*parts, "rng") if p not in state]
        if missing:
            raise CheckpointError(f"{path}: not a checkpoint of this stage (no {missing[0]})")
        int(state["step"])
    except CheckpointError as exc:
        set_aside(path, str(exc))
        return None
    return state


def load_training_checkpoint(path: Path, parts: Iterable[str] = ()) -> dict | None:
    """The checkpoint at ``path`` (None if absent or unreadable: rank 0 sets an unreadable one
    aside); under DDP every rank must read rank 0's."""
    checked = _readable_checkpoint(path, parts) if distributed.is_main() else None
    usable = distributed.from_main(checked is not None if distributed.is_main() else None)
    # rank 0 keeps the state it has just checked; the other ranks read the file once each
    state = (checked if distributed.is_main() else load_checkpoint(path)) if usable else None
    mine = None if state is None else int(state["step"])
    step = distributed.from_main(mine)
    if mine != step:
        raise RuntimeError(f"{path}: rank {distributed.rank()} sees step {mine}, rank 0 step "
                           f"{step}: the work_dir must be one folder shared by all ranks")
    return state

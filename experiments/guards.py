"""What stands between a command and a wasted or a second run of one cell.

- :func:`skip_if_completed`: the stores already hold the run as COMPLETED: exit 0 at once;
- :func:`check_disk`: the work folder or the file store lacks the space a run needs: one line;
- :func:`cell_lock`: another process runs the same cell: wait for it, then find it COMPLETED
  (on :func:`file_lock`, the lock the stage-1 cache uses too).

They run in ``run.py``'s config hook, before any observer starts or anything trains.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sacred.utils import SacredError

from esrgan import distributed
from esrgan.files import OutputError, check_output_dir
from experiments import build, identity
from experiments.store import completed
from experiments.store.mongo import MongoUnavailable
from experiments.store.targets import StoreTargets

# What a command prints when it finds its cell done, and when it waits for another process
# (``experiments.matrix`` reads them in a cell's log to count what happened).
ALREADY_COMPLETED = "is already COMPLETED in the run store"
BEING_RUN_BY = "is being run by"


class RunError(SacredError):
    """A bad input or a failed run: Sacred prints this one line instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_traceback=False)


def skip_if_completed(cfg: Mapping[str, Any], kind: str, stores: StoreTargets) -> None:
    """Exit 0 before any observer starts when the stores already hold this run as COMPLETED.

    That makes every command printed by ``matrix.py commands`` safe to rerun (a job array
    retried, a script run twice). ``fresh=True`` runs it again regardless.
    """
    if cfg.get("fresh"):
        return
    key = identity.cell_key(cfg)
    rank0 = distributed.launch_rank() == 0  # torchrun workers only read the store
    try:
        done = completed(stores.runs, stores.mongo_target, sync=rank0)
    except MongoUnavailable as exc:
        raise RunError(str(exc)) from None
    if (kind, key) in done:
        print(f"{kind} {key} {ALREADY_COMPLETED} ({stores.describe()}): "
              "nothing to do (fresh=True runs it again)")
        raise SystemExit(0)  # Sacred only catches Exception: this ends the process cleanly


def own_files_bytes(cfg: Mapping[str, Any]) -> int:
    """Bytes of this run's own files already in the work folder (a resumed run replaces them)."""
    work = Path(cfg["work_dir"])
    folders = (work / "stage1" / identity.stage1_key(cfg), work / "stage2" / identity.cell_key(cfg))
    return sum(f.stat().st_size for folder in folders if folder.is_dir()
               for f in folder.rglob("*") if f.is_file())


def check_disk(cfg: Mapping[str, Any], stores: StoreTargets) -> None:
    """Refuse to start when the work folder or the file store lacks the space a run needs.

    The need is counted once per file system, less the run's own files already in the work
    folder: a resumed run writes each new checkpoint beside the old one and then drops it.
    A work folder that cannot be made or written (under a file, no permission) is one line too.
    """
    work = Path(cfg["work_dir"])
    try:
        check_output_dir(work)
    except OutputError as exc:
        raise RunError(f"work_dir: {exc}") from None
    seen: set[int] = set()
    for folder in (work, stores.runs):
        existing = next((p for p in (folder, *folder.resolve().parents) if p.exists()), None)
        if existing is None:
            continue
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        needed = build.disk_needed(cfg)
        if folder == work:
            needed = max(needed - own_files_bytes(cfg), 0)
        free = shutil.disk_usage(existing).free
        if free < needed:
            raise RunError(f"no space left on device: {folder} has {free / 1e6:.0f} MB free, "
                           f"this run needs about {needed / 1e6:.0f} MB more (the checkpoints "
                           f"and their temporary copies)")


@contextmanager
def file_lock(path: Path, on_wait: Callable[[IO[str]], None] | None = None
              ) -> Iterator[IO[str]]:
    """An exclusive lock on ``path`` (created with its folder), held for the ``with`` block.

    When another process holds it, ``on_wait(handle)`` runs first (e.g. to say who), then
    this process waits. The block gets the lock file's handle (a holder may note itself in it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def cell_lock(cfg: Mapping[str, Any], kind: str, stores: StoreTargets) -> Iterator[None]:
    """Hold ``<work_dir>/locks/<kind>-<cell key>.lock`` while this process runs the cell.

    A second process with the same command waits for the first, then finds the cell
    COMPLETED in the store and exits (a retried job array, two identical commands).
    """
    key = identity.cell_key(cfg)
    path = Path(cfg["work_dir"]) / "locks" / f"{kind}-{key}.lock"

    def say_who(handle: IO[str]) -> None:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        print(f"{kind} {key} {BEING_RUN_BY} {holder} (lock {path}): waiting for it",
              flush=True)

    with file_lock(path, on_wait=say_who) as handle:
        # Checked again under the lock: the other process may have finished the cell between
        # this process's first check and taking the lock, with or without a wait.
        skip_if_completed(cfg, kind, stores)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield

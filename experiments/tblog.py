"""TensorBoard event files of a run: a live view of what the run store records.

The run store (Sacred's file store, MongoDB) stays the record of truth; these files only mirror
it while a run trains, for ``tensorboard --logdir <tb_dir>``. So a ``tb_dir`` that cannot be
written (at the start or when its disk fills later) costs one warning and the live view, never
the run. Layout (``tb_dir`` config key, default ``<work_dir>/tensorboard``; ``tb_dir=''``
writes none):

    <tb_dir>/<variant>.<key>/seed<N>/stage1/   stage-1 scalars (tags stage1/...), val crops
    <tb_dir>/<variant>.<key>/seed<N>/stage2/   stage-2 scalars (tags stage2/...), val crops
    <tb_dir>/<variant>.<key>/seed<N>/interp/   the interpolation sweep (step = 100 alpha)

``<variant>`` is the switches' name (``esrgan.paper.switches.variant_label``, e.g.
``ESRGAN_w-o_RRDB``) and ``<key>`` the first 8 characters of the cell key of every setting but
the seeds, so the seeds of one cell sit side by side (TensorBoard's run filter ``^ESRGAN\\.``
shows them together) and two cells with the same switches but other settings never share a
folder. A scalar named ``stageN_rest`` becomes tag ``stageN/rest`` in folder ``stageN``, so
that TensorBoard groups the tags by stage.

Each stage has its own folder because its steps count from 0: a resumed stage (or a stage-1
model taken from the cache, whose curves are logged again) opens its writer with
``purge_step`` = the first step it logs, which hides what an earlier process logged from that
step on (the runs log at the same steps every time, so nothing is lost or shown twice).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from esrgan.files import OutputError, check_output_dir
from esrgan.paper.switches import NAMES, variant_label
from experiments import identity

FLUSH_SECONDS = 30  # how stale the live view may be (a killed run loses at most this)
SEED_KEYS = ("seed", "stage1_seed")


def run_folder(cfg: Mapping[str, Any]) -> Path | None:
    """The run's folder under ``cfg['tb_dir']`` (None when ``tb_dir`` is empty)."""
    root = str(cfg.get("tb_dir") or "")
    if not root:
        return None
    label = variant_label({k: cfg[k] for k in NAMES})
    name = re.sub(r"[^\w.=+-]+", "_", label.replace("/", "-"))
    key = identity.cell_key({k: v for k, v in cfg.items() if k not in SEED_KEYS})[:8]
    seed = f"seed{cfg['seed']}"
    if cfg["stage1_seed"] != cfg["seed"]:
        seed += f"-stage1seed{cfg['stage1_seed']}"
    return Path(root) / f"{name}.{key}" / seed


def tag_of(name: str) -> tuple[str, str]:
    """(folder, tag) of a scalar name: 'stage1_val_psnr' -> ('stage1', 'stage1/val_psnr')."""
    group, _, rest = name.partition("_")
    return group, f"{group}/{rest}" if rest else name


@lru_cache(maxsize=1)
def _quiet_writer_threads() -> None:
    """Keep TensorBoard's writer thread from printing a traceback when its disk is full: the
    error reaches the next write (or close), where :class:`TensorBoard` says it in one line."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and args.exc_type is not None \
                and issubclass(args.exc_type, OSError):
            return
        previous(args)

    threading.excepthook = hook


def open_view(folder: str | Path) -> TensorBoard | None:
    """The run's :class:`TensorBoard` in ``folder``, or None with one warning when the folder
    cannot be written (a file in its path, a read-only folder, a full disk): the live view is
    optional, the run store keeps every value, so the run goes on without it."""
    try:
        return TensorBoard(check_output_dir(folder))
    except OutputError as exc:
        warnings.warn(f"TensorBoard files cannot be written ({exc}): this run has no live "
                      f"view; the run store keeps every value", stacklevel=2)
        return None


class TensorBoard:
    """Writers of one run's folder, one per stage, opened at the first value logged there."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._writers: dict[str, Any] = {}
        self.failed: str | None = None  # why the live view stopped (a full disk, ...)

    def _guard(self, write: Any) -> None:
        """Run one write; a failure (a full disk) stops the live view with one warning: the
        run store is the record, and the run goes on (or fails on its own checkpoints)."""
        if self.failed is not None:
            return
        try:
            write()
        except OSError as exc:
            self.failed = str(exc)
            warnings.warn(f"TensorBoard files under {self.folder} could not be written "
                          f"({exc}): the live view stops here; the run store keeps every value",
                          stacklevel=3)

    def _writer(self, group: str, step: int) -> Any:
        if group not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()
            self._writers[group] = SummaryWriter(str(self.folder / group), purge_step=step,
                                                 flush_secs=FLUSH_SECONDS)
        return self._writers[group]

    def scalar(self, name: str, value: float, step: int) -> None:
        group, tag = tag_of(name)
        self._guard(lambda: self._writer(group, step).add_scalar(tag, value, step))

    def image(self, name: str, image: np.ndarray, step: int) -> None:
        """An H x W x 3 image with values in [0, 1]."""
        group, tag = tag_of(name)
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        self._guard(lambda: self._writer(group, step).add_image(tag, pixels, step,
                                                               dataformats="HWC"))

    def close(self) -> None:
        """Flush and close every writer (the run's end, an error or Ctrl-C)."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            self._guard(writer.close)

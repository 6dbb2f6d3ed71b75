"""Sacred's file store, as this project reads and writes it: one folder per run.

    <root>/<run id>/run.json      status, start/stop time, result, artifact names, heartbeat
    <root>/<run id>/config.json   the config
    <root>/<run id>/info.json     ``info`` (``info['esrgan']``: see ``record``)
    <root>/<run id>/metrics.json  name -> {'steps': [...], 'values': [...], 'timestamps': [...]}
    <root>/<run id>/cout.txt      captured output
    <root>/<run id>/<artifact>    every artifact, under its name
    <root>/_sources/              Sacred's copies of the source files

Every reader of that layout is in this package; nothing else opens these files by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RUNS_ENV = "ESRGAN_RUNS"
RUN_FILE, CONFIG_FILE, INFO_FILE, METRICS_FILE, COUT_FILE = (
    "run.json", "config.json", "info.json", "metrics.json", "cout.txt")


def runs_root() -> Path:
    """The default file store: ``$ESRGAN_RUNS``, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON content of ``path``, or ``default`` when the file does not exist."""
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def run_folders(root: Path) -> Iterator[Path]:
    """The run folders of a file store, in name order (Sacred's ``_sources`` left out)."""
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith("_"):
            yield folder


def run_folder(target: str | Path, root: str | Path) -> Path:
    """A run named by its folder, or by its run id in the file store at ``root``."""
    folder = Path(target)
    if not (folder / CONFIG_FILE).exists() and str(target).isdigit():
        folder = Path(root) / str(target)
    return folder

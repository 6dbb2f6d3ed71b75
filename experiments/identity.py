"""A run's identity: which settings decide its stage-1 model, and which name the whole cell.

Two runs that agree on every stage-1 key share one stage-1 (PSNR) model (``stage1_key``); a
cell is every setting that changes what a run computes (``cell_key``: all keys but the
non-semantic ones). The matrix, the run guards and the run record all name runs by these two
digests. Which key plays which part is ``experiments.keys``; a key added after runs were
stored is left out of both digests at the value those runs computed with (its ``since``), so
that a stored cell keeps its key and a cached stage-1 model stays found.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from experiments.keys import ADDED_KEYS, BY_NAME, NON_SEMANTIC_KEYS, STAGE1_KEYS

__all__ = ["ADDED_KEYS", "NON_SEMANTIC_KEYS", "STAGE1_KEYS", "cell_key", "digest",
           "stage1_key"]


def digest(obj: Any) -> str:
    """The 16-hex-digit SHA-256 of ``obj`` as sorted JSON (every identity in the suite)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _at_since(name: str, value: Any) -> bool:
    key = BY_NAME.get(name)
    return key is not None and key.at_since(value)


def stage1_key(cfg: Mapping[str, Any]) -> str:
    """Hash of exactly the settings that decide the stage-1 model."""
    return digest({k: cfg.get(k) for k in STAGE1_KEYS
                   if not (k in ADDED_KEYS and _at_since(k, cfg.get(k, ADDED_KEYS[k])))})


def cell_key(cfg: Mapping[str, Any]) -> str:
    """Hash of every setting that changes what a run computes (its identity in the matrix)."""
    return digest({k: v for k, v in sorted(cfg.items()) if k not in NON_SEMANTIC_KEYS
                   and not _at_since(k, v)})

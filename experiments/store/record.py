"""What a stored run is: the record both stores give back, and the identity the matrix uses.

Every run of ``experiments/run.py`` records ``info['esrgan']`` (:data:`META_KEY`) with at least
``kind`` ('cell' for one cell of the matrix, 'interpolation' for a sweep over a trained cell)
and ``cell_key`` (a hash of every setting that changes what is computed, seed included).
``(kind, cell_key)`` is a run's identity: the matrix skips a cell the store holds COMPLETED
under it, and the analysis keeps one run per identity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

META_KEY = "esrgan"
KINDS: tuple[str, ...] = ("cell", "interpolation")
Key = tuple[str, str]  # (kind, cell_key)


def timestamp(value: Any) -> dt.datetime | None:
    """A naive UTC datetime at millisecond precision (what MongoDB keeps), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping) and "$date" in value:  # extended JSON, as some servers give
        value = value["$date"]
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass
class RunRecord:
    """One Sacred run as both stores hold it; ``handle`` is the store's own reference."""

    run_id: str
    source: str
    status: str
    config: dict[str, Any]
    info: dict[str, Any]
    result: Any
    start_time: dt.datetime | None
    artifacts: list[str] = field(default_factory=list)
    handle: Any = None

    @property
    def meta(self) -> dict[str, Any]:
        """``info['esrgan']``: what run.py records about the run."""
        return dict(self.info.get(META_KEY) or {})

    @property
    def kind(self) -> str:
        """'cell' (one cell of the matrix; the default) or e.g. 'interpolation'."""
        return str(self.meta.get("kind") or "cell")

    @property
    def preset(self) -> str | None:
        return self.meta.get("preset", self.config.get("preset"))

    @property
    def key(self) -> Key | None:
        """(kind, cell key), or None for a run that records no cell key."""
        cell_key = self.meta.get("cell_key")
        return (self.kind, str(cell_key)) if cell_key else None

    @property
    def identity(self) -> str:
        """What makes two runs the same computation: the cell key (it includes the seed).

        A run without one is only itself.
        """
        key = self.key
        return f"{key[0]}:{key[1]}" if key else f"run:{self.source}:{self.run_id}"

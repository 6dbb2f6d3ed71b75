"""The record of the sequential seed budget in the file store: ``<runs>/sequential.json``.

``experiments/matrix.py`` writes it (the plan made after the first seeds, and how far the added
seeds got); ``analysis`` reads it (the looks the error rate is split over, and what the report
says about the added seeds). The plan itself is computed by ``python -m analysis.sequential``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from esrgan.files import atomic_write

PLAN_FILE = "sequential.json"
LOOKS = 2  # the first seeds, then the added ones: the error rate is split between them


@dataclass
class Extension:
    """Seeds added to one claim's cells: up to ``target`` (``reached`` so far), and why."""

    claim: str
    target: int
    why: str
    reached: int = 0


@dataclass
class Plan:
    """The sequential budget of one store: what was planned after the first seeds, how far
    it got, and why it stopped."""

    looks: int
    first_seeds: int
    cap: int
    budget_min: float
    extensions: list[Extension] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # undecided claims not extended, and why
    first_min: float = 0.0  # wall time of the first seeds (measured, or from the store)
    spent_min: float = 0.0  # wall time of the added rounds so far
    stopped: str = ""  # why the rounds ended
    # first seeds of a claim when not ``first_seeds`` (the claims that read only stage-1
    # models start at more seeds: their cells are cheap)
    first_by_claim: dict[str, int] = field(default_factory=dict)

    def first_of(self, claim: str) -> int:
        """The seeds a claim had at the first look."""
        return self.first_by_claim.get(claim, self.first_seeds)


def plan_path(store: str | Path) -> Path:
    return Path(store) / PLAN_FILE


def read_plan(store: str | Path) -> Plan | None:
    """The store's plan, or None (a store made without the sequential budget)."""
    path = plan_path(store)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["extensions"] = [Extension(**e) for e in data.get("extensions", [])]
        return Plan(**data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a sequential plan ({exc}): delete it to plan "
                         "again") from None


def write_plan(store: str | Path, plan: Plan) -> None:
    """Write the plan atomically (an interrupted write leaves the previous one)."""
    Path(store).mkdir(parents=True, exist_ok=True)
    atomic_write(plan_path(store), (json.dumps(asdict(plan), indent=2) + "\n").encode(),
                 what="the sequential plan")

"""The switch table (esrgan.paper.switches) is the one home of the six switches' values."""

from __future__ import annotations

import re
from pathlib import Path

from esrgan.paper.switches import (
    ESRGAN,
    GENERATOR_SWITCHES,
    NAMES,
    PAPER_PATH,
    SRGAN,
    SWITCH_TABLE,
    variant_label,
)
from experiments import identity, matrix, presets

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_switch_table_is_the_switch_table() -> None:
    """Every switch, the paper's and the extensions, has its row in README's table."""
    rows = [line for line in README.read_text().splitlines()
            if re.match(r"^\| `[a-z_]+` \| `", line)]
    expected = [f"| `{s.name}` | `{s.paper!r}`: {s.paper_text} | `{s.baseline!r}`: "
                f"{s.baseline_text} |" for s in SWITCH_TABLE]
    assert rows == expected


def test_presets_default_to_esrgan_and_paper_preset_too() -> None:
    for preset in presets.NAMED:
        cfg = presets.resolve(preset)
        assert {k: cfg[k] for k in NAMES} == ESRGAN, preset


def test_each_switch_reaches_its_stage() -> None:
    base = presets.resolve("tiny")
    for s in SWITCH_TABLE:  # each switch at its other value
        flipped = presets.resolve("tiny", {s.name: s.baseline})
        assert (identity.stage1_key(base) != identity.stage1_key(flipped)) == (s.stage == 1), s.name
        assert identity.cell_key(base) != identity.cell_key(flipped)
    assert GENERATOR_SWITCHES == ("rrdb", "bn", "beta", "small_init")


def test_designs_and_labels_come_from_the_table() -> None:
    paper = [s for s in SWITCH_TABLE if s.origin == "paper"]
    one = [spec.switches for spec in matrix.design_one_at_a_time("cpu")]
    assert one[0] == ESRGAN and len(one) == 1 + len(paper) == 7
    labels = [variant_label(cell) for cell in one[1:]]
    assert labels == [s.flipped_label for s in paper]
    path = [spec.switches for spec in matrix.design_paper("cpu")]
    assert path[0] == SRGAN and path[-1] == ESRGAN and len(path) == len(PAPER_PATH)
    assert len(matrix.design_factorial("cpu")) == 2 ** len(paper)
    cell = matrix.Cell({**ESRGAN, "bn": True}, seed=1, preset="tiny")
    assert cell.label() == "ESRGAN +BN seed 1"  # the report's name, not a second one

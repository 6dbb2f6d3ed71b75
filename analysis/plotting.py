"""What every figure of the report shares: the Agg backend, the file writer, the colours.

``analysis.figures`` (the ablation's figures) and ``analysis.claim_figures`` (the ledger's)
both draw with these, so that a variant has one colour and every figure one layout.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display (report runs on headless machines)

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.labels import variant_order  # noqa: E402


def save(fig: plt.Figure, out_dir: str | Path, stem: str, title: str, footer: str
         ) -> list[Path]:
    """Lay out, title the figure above its axes, add the footer below them, write ``stem``.png
    and .svg (the saved area grows to fit both), close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width_in = fig.get_size_inches()[0]
    fig.tight_layout()
    fig.suptitle(title, fontsize=11, fontweight="bold", y=1.0, va="bottom")
    if footer:
        # about 17 characters of 6.5 pt text per inch of figure width
        wrapped = textwrap.fill(footer, width=max(40, int(width_in * 17)))
        fig.text(0.01, -0.01, wrapped, ha="left", va="top", fontsize=6.5, color="#444444")
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def palette(variants: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """A colour per variant, in plot order (the same variant gets the same colour)."""
    ordered = variant_order(variants)
    colors = sns.color_palette("tab10" if len(ordered) <= 10 else "husl", len(ordered))
    return dict(zip(ordered, colors, strict=True))

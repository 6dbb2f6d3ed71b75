"""The report's figures read as the ledger reads: a loss panel on a log axis."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from analysis import figures


def test_a_loss_panel_is_logarithmic() -> None:
    fig, axes = plt.subplots(1, 3)
    assert figures.loss_scale(axes[0], pd.Series([0.3, 0.1, 2e11])) == "log"
    assert axes[0].get_yscale() == "log"
    assert figures.loss_scale(axes[1], pd.Series([-0.5, 0.0, 2e11])) == "symlog"
    assert axes[1].get_yscale() == "symlog"
    assert figures.loss_scale(axes[2], pd.Series([float("nan")])) == "linear"
    plt.close(fig)

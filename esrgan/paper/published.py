"""The paper's published x4 benchmark numbers (PSNR in dB, SSIM), as data.

Source: X. Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
ECCV Workshops 2018, supplementary material, Table of the PSNR-oriented results (x4).
``RRDB_PSNR`` is the paper's PSNR-oriented RRDB network trained on DF2K (the model released
as ``RRDB_PSNR_x4.pth``); EDSR and RCAN are baselines the table quotes, PSNR only.

Conventions of these numbers (those of the SR benchmarks of the time): scale 4; LR made from
the mod-cropped HR by MATLAB bicubic ``imresize(HR, 1/4)``; PSNR and SSIM on the Y channel
of MATLAB ``rgb2ycbcr`` (ITU-R BT.601), 4 pixels (= the scale) cropped from every border,
averaged over the images of a set. ``esrgan.benchmark`` compares against these rows and
reproduces the Bicubic row with its default convention (its documentation gives the
measured differences).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "METHODS",
    "PUBLISHED",
    "SCALE",
    "SETS",
    "SET_ALIASES",
    "Score",
    "canonical_set",
    "published",
]


@dataclass(frozen=True)
class Score:
    """One published cell: PSNR-Y in dB and SSIM-Y (None where the table gives no SSIM)."""

    psnr: float
    ssim: float | None = None


SCALE = 4
SETS: tuple[str, ...] = ("Set5", "Set14", "BSD100", "Urban100", "Manga109")


def _row(psnr: tuple[float, ...], ssim: tuple[float, ...] | None = None) -> dict[str, Score]:
    ssims = ssim if ssim is not None else (None,) * len(SETS)
    return {s: Score(p, q) for s, p, q in zip(SETS, psnr, ssims, strict=True)}


PUBLISHED: dict[str, dict[str, Score]] = {
    "Bicubic": _row((28.42, 26.00, 25.96, 23.14, 24.89),
                    (0.8104, 0.7027, 0.6675, 0.6577, 0.7866)),
    "EDSR": _row((32.46, 28.80, 27.71, 26.64, 31.02)),
    "RCAN": _row((32.63, 28.87, 27.77, 26.82, 31.22)),
    "RRDB_PSNR": _row((32.73, 28.99, 27.85, 27.03, 31.66),
                      (0.9011, 0.7917, 0.7455, 0.8153, 0.9196)),
}
METHODS: tuple[str, ...] = tuple(PUBLISHED)

# Other names the same sets go by (lower case): BSD100 is also "B100" and "BSDS100".
SET_ALIASES: dict[str, str] = {"b100": "BSD100", "bsds100": "BSD100"}


def canonical_set(name: str) -> str | None:
    """The table's name of a benchmark set (case-insensitive, aliases resolved), or None."""
    key = name.strip().lower()
    for s in SETS:
        if s.lower() == key:
            return s
    return SET_ALIASES.get(key)


def published(method: str, set_name: str, scale: int = SCALE) -> Score | None:
    """The published score of ``method`` on ``set_name`` at ``scale``; None if the table has none.

    Raises KeyError for a method not in :data:`METHODS`.
    """
    if method not in PUBLISHED:
        raise KeyError(f"no published row {method!r} (rows: {', '.join(METHODS)})")
    canonical = canonical_set(set_name)
    if scale != SCALE or canonical is None:
        return None
    return PUBLISHED[method][canonical]

"""Write the ablation report of one preset: ``reports/<name>/index.md`` (+ index.html).

    python -m analysis.report --store runs --name cpu-3seeds --preset cpu
    python -m analysis.report --mongo mongodb://localhost:27017/esrgan --name cpu --preset cpu
    python -m analysis.report --store runs --mongo URL --name both   # union, duplicates once

The folder holds ``index.md``/``index.html``, ``figures/`` (PNG and SVG of each figure) and
``tables/`` (CSV and Markdown). The page opens with what was found: the claims ledger's
verdicts as sentences, each with its number (``analysis.ledger``, the one judge of an effect),
then the ledger itself with the evidence per seed, how the seeds were chosen, the scale of the
runs and every departure from the paper, and the figures and tables. Exit status: 0 written,
1 no completed runs for the preset, 2 bad arguments or an unreadable store (one ``error:``
line each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import ledger, load, settings, tables
from analysis.claims import ClaimResult
from analysis.labels import MODEL_LABELS, metric_label, set_sort_key, variant_order
from esrgan.evaluation import BICUBIC, GAN_MODEL, PSNR_MODEL
from esrgan.paper.claims import DEEP_VARIANTS
from esrgan.paper.departures import Departure
from experiments.store import redact
from experiments.store.plan import Extension, Plan
from experiments.store.plan import read_plan as read_store_plan

FIGURE_TEXT: dict[str, str] = {
    "pd_plane_rmse": "GAN models on the perception-distortion plane against PIRM's RMSE, with "
                     "the PIRM2018 regions shaded (R1 <= 11.5, R2 <= 12.5, R3 <= 16). "
                     "Lower-left is better on both axes.",
    "pd_plane_psnr": "The same against PSNR-Y: lower-right is better on both axes.",
    "interpolation": "Network interpolation (weights) against image interpolation (pixels) "
                     "between the PSNR-oriented and the GAN model of the same run; the paper "
                     "finds network interpolation closer to the lower-left.",
    "training_curves": "Training losses (log scale) and validation metrics, mean over seeds "
                       "per variant.",
    "crops": "The same centre crop of each validation image from every variant (GAN models; "
             "PSNR-oriented models of the variants trained in stage 1 only).",
    "claims_over_training": "Each claim's effect at every intermediate validation: a line "
                            "still moving when training stops says the effect is not settled.",
    "c1_deep_trainability": "Claim C1: the deep no-BN residual trunk under plain MSRA init, "
                            "x0.1 init, beta = 0.2 and both (the paper's supplementary Fig. 4).",
}


EVIDENCE_TEXT = ("The evidence behind the verdicts on '{set}': one panel per deciding effect, "
                 "one dot per seed (its paired difference value(a) − value(b)), the bar the "
                 "family-wise {level} interval around the mean, the grey band ±delta (no "
                 "effect of interest), the black line zero; the panel's title gives the "
                 "verdict.")


class ReportError(Exception):
    """A reason the report cannot be written, said in one line (exit status in ``code``)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------
# text pieces


def _join(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values) if len(values) else "?"


def _unique(frame: pd.DataFrame, column: str) -> list:
    return list(dict.fromkeys(frame[column].dropna())) if column in frame else []


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def scale_table(runs: pd.DataFrame, interp: pd.DataFrame, sources: Sequence[str]) -> str:
    """The header table: preset, data, steps, network, seeds, runs, wall time, git."""
    per_run = runs.drop_duplicates("run_id")
    steps = sorted({(int(a), int(b)) for a, b in zip(per_run["steps1"], per_run["steps2"],
                                                     strict=True)
                    if pd.notna(a) and pd.notna(b)})
    seeds = sorted({int(s) for s in per_run["seed"].dropna()})
    variants = variant_order(per_run["variant"])
    wall = per_run["wall_s"].sum(min_count=1)
    wall_interp = interp.drop_duplicates("run_id")
    rows = [
        ("Preset", _join(_unique(per_run, "preset"))),
        ("Training data", _join(_unique(per_run, "train_data"))),
        ("Validation data", _join(_unique(per_run, "val_data"))),
        ("Steps per stage", "; ".join(f"PSNR stage {a}, GAN stage {b}" for a, b in steps)
         or "?"),
        ("Generator", "; ".join(_unique(per_run, "network")) or "?"),
        ("Perceptual features", "; ".join(_unique(per_run, "vgg")) or "?"),
        ("Seeds", f"{_join(seeds)} ({len(seeds)})"),
        ("Runs", f"{len(per_run)} completed cell runs ({len(variants)} variants)"
         + (f" + {len(wall_interp)} interpolation run(s)" if len(wall_interp) else "")),
        ("Total wall time", f"{_duration(float(wall) if pd.notna(wall) else math.nan)} "
                            "(sum over cell runs; reused stage-1 models count once)"),
        ("Git revision", _join(_unique(per_run, "git"))),
        ("Run store", _join([redact(str(s)) for s in sources])),
        ("Generated", dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    return tables.markdown_table(["", ""], [[f"**{k}**", v] for k, v in rows])


def departures(runs: pd.DataFrame) -> list[Departure]:
    """Union of the runs' departures from the paper (one per sentence), in first-seen order."""
    seen: dict[str, Departure] = {}
    for found in runs.drop_duplicates("run_id")["substitutes"]:
        for departure in found:
            seen.setdefault(departure.text, departure)
    return list(seen.values())


def departure_lines(runs: pd.DataFrame) -> list[str]:
    """Each departure's sentence once, with the cells it applies to: '(all cells)', or the
    variants (a variant with it in some of its seeds only: those seeds); departures of one
    kind (``Departure.key``) side by side."""
    per_run = runs.drop_duplicates("run_id")
    every = set(per_run["run_id"])
    holders: dict[str, set] = {}
    for run_id, found in zip(per_run["run_id"], per_run["substitutes"], strict=True):
        for departure in found:
            holders.setdefault(departure.text, set()).add(run_id)
    found = departures(runs)
    keys = list(dict.fromkeys(d.key for d in found))
    lines = []
    for departure in sorted(found, key=lambda d: keys.index(d.key)):
        have = holders[departure.text]
        if have == every:
            lines.append(f"{departure.text} (all cells)")
            continue
        cells = []
        for variant in variant_order(per_run["variant"]):
            mine = per_run[per_run["variant"] == variant]
            hit = mine[mine["run_id"].isin(have)]
            if hit.empty:
                continue
            seeds = sorted(int(x) for x in hit["seed"].dropna())
            cells.append(variant if len(hit) == len(mine)
                         else f"{variant} seed{'s' if len(seeds) > 1 else ''} "
                              f"{', '.join(map(str, seeds))}")
        lines.append(f"{departure.text} ({', '.join(cells)})")
    return lines


def artifact_line(summary: pd.DataFrame, set_name: str = "val") -> str:
    """The mean artifact index of each kind of model on ``set_name`` (GAN models, PSNR-oriented
    models, bicubic; the ablation's variants), or '' where the runs did not score it."""
    part = summary[(summary["metric"] == "artifacts") & (summary["set"] == set_name)
                   & ~summary["variant"].isin(list(DEEP_VARIANTS))]
    kinds = []
    for model, label in ((GAN_MODEL, "GAN models"), (PSNR_MODEL, "PSNR-oriented models"),
                         (BICUBIC, "bicubic")):
        rows = part[part["model"] == model].dropna(subset=["mean"])
        if rows.empty:
            continue
        value = tables.format_value("artifacts", float(rows["mean"].mean()))
        many = model != BICUBIC and len(rows) > 1
        kinds.append(f"{label} {value}" + (f" (mean of {len(rows)} variants)" if many else ""))
    if not kinds:
        return ""
    return (f"{metric_label('artifacts')} on {set_name} (the share of the error SR − HR in "
            f"isolated spectral peaks, i.e. a checkerboard or grid; read against bicubic's): "
            f"{', '.join(kinds)}.")


def read_plan(stores: Sequence[load.FileStore | load.MongoStore]) -> Plan | None:
    """The sequential plan of the first file store that has one (MongoDB holds none)."""
    for store in stores:
        if isinstance(store, load.FileStore):
            plan = read_store_plan(store.root)
            if plan is not None:
                return plan
    return None


def seeds_markdown(plan: Plan | None, runs: pd.DataFrame) -> list[str]:
    """How the seeds were chosen: fixed (one look), or the sequential budget's plan."""
    seeds = sorted({int(s) for s in runs.drop_duplicates("run_id")["seed"].dropna()})
    if plan is None:
        return [f"The seeds were fixed before the runs ({_join(seeds)}): the ledger looked at "
                "the data once, and its error rate is not split over looks."]
    cheap = sorted({n for n in plan.first_by_claim.values() if n != plan.first_seeds})
    first = (f"every cell ran {plan.first_seeds} seeds first" if not cheap else
             f"the cells of the claims that read a GAN model ran {plan.first_seeds} seeds "
             f"first, those of the claims that read only stage-1 models "
             f"({', '.join(sorted(plan.first_by_claim))}) {_join(cheap)}: their cells train "
             "no GAN stage, so seeds cost a fraction of a full cell")
    md = [f"Sequential budget: {first}; the ledger then looked at the validation set and gave "
          f"extra seeds (up to {plan.cap} per cell) to the claims that a few more seeds could "
          "decide, each training only what the claim reads (a stage-1 cell where it reads "
          f"PSNR-oriented models only). The error rate is split over {plan.looks} looks, "
          "which the ledger's levels include.", ""]
    if plan.extensions:
        md += [f"- {e.claim}: {_extension_progress(plan, e)}. Why: {e.why}."
               for e in plan.extensions]
    else:
        md.append("- No claim got extra seeds.")
    md += [f"- Left undecided: {why}." for why in plan.left]
    md += ["", f"Budget {plan.budget_min:g} min for the whole matrix: the first seeds took "
               f"{plan.first_min:.0f} min, the extra seeds {plan.spent_min:.0f} min."
           + (f" Stopped: {plan.stopped}." if plan.stopped else "")]
    return md


def _extension_progress(plan: Plan, ext: Extension) -> str:
    """'planned 7 seeds, ran 5 (seeds 0-4; the budget ended before seed 5)': what one
    extension reached, and why it stopped there."""
    ran = max(ext.reached, plan.first_of(ext.claim))
    text = f"planned {ext.target} seeds, ran {ran} (seeds 0-{ran - 1}"
    if ran >= ext.target:
        return text + ": its target)"
    if plan.stopped.startswith("the budget"):
        return text + f"; the budget ended before seed {ran})"
    return text + (f"; {plan.stopped})" if plan.stopped else ")")


# ------------------------------------------------------------------------------------------
# Markdown -> HTML

PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:90%;display:block;"
    "overflow-x:auto}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}"
    "img{max-width:100%;height:auto}blockquote{border-left:4px solid #d1495b;margin:1em 0;"
    "padding:.2em 1em;background:#fdf2f3}code{background:#f4f4f4;padding:0 .2em}")


def to_html(markdown_text: str, title: str) -> str:
    """The report page: the Markdown rendered by python-markdown (its ``tables`` extension),
    so every machine renders the same page; tables scroll sideways on a narrow screen and
    figures shrink to the page's width."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>\n"
            f"{body}\n</body></html>\n")


# ------------------------------------------------------------------------------------------
# the report


def build_report(sources: Sequence[str], name: str, out: str | Path = "reports",
                 preset: str | None = None) -> Path:
    """Load the runs, write figures, tables and ``index.md``/``index.html``; returns the folder.

    Raises :class:`ReportError` (code 1) when the store has no completed runs for the preset.
    """
    if not sources:
        raise ReportError("give a run store: --store FOLDER and/or --mongo URL")
    try:  # each store opened once (one MongoDB client for all the loaders)
        stores = [load.open_store(s) for s in sources]
        runs = load.load_runs(stores, preset=preset)
    except load.StoreError as e:
        raise ReportError(str(e)) from None
    where = " + ".join(redact(str(s)) for s in sources)
    if runs.empty:
        which = f"preset '{preset}'" if preset else "any preset"
        raise ReportError(f"no completed runs for {which} in {where}", code=1)
    presets = _unique(runs, "preset")
    if len(presets) > 1:
        raise ReportError(f"the store holds runs of several presets ({', '.join(presets)}): "
                          "choose one with --preset")
    preset = presets[0]
    from analysis import figures  # matplotlib only once there is something to draw

    curves = load.load_curves(stores, preset=preset)
    interp = load.load_interpolation(stores, preset=preset)
    plan = read_plan(stores)
    sets = sorted(set(runs["set"].dropna()), key=set_sort_key)
    try:  # a variant's runs pooled as replicates must be of one setting
        settings.check(runs, interp)
        decided = ledger.decide_all(runs, interp, sets, looks=plan.looks if plan else 1)
    except settings.MixedSettings as e:
        raise ReportError(str(e)) from None
    folder = Path(out) / name
    fig_dir, table_dir = folder / "figures", folder / "tables"

    summary = tables.variant_summary(runs)
    # MongoDB crops come out of GridFS into a scratch folder: they end up in the crop figure
    with tempfile.TemporaryDirectory(prefix="esrgan-crops-") as scratch:
        crops = load.crop_paths(stores, preset=preset, cache_dir=scratch)
        written = figures.write_all(runs, decided, curves, interp, crops, fig_dir)
    # a rerun into the same folder must not leave figures or tables of an older report
    kept = {p for paths in written.values() for p in paths}
    for old in list(fig_dir.glob("*.png")) + list(fig_dir.glob("*.svg")):
        if old not in kept:
            old.unlink()
    for old in ("switch_effects.csv", "switch_effects.md"):
        (table_dir / old).unlink(missing_ok=True)
    sentences = [json.dumps([d.text for d in found]) for found in runs["substitutes"]]
    tables.write_csv(runs.assign(substitutes=sentences).drop(columns=[settings.SETTING_VALUES]),
                     table_dir / "runs.csv")
    tables.write_csv(summary, table_dir / "variant_metrics.csv")
    tables.write_csv(ledger.frame(decided), table_dir / "claims.csv")
    if not interp.empty:
        tables.write_csv(interp.drop(columns=[settings.SETTING_VALUES]),
                         table_dir / "interpolation.csv")
    else:
        (table_dir / "interpolation.csv").unlink(missing_ok=True)

    (table_dir / "variant_metrics.md").write_text(
        "\n\n".join(f"## {h}\n\n{t}" for h, t in metric_tables(summary)) + "\n")
    md = _markdown(name, runs, interp, summary, decided, plan, written, sources)
    (folder / "index.md").write_text(md)
    (folder / "index.html").write_text(to_html(md, f"ESRGAN ablation: {name}"))
    return folder


def _first_clause(why: str) -> str:
    """A missing-weights message up to where it starts listing folders, and the fix."""
    head = re.split(r" \(from | not found in|; ", why, maxsplit=1)[0].strip().rstrip(",")
    return head + (" (`make weights` gets it)" if "make weights" in why else "")


def metric_panel(runs: pd.DataFrame) -> str:
    """Which metrics of a current SR paper's panel these runs scored, and why any is missing."""
    from esrgan.metrics import SR_PANEL

    cells = runs.drop_duplicates("run_id")
    scored = [m for m in SR_PANEL if m in set(runs["metric"].dropna())]
    reasons: dict[str, str] = {}
    for entries in cells["metrics_left_out"].dropna():
        for metric, why in entries:
            reasons.setdefault(metric, why)
    asked = {m for metrics in cells["val_metrics"].dropna() for m in metrics}
    missing = []
    for metric in (m for m in SR_PANEL if m not in scored):
        why = reasons.get(metric) or ("not asked for (add it to `val_metrics`)"
                                      if metric not in asked else "not computed")
        missing.append(f"{metric_label(metric)}: {_first_clause(why)}")
    text = f"Scored: {', '.join(metric_label(m) for m in scored) or 'none of the panel'}."
    if missing:
        text += " Left out: " + "; ".join(missing) + "."
    return text


def metric_tables(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(heading, Markdown table) per model and set: GAN model first, validation set first."""
    out = []
    for model in (GAN_MODEL, PSNR_MODEL):
        for set_ in sorted(set(summary["set"]), key=set_sort_key):
            table = tables.metrics_markdown(summary, model, set_)
            if table:
                out.append((f"{MODEL_LABELS[model]}, set '{set_}'", table))
    return out


def _figure_md(written: dict[str, list[Path]], key: str, folder_name: str = "figures",
               text: str | None = None) -> str:
    """A figure's image, its caption (``text``, else the figure's own) and its SVG link."""
    files = written.get(key) or []
    png = next((p for p in files if p.suffix == ".png"), None)
    if png is None:
        return ""
    svg = next((p for p in files if p.suffix == ".svg"), None)
    image = f"![{key}]({folder_name}/{png.name})"
    link = f" ([SVG]({folder_name}/{svg.name}))" if svg else ""
    base = re.sub(r"_(?!rmse$|psnr$)[^_]+$", "", key) if key.startswith("pd_plane") else key
    base = "interpolation" if key.startswith("interpolation") else base
    return f"{image}\n\n{FIGURE_TEXT.get(base, '') if text is None else text}{link}"


LEDGER_TEXT = (
    "Each claim of the paper (`esrgan/paper/claims.py`), tested where the paper makes it. An "
    "effect is value(a) − value(b) of one metric, paired by seed, as its row names it; the "
    "paper predicts its sign. Its interval is a Student-t interval over seeds at the level "
    "that holds the chance of any false verdict on that set at 5% (Bonferroni over the set's "
    "deciding effects and the looks at the data; below). Verdicts: *agrees* / *opposite* (the "
    "interval excludes 0 on the paper's side / the other), *equivalent* (the interval lies "
    "inside ±delta, the smallest effect of interest, listed under the table), *inconclusive* "
    "(neither: the row gives the smallest effect detectable with 80% power at that level and "
    "the seeds a decision would need), *premise not met*, *not testable at this scale*. "
    "Beside each verdict, the one the effect would get tested alone at 95% (unadjusted).")


def _markdown(name: str, runs: pd.DataFrame, interp: pd.DataFrame, summary: pd.DataFrame,
              decided: dict[str, list[ClaimResult]], plan: Plan | None,
              written: dict[str, list[Path]], sources: Sequence[str]) -> str:
    found = departures(runs)
    heads = list(dict.fromkeys(d.short for d in found))
    md = [f"# ESRGAN ablation: {name}", ""]
    if found:
        md += [f"> **Not the paper's setting.** This report measures a reduced reproduction: "
               f"{'; '.join(heads)}. Its numbers are not comparable with the paper's.", ""]
    md += ["## What was found", "",
           "Each effect with its number on each set: value(a) − value(b), its interval at the "
           "set's family-wise level and n (the ledger below gives the levels), then the "
           "verdict; strongest first.", ""]
    md += ledger.found_markdown(decided)
    md += ["## The claims ledger", "", LEDGER_TEXT, "", ledger.ledger_markdown(decided), "",
           "Smallest effects of interest (an interval inside ±delta: *equivalent*):", ""]
    md += [f"- {line}" for line in ledger.delta_lines()]
    md += ["", "Chance, set by set:", ""]
    md += [f"- {line}" for line in ledger.chance_lines(decided)]
    md.append("")
    for set_name in decided:
        level = ledger.level_text(ledger.set_level(decided[set_name]))
        figure = _figure_md(written, f"effects_{set_name}",
                            text=EVIDENCE_TEXT.format(set=set_name, level=level))
        if figure:
            md += [figure, ""]
    md += ["### How the seeds were chosen", ""] + seeds_markdown(plan, runs) + [""]
    for key in ("claims_over_training", "c1_deep_trainability"):
        figure = _figure_md(written, key)
        if figure:
            md += [figure, ""]
    md += ["## Scale of these runs", "", scale_table(runs, interp, sources), ""]
    md += ["## Departures from the paper", ""]
    md += [f"- {line}" for line in departure_lines(runs)] if found else ["- none recorded"]
    paper_scale = ledger.paper_scale_markdown(runs)
    if paper_scale:
        md += ["", "## At paper scale", "", paper_scale]
    md += ["", "## Perception-distortion plane", ""]
    for key in [k for k in written if k.startswith("pd_plane")]:
        figure = _figure_md(written, key)
        if figure:
            md += [figure, ""]
    md += ["## Network vs image interpolation", ""]
    md += [_figure_md(written, "interpolation") or "No interpolation run in the store.", ""]
    for key in [k for k in written if k.startswith("interpolation_")]:
        figure = _figure_md(written, key)
        if figure:
            md += [figure, ""]
    md += ["## Metrics per variant", "",
           "Mean ± half-width of the 95% t-interval over seeds (no interval with n = 1); "
           "↑ higher is better, ↓ lower is better. Metrics on the Y channel.", "",
           metric_panel(runs), ""]
    for heading, table in metric_tables(summary):
        md += [f"### {heading}", "", table, ""]
    bic = summary[summary["model"] == BICUBIC]
    for set_, part in bic.groupby("set", sort=False):
        values = ", ".join(f"{metric_label(r.metric)} {tables.format_value(r.metric, r.mean)}"
                           for r in part.drop_duplicates("metric").itertuples())
        md += [f"Bicubic on '{set_}': {values}.", ""]
    md += ["## Training curves", "", _figure_md(written, "training_curves") or "No curves.", ""]
    md += ["## Crops", "", _figure_md(written, "crops") or "No crops saved by the runs.", ""]
    artifacts = artifact_line(summary)
    if artifacts:
        md += [artifacts, ""]
    md += ["## Files", "",
           "- [tables/runs.csv](tables/runs.csv): every run x model x set x metric",
           "- [tables/variant_metrics.csv](tables/variant_metrics.csv): mean, sd, CI, n per "
           "variant",
           "- [tables/claims.csv](tables/claims.csv): the ledger: every effect on every set, "
           "its interval (family-wise and unadjusted) and verdicts"]
    if not interp.empty:
        md += ["- [tables/interpolation.csv](tables/interpolation.csv): interpolation sweeps"]
    md.append("")
    return "\n".join(md)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m analysis.report",
                                     description="Write the ablation report of one preset.")
    parser.add_argument("--store", help="Sacred file store folder (e.g. runs)")
    parser.add_argument("--mongo", default=os.environ.get("ESRGAN_MONGO") or None,
                        help="MongoDB URL, e.g. mongodb://host:27017/esrgan (default: the "
                             "environment variable ESRGAN_MONGO)")
    parser.add_argument("--name", required=True, help="report name: reports/NAME/")
    parser.add_argument("--preset", help="only runs of this preset (default: the only one)")
    parser.add_argument("--out", default="reports", help="reports folder (default reports)")
    args = parser.parse_args(argv)
    sources = [s for s in (args.store, args.mongo) if s]
    try:
        folder = build_report(sources, args.name, args.out, args.preset)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    print(f"report written: {folder / 'index.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

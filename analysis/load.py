"""Read the run store (Sacred file store or MongoDB) into tidy pandas frames.

    runs = load_runs("runs")                                   # FileStorageObserver folder
    runs = load_runs("mongodb://localhost:27017/esrgan")       # MongoObserver database
    runs = load_runs(["runs", "mongodb://host:27017"])         # both, duplicates dropped

The stores are read by ``experiments.store`` (the one reader of stored runs, also used by the
matrix and resume), which turns a run of either store into the same ``RunRecord``; this module
turns records into frames, so both stores give the same frame. Nothing here trains or imports
Sacred.

Selection, the same in every loader (``experiments.store.select_runs``): only runs of the
given statuses (default COMPLETED), of one preset if asked, and of one cell once: when a cell
(``info.esrgan.cell_key``, which includes the seed) was run several times, the newest run is
kept (the same run observed by both stores is one run, too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.labels import metric_sort_key, set_sort_key, variant_label
from analysis.settings import SETTING_COLUMNS, setting_columns
from esrgan.evaluation import MODELS
from esrgan.metrics import perceptual_index
from esrgan.paper.claims import DEEP_STUDY, deep_label
from esrgan.paper.departures import Departure, departures
from esrgan.paper.switches import SWITCHES
from experiments.keys import complete
from experiments.store import (
    FileStore,
    MongoStore,
    RunRecord,
    StoreError,
    open_store,
    open_stores,
    select_runs,
)
from experiments.store.reader import Source

__all__ = ["CROP_COLUMNS", "CURVE_COLUMNS", "INTERP_COLUMNS", "MODELS", "RUN_COLUMNS",
           "FileStore", "MongoStore", "RunRecord", "StoreError", "crop_paths", "load_curves",
           "load_interpolation", "load_runs", "open_store", "open_stores", "select_runs",
           "switches_of"]

INTERPOLATION_METHODS: tuple[str, ...] = ("network", "image", "back_projection")

RUN_COLUMNS: list[str] = [
    "run_id", "source", "status", "kind", "preset", "seed", "stage1_seed", *SWITCHES,
    "variant", "model", "set", "metric", "value", "wall_s", "git", "vgg_weights",
    "percep_normalize", "steps1", "steps2", "start_time", "cell_key", "network", "vgg",
    "train_data", "val_data", "substitutes", "study", "depth", "vgg_active_fraction",
    "vgg_layer", "val_metrics", "metrics_left_out", *SETTING_COLUMNS,
]
CURVE_COLUMNS: list[str] = ["run_id", "variant", "seed", "name", "step", "value", "study"]
INTERP_COLUMNS: list[str] = ["run_id", "seed", "variant", "method", "alpha", "iterations",
                             "metric", "value", "preset", "start_time", "set", "study",
                             *SETTING_COLUMNS]
CROP_COLUMNS: list[str] = ["run_id", "variant", "seed", "image", "tag", "path"]


def switches_of(record: RunRecord) -> dict[str, Any]:
    """The switches from the run's config; a switch added after the run was stored at the
    value the run computed with (``experiments.keys.complete``), others missing as None."""
    config = complete(record.config)
    return {name: switch.normalise(config.get(name)) for name, switch in SWITCHES.items()}


def _network(meta: Mapping[str, Any]) -> str | None:
    arch = meta.get("generator_arch")
    if not isinstance(arch, Mapping):
        return None
    trunk = "RRDB" if arch.get("trunk") == "rrdb" else "ResBlock"
    text = f"{trunk} nf {arch.get('nf')} nb {arch.get('nb')}"
    return text + (f" gc {arch.get('gc')}" if arch.get("trunk") == "rrdb" else "")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _run_columns(record: RunRecord) -> dict[str, Any]:
    """The per-run columns shared by every row of the run."""
    cfg, meta = record.config, record.meta
    result = record.result if isinstance(record.result, Mapping) else {}
    seconds = result.get("seconds") if isinstance(result.get("seconds"), Mapping) else {}
    switches = switches_of(record)
    study = meta.get("study", cfg.get("study")) or "ablation"
    variant = deep_label(switches) if study == DEEP_STUDY else variant_label(switches)
    arch = meta.get("generator_arch") if isinstance(meta.get("generator_arch"), Mapping) else {}
    return {
        "run_id": record.run_id, "source": record.source, "status": record.status,
        "kind": record.kind, "preset": record.preset, "seed": cfg.get("seed"),
        "stage1_seed": cfg.get("stage1_seed", cfg.get("seed")), **switches,
        "variant": variant, "wall_s": _number(seconds.get("total")),
        "git": meta.get("git"), "vgg_weights": cfg.get("vgg_weights"),
        "percep_normalize": cfg.get("percep_normalize"), "steps1": cfg.get("steps1"),
        "steps2": cfg.get("steps2"), "start_time": record.start_time,
        "cell_key": meta.get("cell_key"), "network": _network(meta), "vgg": meta.get("vgg"),
        "train_data": meta.get("train_data"), "val_data": meta.get("val_data"),
        "substitutes": _departures(cfg, meta), "study": study,
        "depth": arch.get("nb"), "vgg_active_fraction": _number(meta.get("vgg_active_fraction")),
        "vgg_layer": meta.get("vgg_layer", cfg.get("vgg_layer")),
        "val_metrics": tuple(cfg.get("val_metrics") or ()),
        # metric -> why it could not be scored (its weight file missing), as the run recorded
        "metrics_left_out": tuple(sorted((meta.get("metrics_left_out") or {}).items())),
        **setting_columns(cfg),
    }


def _departures(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[Departure, ...]:
    """The run's departures from the paper: as the run recorded them; for a run that predates
    that record, derived from its config (in today's wording); for a config that predates
    one of today's settings, read from the sentences the run recorded."""
    recorded = meta.get("departures")
    if isinstance(recorded, list):
        try:
            return tuple(Departure(**d) for d in recorded)
        except TypeError:  # not the mappings Departure.record writes
            pass
    try:
        return tuple(departures(complete(cfg)))
    except (KeyError, TypeError, ValueError):
        return tuple(_recorded_sentence(s) for s in meta.get("substitutes") or ())


def _recorded_sentence(text: str) -> Departure:
    """A departure an older run recorded as a sentence only; its head (up to 'instead of',
    a parenthesis, a colon or a semicolon) is its short name: 'random-weight VGG19 (seed 0)
    instead of ...' -> 'random-weight VGG19'."""
    text = str(text)
    short = re.split(r" instead of| \(|;|:", text, maxsplit=1)[0].strip().rstrip(":,")
    return Departure(key="", ours=text, paper="", why="", short=short, text=text)


def _metric_rows(result: Any) -> Iterator[tuple[str, str, str, float]]:
    """(model, set, metric, value) of a cell result {model: {set: {metric: number}}}.

    PI is added where Ma and NIQE are there and PI is not (``perceptual_index``).
    """
    if not isinstance(result, Mapping):
        return
    for model in MODELS:
        sets = result.get(model)
        if not isinstance(sets, Mapping):
            continue
        for set_name in sorted(sets, key=set_sort_key):
            values = sets[set_name]
            if not isinstance(values, Mapping):
                continue
            numbers = {k: _number(v) for k, v in values.items()}
            numbers = {k: v for k, v in numbers.items() if v is not None}
            if "pi" not in numbers and "ma" in numbers and "niqe" in numbers:
                numbers["pi"] = perceptual_index(numbers["ma"], numbers["niqe"])
            for metric in sorted(numbers, key=metric_sort_key):
                yield model, str(set_name), metric, numbers[metric]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if "start_time" in frame:
        frame["start_time"] = pd.to_datetime(frame["start_time"])
    return frame


# ------------------------------------------------------------------------------------------
# the loaders


def load_runs(source: Source | Sequence[Source], *, preset: str | None = None,
              statuses: Iterable[str] | None = ("COMPLETED",),
              kinds: Iterable[str] | None = ("cell",), dedupe: bool = True) -> pd.DataFrame:
    """One row per run x model x set x metric (columns: :data:`RUN_COLUMNS`).

    ``model`` is 'bicubic', 'psnr_model' or 'gan_model'; ``set`` is 'val' or a test set name;
    ``wall_s`` is the run's total seconds; ``substitutes`` a tuple of the run's departures
    from the paper (:class:`esrgan.paper.departures.Departure`; the column keeps the name of
    runs.csv). A run without a result (e.g. FAILED, when asked for) gives one row with
    model/set/metric/value missing, so that it is still counted.
    """
    rows = []
    for _, record in select_runs(source, preset=preset, statuses=statuses, kinds=kinds,
                                 dedupe=dedupe):
        base = _run_columns(record)
        metric_rows = list(_metric_rows(record.result))
        if not metric_rows:
            rows.append({**base, "model": None, "set": None, "metric": None,
                         "value": math.nan})
        for model, set_name, metric, value in metric_rows:
            rows.append({**base, "model": model, "set": set_name, "metric": metric,
                         "value": value})
    return _frame(rows, RUN_COLUMNS)


def load_curves(source: Source | Sequence[Source], *, preset: str | None = None,
                statuses: Iterable[str] | None = ("COMPLETED",), dedupe: bool = True,
                names: Iterable[str] | None = None) -> pd.DataFrame:
    """Training curves, one row per run x scalar x step (columns: :data:`CURVE_COLUMNS`)."""
    wanted = None if names is None else set(names)
    rows = []
    for store, record in select_runs(source, preset=preset, statuses=statuses,
                                     dedupe=dedupe):
        base = _run_columns(record)
        for name, series in sorted(store.metrics(record).items()):
            if wanted is not None and name not in wanted:
                continue
            for step, value in zip(series.get("steps", []), series.get("values", []),
                                   strict=False):
                number = _number(value)
                if number is not None:
                    rows.append({"run_id": record.run_id, "variant": base["variant"],
                                 "seed": base["seed"], "name": name, "step": int(step),
                                 "value": number, "study": base["study"]})
    return _frame(rows, CURVE_COLUMNS)


def load_interpolation(source: Source | Sequence[Source], *, preset: str | None = None,
                       statuses: Iterable[str] | None = ("COMPLETED",), dedupe: bool = True
                       ) -> pd.DataFrame:
    """Interpolation sweeps (runs of kind 'interpolation'), one row per point and metric.

    ``method`` is 'network' or 'image' (one row per alpha) or 'back_projection' (alpha
    missing, ``iterations`` set); ``set`` is 'val' or a test set. Columns:
    :data:`INTERP_COLUMNS`.
    """
    rows = []
    for _, record in select_runs(source, preset=preset, statuses=statuses,
                                 kinds=("interpolation",), dedupe=dedupe):
        base = _run_columns(record)
        common = {"run_id": record.run_id, "seed": base["seed"], "variant": base["variant"],
                  "preset": base["preset"], "start_time": base["start_time"],
                  "study": base["study"], **{c: base[c] for c in SETTING_COLUMNS}}
        result = record.result if isinstance(record.result, Mapping) else {}
        others = result.get("sets") if isinstance(result.get("sets"), Mapping) else {}
        for set_name, curves in [("val", result), *others.items()]:
            if not isinstance(curves, Mapping):
                continue
            for method in ("network", "image"):
                for point in curves.get(method) or []:
                    if not isinstance(point, Mapping) or _number(point.get("alpha")) is None:
                        continue
                    for metric, value in _point_metrics(point):
                        rows.append({**common, "method": method, "set": str(set_name),
                                     "alpha": float(point["alpha"]), "iterations": math.nan,
                                     "metric": metric, "value": value})
        back = result.get("back_projection")
        if isinstance(back, Mapping):
            iterations = _number(back.get("iterations"))
            for metric, value in _point_metrics(back):
                rows.append({**common, "method": "back_projection", "alpha": math.nan,
                             "iterations": math.nan if iterations is None else iterations,
                             "metric": metric, "value": value, "set": "val"})
    return _frame(rows, INTERP_COLUMNS)


def _point_metrics(point: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    numbers = {k: _number(v) for k, v in point.items() if k not in ("alpha", "iterations")}
    numbers = {k: v for k, v in numbers.items() if v is not None}
    if "pi" not in numbers and "ma" in numbers and "niqe" in numbers:
        numbers["pi"] = perceptual_index(numbers["ma"], numbers["niqe"])
    for metric in sorted(numbers, key=metric_sort_key):
        yield metric, numbers[metric]


_CROP = re.compile(r"^crop_(?P<image>.+)_(?P<tag>[A-Za-z0-9]+)\.png$")


def crop_paths(source: Source | Sequence[Source], *, preset: str | None = None,
               statuses: Iterable[str] | None = ("COMPLETED",), dedupe: bool = True,
               cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The validation crops of every run (``crop_<image>_<tag>.png``; tag hr/psnr/gan/...).

    File-store crops are returned in place; MongoDB crops are copied from GridFS into
    ``cache_dir`` (default: a folder under the system temp dir). Columns: :data:`CROP_COLUMNS`.
    """
    rows = []
    for store, record in select_runs(source, preset=preset, statuses=statuses,
                                     dedupe=dedupe):
        base = _run_columns(record)
        for name in record.artifacts:
            match = _CROP.match(name)
            if not match:
                continue
            path = store.artifact(record, name, None if cache_dir is None else Path(cache_dir))
            if path.is_file():
                rows.append({"run_id": record.run_id, "variant": base["variant"],
                             "seed": base["seed"], "image": match["image"],
                             "tag": match["tag"], "path": path})
    return pd.DataFrame(rows, columns=CROP_COLUMNS)

"""Read the run store (Sacred file store or MongoDB) into tidy pandas frames.

    runs = load_runs("runs")                                   # FileStorageObserver folder
    runs = load_runs("mongodb://localhost:27017/esrgan")       # MongoObserver database
    runs = load_runs(["runs", "mongodb://host:27017"])         # both, duplicates dropped

One reader per store kind turns a run into the same plain record (config, info, result,
status, times, metrics, artifacts); everything after that is shared, so both stores give the
same frame. Nothing here trains or imports Sacred.

Selection, the same in every loader: only runs of the given statuses (default COMPLETED), of
one preset if asked, and of one cell once: when a cell (``info.esrgan.cell_key``, which
includes the seed) was run several times, the newest run is kept (the same run observed by
both stores is one run, too).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.labels import SWITCHES, metric_sort_key, set_sort_key, variant_label

DEFAULT_DB = "esrgan"
MODELS: tuple[str, ...] = ("bicubic", "psnr_model", "gan_model")
INTERPOLATION_METHODS: tuple[str, ...] = ("network", "image", "back_projection")

RUN_COLUMNS: list[str] = [
    "run_id", "source", "status", "kind", "preset", "seed", "stage1_seed", *SWITCHES,
    "variant", "model", "set", "metric", "value", "wall_s", "git", "vgg_weights",
    "percep_normalize", "steps1", "steps2", "start_time", "cell_key", "network", "vgg",
    "train_data", "val_data", "substitutes",
]
CURVE_COLUMNS: list[str] = ["run_id", "variant", "seed", "name", "step", "value"]
INTERP_COLUMNS: list[str] = ["run_id", "seed", "variant", "method", "alpha", "iterations",
                             "metric", "value", "preset", "start_time"]
CROP_COLUMNS: list[str] = ["run_id", "variant", "seed", "image", "tag", "path"]

# Config keys that never change what a run computes. Only a fallback identity for runs that
# predate info.esrgan.cell_key; kept here because analysis/ must not import experiments/.
_NON_SEMANTIC = {"device", "num_workers", "resume", "fresh", "work_dir", "progress",
                 "log_every", "val_every", "ckpt_every", "test_sets", "val_crops"}


class StoreError(RuntimeError):
    """A run store that cannot be read (missing folder, unreachable server)."""


@dataclass
class RunRecord:
    """One Sacred run as both stores hold it; ``handle`` is the store's own reference."""

    run_id: str
    source: str
    status: str
    config: dict[str, Any]
    info: dict[str, Any]
    result: Any
    start_time: pd.Timestamp | None
    artifacts: list[str] = field(default_factory=list)
    handle: Any = None

    @property
    def meta(self) -> dict[str, Any]:
        """``info['esrgan']``: what run.py records about the run."""
        return dict(self.info.get("esrgan") or {})

    @property
    def kind(self) -> str:
        """'cell' (one cell of the matrix; the default) or e.g. 'interpolation'."""
        return str(self.meta.get("kind") or "cell")

    @property
    def preset(self) -> str | None:
        return self.meta.get("preset", self.config.get("preset"))

    @property
    def identity(self) -> str:
        """What makes two runs the same computation: the cell key (it includes the seed)."""
        key = self.meta.get("cell_key")
        if key:
            return f"{self.kind}:{key}"
        semantic = {k: v for k, v in sorted(self.config.items())
                    if k not in _NON_SEMANTIC and k != "__doc__"}
        text = json.dumps(semantic, sort_keys=True, default=str)
        return f"{self.kind}:cfg:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _timestamp(value: Any) -> pd.Timestamp | None:
    """A naive UTC timestamp at millisecond precision (what MongoDB keeps) or None."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping) and "$date" in value:  # extended JSON, as some servers give
        value = value["$date"]
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.floor("ms")


# ------------------------------------------------------------------------------------------
# the two stores


class FileStore:
    """A Sacred FileStorageObserver folder: ``<root>/<run id>/{config,run,info,metrics}.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"run store folder not found: {self.root}")
        self.name = str(self.root)

    def runs(self) -> Iterator[RunRecord]:
        """Every readable run folder (half-written ones are skipped)."""
        for folder in sorted(self.root.iterdir()):
            run_file = folder / "run.json"
            if folder.name.startswith("_") or not run_file.is_file():
                continue
            try:
                run = json.loads(run_file.read_text())
                config = _read_json(folder / "config.json")
                info = _read_json(folder / "info.json")
            except (OSError, json.JSONDecodeError):
                continue  # a run being written right now: its files are incomplete
            yield RunRecord(
                run_id=folder.name, source=self.name, status=str(run.get("status", "")),
                config=config, info=info, result=run.get("result"),
                start_time=_timestamp(run.get("start_time")),
                artifacts=list(run.get("artifacts") or []), handle=folder)

    def metrics(self, record: RunRecord) -> dict[str, dict[str, list]]:
        """Sacred scalars of a run: name -> {'steps': [...], 'values': [...]}."""
        return _read_json(Path(record.handle) / "metrics.json")

    def artifact(self, record: RunRecord, name: str, cache_dir: Path | None = None) -> Path:
        """The artifact file in the run folder (no copy needed)."""
        return Path(record.handle) / name


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _redact(url: str) -> str:
    """The URL without a password, so that reports never print one."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


class MongoStore:
    """A Sacred MongoObserver database: ``runs``, ``metrics`` and GridFS artifacts."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        import pymongo
        from pymongo import uri_parser
        from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

        try:
            parsed = uri_parser.parse_uri(url)
            database = parsed.get("database") or DEFAULT_DB
            self.client = pymongo.MongoClient(url, serverSelectionTimeoutMS=int(timeout_s * 1e3),
                                              connectTimeoutMS=int(timeout_s * 1e3))
            self.client.admin.command("ping")
        except (InvalidURI, ConfigurationError, ValueError) as e:
            raise StoreError(f"bad MongoDB URL {_redact(url)}: {e}") from None
        except PyMongoError as e:
            raise StoreError(f"cannot reach MongoDB at {_redact(url)} "
                             f"(within {timeout_s:g} s): {type(e).__name__}") from None
        self.db = self.client[database]
        # a canonical name without credentials or options, for the `source` column
        hosts = ",".join(f"{host}:{port}" for host, port in parsed["nodelist"])
        self.name = f"mongodb://{hosts}/{database}"

    def runs(self) -> Iterator[RunRecord]:
        projection = {"captured_out": 0, "experiment": 0, "host": 0, "meta": 0, "resources": 0}
        for doc in self.db["runs"].find({}, projection).sort("_id", 1):
            artifacts = {a["name"]: a["file_id"] for a in doc.get("artifacts") or []}
            yield RunRecord(
                run_id=str(doc["_id"]), source=self.name, status=str(doc.get("status", "")),
                config=dict(doc.get("config") or {}), info=dict(doc.get("info") or {}),
                result=doc.get("result"), start_time=_timestamp(doc.get("start_time")),
                artifacts=list(artifacts), handle=(doc["_id"], artifacts))

    def metrics(self, record: RunRecord) -> dict[str, dict[str, list]]:
        out: dict[str, dict[str, list]] = {}
        for doc in self.db["metrics"].find({"run_id": record.handle[0]}):
            out[doc["name"]] = {"steps": list(doc.get("steps") or []),
                                "values": list(doc.get("values") or [])}
        return out

    def artifact(self, record: RunRecord, name: str, cache_dir: Path | None = None) -> Path:
        """The GridFS artifact copied to ``cache_dir`` (reused when its size still matches)."""
        import gridfs

        file_id = record.handle[1][name]
        key = hashlib.sha256(self.name.encode()).hexdigest()[:12]
        root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "esrgan-analysis"
        path = root / key / record.run_id / name
        grid_out = gridfs.GridFS(self.db).get(file_id)
        if path.is_file() and path.stat().st_size == grid_out.length:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(grid_out.read())
        tmp.replace(path)
        return path


Store = FileStore | MongoStore
Source = str | Path | FileStore | MongoStore


def open_store(source: Source) -> Store:
    """A store from a folder path or a ``mongodb://`` URL (database default 'esrgan')."""
    if isinstance(source, FileStore | MongoStore):
        return source
    text = str(source)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        return MongoStore(text)
    return FileStore(text)


def _stores(sources: Source | Sequence[Source]) -> list[Store]:
    if isinstance(sources, str | Path | FileStore | MongoStore):
        return [open_store(sources)]
    return [open_store(s) for s in sources]


# ------------------------------------------------------------------------------------------
# selection


def select_runs(sources: Source | Sequence[Source], *, preset: str | None = None,
                statuses: Iterable[str] | None = ("COMPLETED",),
                kinds: Iterable[str] | None = ("cell",), dedupe: bool = True
                ) -> list[tuple[Store, RunRecord]]:
    """The runs every loader reads, oldest first.

    ``statuses``/``kinds`` None: any. ``dedupe``: one run per cell (the newest; among equal
    start times the first store given wins, so a run seen by both stores counts once).
    """
    wanted_status = None if statuses is None else set(statuses)
    wanted_kind = None if kinds is None else set(kinds)
    chosen: dict[str, tuple[int, Store, RunRecord]] = {}
    plain: list[tuple[int, Store, RunRecord]] = []
    for rank, store in enumerate(_stores(sources)):
        for record in store.runs():
            if wanted_status is not None and record.status not in wanted_status:
                continue
            if wanted_kind is not None and record.kind not in wanted_kind:
                continue
            if preset is not None and record.preset != preset:
                continue
            if not dedupe:
                plain.append((rank, store, record))
                continue
            old = chosen.get(record.identity)
            if old is None or _newer(record, old[2]):
                chosen[record.identity] = (rank, store, record)
    picked = plain if not dedupe else list(chosen.values())
    picked.sort(key=lambda t: (t[2].start_time or pd.Timestamp.min, t[0], _id_key(t[2].run_id)))
    return [(store, record) for _, store, record in picked]


def _newer(a: RunRecord, b: RunRecord) -> bool:
    ta, tb = a.start_time or pd.Timestamp.min, b.start_time or pd.Timestamp.min
    return ta > tb  # equal: keep the one met first


def _id_key(run_id: str) -> tuple[int, int | str]:
    return (0, int(run_id)) if run_id.isdigit() else (1, run_id)


def switches_of(record: RunRecord) -> dict[str, Any]:
    """The six switches from the run's config (missing ones as None)."""
    out: dict[str, Any] = {}
    for name in SWITCHES:
        value = record.config.get(name)
        if value is None:
            out[name] = None
        elif name == "beta":
            out[name] = float(value)
        else:
            out[name] = bool(value)
    return out


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
    return {
        "run_id": record.run_id, "source": record.source, "status": record.status,
        "kind": record.kind, "preset": record.preset, "seed": cfg.get("seed"),
        "stage1_seed": cfg.get("stage1_seed", cfg.get("seed")), **switches,
        "variant": variant_label(switches), "wall_s": _number(seconds.get("total")),
        "git": meta.get("git"), "vgg_weights": cfg.get("vgg_weights"),
        "percep_normalize": cfg.get("percep_normalize"), "steps1": cfg.get("steps1"),
        "steps2": cfg.get("steps2"), "start_time": record.start_time,
        "cell_key": meta.get("cell_key"), "network": _network(meta), "vgg": meta.get("vgg"),
        "train_data": meta.get("train_data"), "val_data": meta.get("val_data"),
        "substitutes": tuple(meta.get("substitutes") or ()),
    }


def _metric_rows(result: Any) -> Iterator[tuple[str, str, str, float]]:
    """(model, set, metric, value) of a cell result {model: {set: {metric: number}}}.

    PI is added where Ma and NIQE are there and PI is not (PI = 0.5 * ((10 - Ma) + NIQE)).
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
                numbers["pi"] = 0.5 * ((10.0 - numbers["ma"]) + numbers["niqe"])
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
    from the paper. A run without a result (e.g. FAILED, when asked for) gives one row with
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
                                 "value": number})
    return _frame(rows, CURVE_COLUMNS)


def load_interpolation(source: Source | Sequence[Source], *, preset: str | None = None,
                       statuses: Iterable[str] | None = ("COMPLETED",), dedupe: bool = True
                       ) -> pd.DataFrame:
    """Interpolation sweeps (runs of kind 'interpolation'), one row per point and metric.

    ``method`` is 'network' or 'image' (one row per alpha) or 'back_projection' (alpha
    missing, ``iterations`` set). Columns: :data:`INTERP_COLUMNS`.
    """
    rows = []
    for _, record in select_runs(source, preset=preset, statuses=statuses,
                                 kinds=("interpolation",), dedupe=dedupe):
        base = _run_columns(record)
        common = {"run_id": record.run_id, "seed": base["seed"], "variant": base["variant"],
                  "preset": base["preset"], "start_time": base["start_time"]}
        result = record.result if isinstance(record.result, Mapping) else {}
        for method in ("network", "image"):
            for point in result.get(method) or []:
                if not isinstance(point, Mapping) or _number(point.get("alpha")) is None:
                    continue
                for metric, value in _point_metrics(point):
                    rows.append({**common, "method": method, "alpha": float(point["alpha"]),
                                 "iterations": math.nan, "metric": metric, "value": value})
        back = result.get("back_projection")
        if isinstance(back, Mapping):
            iterations = _number(back.get("iterations"))
            for metric, value in _point_metrics(back):
                rows.append({**common, "method": "back_projection", "alpha": math.nan,
                             "iterations": math.nan if iterations is None else iterations,
                             "metric": metric, "value": value})
    return _frame(rows, INTERP_COLUMNS)


def _point_metrics(point: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    numbers = {k: _number(v) for k, v in point.items() if k not in ("alpha", "iterations")}
    numbers = {k: v for k, v in numbers.items() if v is not None}
    if "pi" not in numbers and "ma" in numbers and "niqe" in numbers:
        numbers["pi"] = 0.5 * ((10.0 - numbers["ma"]) + numbers["niqe"])
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

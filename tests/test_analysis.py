"""analysis/: the run-store loaders, labels, tables, figures and the report.

The runs here are synthetic but stored exactly as Sacred stores them: a FileStorageObserver
folder (config.json, run.json, info.json, metrics.json, artifact files) and, with the same
content, a MongoObserver database on a real nx-27017 server (``runs`` documents, ``metrics``
documents referenced from ``info.metrics``, artifacts in GridFS). Nothing trains.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import load, report, tables
from analysis.labels import (
    ESRGAN,
    ONE_FLIP,
    PAPER_PATH,
    SRGAN,
    compact_label,
    higher_is_better,
    metric_label,
    variant_label,
    variant_order,
)
from esrgan.paper.switches import SRGAN as FLIPPED
from esrgan.paper.switches import SWITCHES

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)  # millisecond precision, as BSON keeps it
IMAGES = ("coffee", "chelsea")
# Synthetic effects of each variant relative to ESRGAN: (GAN NIQE, GAN PSNR, PSNR-model PSNR).
EFFECTS = {
    "ESRGAN": (0.0, 0.0, 0.0),
    "ESRGAN w/o RRDB": (0.6, -0.3, -0.8),  # agrees with the paper on both claims
    "ESRGAN +BN": (0.05, 0.0, -0.02),  # inconclusive (+-0.3 by seed, below)
    "ESRGAN standard GAN": (-0.7, 0.5, 0.0),  # opposite to the paper (NIQE lower without)
    "SRGAN": (1.5, -1.0, -1.5),
    "SRGAN -BN": (0.9, -0.5, -1.0),  # a step of the paper's path: BN removal helps
}


def switches_for(label: str) -> dict[str, Any]:
    """Switches of the synthetic variants."""
    if label == "ESRGAN":
        return dict(ESRGAN)
    path = dict(PAPER_PATH)
    if label in path:
        return dict(path[label])
    switch = next(s for s, name in ONE_FLIP.items() if name == label)
    return {**ESRGAN, switch: FLIPPED[switch]}


def noise(*key: object) -> float:
    """A deterministic pseudo-random number in [-0.01, 0.01) for a key."""
    rng = np.random.default_rng(zlib.crc32(repr(key).encode()))
    return float(rng.uniform(-0.01, 0.01))


def make_run(run_id: int, label: str, seed: int, *, preset: str = "cpu",
             status: str = "COMPLETED", start: dt.datetime | None = None,
             shift: float = 0.0) -> dict[str, Any]:
    """One synthetic cell run: config, info, result, scalars and crop images."""
    switches = switches_for(label)
    d_niqe, d_gan, d_psnr = EFFECTS[label]
    if label == "ESRGAN +BN":  # an effect whose sign depends on the seed
        d_niqe += 0.3 if seed % 2 else -0.3
    generator = tuple(switches[s] for s in ("rrdb", "bn", "beta", "small_init"))
    psnr_model = 27.0 + d_psnr + noise("g", generator, seed)  # shared by ragan/vgg flips
    gan_psnr = 25.0 + d_gan + noise("p", label, seed) + shift
    gan_niqe = 6.0 + d_niqe + noise("n", label, seed) + shift

    def rmse(p: float) -> float:
        return 255.0 * 10 ** (-p / 20)

    result = None
    if status == "COMPLETED":
        result = {
            "bicubic": {"val": {"psnr": 26.0, "ssim": 0.70, "niqe": 7.5, "rmse": rmse(26.0)}},
            "psnr_model": {"val": {"psnr": psnr_model, "ssim": 0.75, "niqe": 7.0,
                                   "rmse": rmse(psnr_model)}},
            "gan_model": {"val": {"psnr": gan_psnr, "ssim": 0.68, "niqe": gan_niqe,
                                  "rmse": rmse(gan_psnr)}},
            "seconds": {"stage1": 10.0, "stage2": 20.0, "total": 31.5},
            "steps": {"stage1": 2000, "stage2": 300},
        }
    config = {**switches, "preset": preset, "seed": seed, "stage1_seed": seed, "nf": 32,
              "nb": 4, "gc": 16, "steps1": 2000, "steps2": 300, "vgg_weights": "random",
              "percep_normalize": True, "train_hr": None, "val_hr": None}
    key = f"{zlib.crc32(f'{label}|{seed}|{preset}'.encode()):08x}"
    info = {"esrgan": {
        "preset": preset, "git": "abc1234", "device": "cpu", "cell_key": key,
        "stage1_key": "s1", "gan_loss": "ragan" if switches["ragan"] else "standard",
        "generator_arch": {"trunk": "rrdb" if switches["rrdb"] else "resblock",
                           "bn": switches["bn"], "beta": switches["beta"], "nf": 32,
                           "nb": 4 if switches["rrdb"] else 8, "gc": 16, "scale": 4},
        "train_data": "embedded (scikit-image photos)",
        "val_data": "embedded (scikit-image photos)",
        "vgg": "vgg19 conv5_4 before-activation, random weights (seed 0)",
        "substitutes": ["embedded scikit-image photos instead of DF2K",
                        "random-weight VGG19 (seed 0) instead of ImageNet VGG19: not here"],
        "stage1_reused": False, "stage2_resumed_from": 0}}
    scalars = {
        "stage1_l_pix": {"steps": [10, 20, 30], "values": [0.3, 0.2, 0.1 + 0.01 * seed]},
        "stage1_lr": {"steps": [10, 20, 30], "values": [2e-4, 2e-4, 1e-4]},
        "stage2_l_g": {"steps": [10, 20], "values": [0.5, 0.4 + noise("c", label, seed)]},
        "stage2_val_niqe": {"steps": [300], "values": [gan_niqe]},
    }
    artifacts = {}
    for image in IMAGES:
        for tag in ("hr", "psnr", "gan"):
            color = zlib.crc32(f"{label}{seed}{image}{tag}".encode())
            array = np.full((8, 8, 3), [color & 255, (color >> 8) & 255, (color >> 16) & 255],
                            dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="PNG")
            artifacts[f"crop_{image}_{tag}.png"] = buf.getvalue()
    start = start or T0 + dt.timedelta(minutes=run_id)
    return {"_id": run_id, "config": config, "info": info, "result": result,
            "status": status, "start_time": start, "stop_time": start + dt.timedelta(seconds=31),
            "metrics": scalars, "artifacts": artifacts}


def make_interpolation_run(run_id: int, seed: int, preset: str = "cpu") -> dict[str, Any]:
    """A synthetic run of kind 'interpolation' (network and image sweeps, back projection)."""
    run = make_run(run_id, "ESRGAN", seed, preset=preset)
    run["info"]["esrgan"]["kind"] = "interpolation"
    run["info"]["esrgan"]["cell_key"] = f"interp{seed}"
    alphas = [round(0.1 * k, 1) for k in range(11)]

    def point(alpha: float, bend: float) -> dict[str, float]:
        return {"alpha": alpha, "psnr": 27 - 2 * alpha, "ssim": 0.75 - 0.05 * alpha,
                "niqe": 7.0 - 1.2 * alpha + bend * alpha * (1 - alpha) + 0.01 * seed,
                "rmse": 11.0 + 4 * alpha}

    run["result"] = {"network": [point(a, -0.8) for a in alphas],
                     "image": [point(a, 0.6) for a in alphas],
                     "back_projection": {"iterations": 3, "psnr": 25.5, "ssim": 0.7,
                                         "niqe": 6.1, "rmse": 13.5}}
    run["metrics"] = {}
    run["artifacts"] = {}
    return run


def write_file_run(root: Path, run: dict[str, Any]) -> None:
    """The run as Sacred's FileStorageObserver writes it."""
    folder = root / str(run["_id"])
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(run["config"], indent=2))
    (folder / "info.json").write_text(json.dumps(run["info"], indent=2))
    (folder / "metrics.json").write_text(json.dumps({
        name: {**series, "timestamps": [run["start_time"].isoformat()] * len(series["steps"])}
        for name, series in run["metrics"].items()}))
    for name, data in run["artifacts"].items():
        (folder / name).write_bytes(data)
    (folder / "run.json").write_text(json.dumps({
        "status": run["status"], "start_time": run["start_time"].isoformat(),
        "stop_time": run["stop_time"].isoformat(), "heartbeat": run["stop_time"].isoformat(),
        "result": run["result"], "artifacts": list(run["artifacts"]), "command": "main",
        "experiment": {"name": "esrgan"}}, indent=2, sort_keys=True))


def insert_mongo_run(db: Any, run: dict[str, Any]) -> None:
    """The run as Sacred's MongoObserver stores it (runs, metrics, GridFS artifacts)."""
    import gridfs

    fs = gridfs.GridFS(db)
    info = json.loads(json.dumps(run["info"]))
    info["metrics"] = []
    for name, series in run["metrics"].items():
        doc_id = db["metrics"].insert_one({
            "run_id": run["_id"], "name": name, "steps": series["steps"],
            "values": series["values"],
            "timestamps": [run["start_time"]] * len(series["steps"])}).inserted_id
        info["metrics"].append({"id": str(doc_id), "name": name})
    artifacts = [{"name": name, "file_id": fs.put(data, filename=f"artifact://runs/"
                                                  f"{run['_id']}/{name}")}
                 for name, data in run["artifacts"].items()]
    db["runs"].insert_one({
        "_id": run["_id"], "experiment": {"name": "esrgan"}, "format": "MongoObserver-0.7.0",
        "command": "main", "host": {}, "start_time": run["start_time"],
        "config": run["config"], "meta": {}, "status": run["status"], "resources": [],
        "artifacts": artifacts, "captured_out": "", "info": info,
        "heartbeat": run["stop_time"], "result": run["result"],
        "stop_time": run["stop_time"]})


def build_runs(seeds: tuple[int, ...], extras: bool = True) -> list[dict[str, Any]]:
    """Cells of five variants x seeds, an interpolation run per seed, and (with ``extras``) a
    failed run, an older duplicate of a cell and a run of another preset."""
    runs, next_id = [], 1
    for seed in seeds:
        for label in EFFECTS:
            runs.append(make_run(next_id, label, seed))
            next_id += 1
        runs.append(make_interpolation_run(next_id, seed))
        next_id += 1
    if extras:
        # an older run of the ESRGAN seed-0 cell with other numbers: the newer one must win
        runs.append(make_run(next_id, "ESRGAN", seeds[0], start=T0 - dt.timedelta(days=1),
                             shift=5.0))
        runs.append(make_run(next_id + 1, "ESRGAN", 9, status="FAILED"))
        runs.append(make_run(next_id + 2, "ESRGAN", 0, preset="tiny"))
    return runs


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, mongo_server: Any) -> dict[str, Any]:
    """The same synthetic runs (2 seeds) in a file store and in MongoDB."""
    import pymongo

    root = tmp_path_factory.mktemp("store") / "runs"
    root.mkdir()
    (root / "_sources").mkdir()  # as Sacred leaves it: not a run
    runs = build_runs((0, 1))
    client = pymongo.MongoClient(mongo_server.url)
    client.drop_database("analysis_test")
    db = client["analysis_test"]
    for run in runs:
        write_file_run(root, run)
        insert_mongo_run(db, run)
    client.close()
    return {"file": str(root), "mongo": f"{mongo_server.url}/analysis_test", "runs": runs}


# ------------------------------------------------------------------------------------------
# loaders


def test_file_store_and_mongo_give_the_same_frame(stores: dict[str, Any]) -> None:
    a = load.load_runs(stores["file"])
    b = load.load_runs(stores["mongo"])
    assert list(a.columns) == load.RUN_COLUMNS
    assert set(a["source"]) == {stores["file"]}
    assert set(b["source"]) == {stores["mongo"]}
    pd.testing.assert_frame_equal(a.drop(columns="source"), b.drop(columns="source"))

    # 2 seeds x 6 variants + the tiny-preset run; the older duplicate and FAILED run are gone
    per_run = a.drop_duplicates("run_id")
    assert len(per_run) == 13
    assert set(per_run["status"]) == {"COMPLETED"}
    assert set(per_run["kind"]) == {"cell"}
    esrgan0 = a[(a["variant"] == "ESRGAN") & (a["seed"] == 0) & (a["preset"] == "cpu")
                & (a["model"] == "gan_model") & (a["metric"] == "niqe")]
    assert len(esrgan0) == 1 and esrgan0["value"].iloc[0] < 7  # not the shifted old run
    row = a.iloc[0]
    assert row["wall_s"] == 31.5 and row["git"] == "abc1234" and row["steps1"] == 2000
    assert isinstance(row["substitutes"], tuple) and len(row["substitutes"]) == 2
    assert set(a["model"]) == {"bicubic", "psnr_model", "gan_model"}
    assert set(a["metric"]) == {"psnr", "ssim", "niqe", "rmse"}


def test_load_filters(stores: dict[str, Any]) -> None:
    cpu = load.load_runs(stores["file"], preset="cpu")
    assert set(cpu["preset"]) == {"cpu"} and cpu["run_id"].nunique() == 12
    every = load.load_runs(stores["mongo"], statuses=None, dedupe=False)
    assert every["run_id"].nunique() == 15  # + the old duplicate and the failed run
    failed = every[every["status"] == "FAILED"]
    assert len(failed) == 1 and failed["metric"].isna().all()
    both = load.load_runs([stores["file"], stores["mongo"]], preset="cpu")
    assert both["run_id"].nunique() == 12  # a run seen by both stores counts once
    assert set(both["source"]) == {stores["file"]}


def test_curves_interpolation_and_crops(stores: dict[str, Any], tmp_path: Path) -> None:
    for source in (stores["file"], stores["mongo"]):
        curves = load.load_curves(source, preset="cpu")
        assert list(curves.columns) == load.CURVE_COLUMNS
        assert set(curves["name"]) == {"stage1_l_pix", "stage1_lr", "stage2_l_g",
                                       "stage2_val_niqe"}
        assert len(curves) == 12 * 9
        interp = load.load_interpolation(source, preset="cpu")
        assert set(interp["method"]) == {"network", "image", "back_projection"}
        assert interp["run_id"].nunique() == 2
        net = interp[(interp["method"] == "network") & (interp["metric"] == "niqe")]
        assert sorted(net["alpha"].unique()) == pytest.approx([0.1 * k for k in range(11)])
        back = interp[interp["method"] == "back_projection"]
        assert back["alpha"].isna().all() and set(back["iterations"]) == {3.0}
    crops_file = load.crop_paths(stores["file"], preset="cpu")
    crops_mongo = load.crop_paths(stores["mongo"], preset="cpu", cache_dir=tmp_path)
    assert len(crops_file) == len(crops_mongo) == 12 * 2 * 3
    assert all(Path(p).is_relative_to(tmp_path) for p in crops_mongo["path"])
    for a, b in zip(crops_file.sort_values(["run_id", "image", "tag"])["path"],
                    crops_mongo.sort_values(["run_id", "image", "tag"])["path"], strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(load.StoreError, match="not found"):
        load.load_runs(tmp_path / "nope")
    empty = load.load_runs(tmp_path)
    assert empty.empty and list(empty.columns) == load.RUN_COLUMNS


# ------------------------------------------------------------------------------------------
# labels and tables


def test_variant_labels() -> None:
    assert variant_label(ESRGAN) == "ESRGAN"
    assert variant_label(SRGAN) == "SRGAN"
    assert variant_label({**ESRGAN, "beta": 1}) == "ESRGAN beta=1"
    assert variant_label({**ESRGAN, "ragan": False}) == "ESRGAN standard GAN"
    assert variant_label({**ESRGAN, "vgg_before_act": False}) == "ESRGAN after-act VGG"
    assert [variant_label(s) for _, s in PAPER_PATH] == [
        "SRGAN", "SRGAN -BN", "SRGAN -BN +before-act", "SRGAN -BN +before-act +RaGAN",
        "ESRGAN"]
    for switch, label in ONE_FLIP.items():
        assert variant_label({**ESRGAN, switch: SWITCHES[switch].baseline}) == label
    odd = {**ESRGAN, "bn": True, "ragan": False}
    assert variant_label(odd) == compact_label(odd) == "RRDB/BN/b=0.2/init0.1/GAN/before"
    assert variant_label({**ESRGAN, "beta": 0.5}).endswith("b=0.5/init0.1/RaGAN/before")
    assert variant_order(["zzz", "ESRGAN +BN", "ESRGAN", "SRGAN"]) == [
        "SRGAN", "ESRGAN", "ESRGAN +BN", "zzz"]
    assert metric_label("psnr") == "PSNR-Y (dB)"
    assert higher_is_better("psnr") and not higher_is_better("niqe")
    assert not higher_is_better("rmse") and not higher_is_better("pi")


def test_summary(stores: dict[str, Any]) -> None:
    runs = load.load_runs(stores["file"], preset="cpu")
    summary = tables.variant_summary(runs)
    gan = summary[(summary["model"] == "gan_model") & (summary["metric"] == "niqe")]
    assert list(gan["variant"]) == ["SRGAN", "SRGAN -BN", "ESRGAN", "ESRGAN w/o RRDB",
                                    "ESRGAN +BN", "ESRGAN standard GAN"]
    assert set(gan["n"]) == {2}
    values = runs[(runs["model"] == "gan_model") & (runs["metric"] == "niqe")
                  & (runs["variant"] == "ESRGAN")]["value"]
    s = tables.summarize(values)
    # t(0.975, 1) = 12.706: the half-width of a 2-seed interval
    assert s.half == pytest.approx(12.706 * values.std(ddof=1) / np.sqrt(2), rel=1e-3)
    row = gan[gan["variant"] == "ESRGAN"].iloc[0]
    assert row["mean"] == pytest.approx(values.mean()) and row["ci95"] == pytest.approx(s.half)


# ------------------------------------------------------------------------------------------
# the report


FIGURES = ("pd_plane_rmse", "pd_plane_psnr", "interpolation", "effects_val",
           "training_curves", "crops")


def _table_rows(md: str, heading: str) -> list[str]:
    """The data rows of the Markdown table under a heading."""
    part = md.split(heading, 1)[1].split("\n\n", 2)[1]
    return [line for line in part.splitlines() if line.startswith("|")][2:]


def test_report_two_seeds(stores: dict[str, Any], tmp_path: Path) -> None:
    code = report.main(["--store", stores["file"], "--name", "synthetic", "--preset", "cpu",
                        "--out", str(tmp_path)])
    assert code == 0
    folder = tmp_path / "synthetic"
    md = (folder / "index.md").read_text()
    for heading in ("GAN model, set 'val'", "PSNR-oriented model, set 'val'"):
        rows = _table_rows(md, heading)
        assert [r.split("|")[1].strip() for r in rows] == [
            "SRGAN", "SRGAN -BN", "ESRGAN", "ESRGAN w/o RRDB", "ESRGAN +BN",
            "ESRGAN standard GAN"]
        assert all("±" in r for r in rows)
    for name in FIGURES:
        for ext in ("png", "svg"):
            path = folder / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert f"figures/{name}.png" in md
    assert "Not the paper's setting" in md and "random-weight VGG19" in md
    assert "preset" in md.lower() and "| **Seeds** | 0, 1 (2) |" in md
    assert "| **Runs** | 12 completed cell runs (6 variants) + 2 interpolation run(s) |" in md
    assert "abc1234" in md and "6 min 18 s" in md  # 12 x 31.5 s
    found = md.split("## What was found", 1)[1].split("\n## ", 1)[0]
    against = found.split("### Against the paper", 1)[1].split("###", 1)[0]
    assert against.startswith("\n\n- C4 (RaGAN lowers NIQE): ESRGAN - ESRGAN standard GAN")
    assert "(opposite)" in against and "Findings (switch by switch)" not in md
    assert "### How the seeds were chosen" in md and "looked at the data once" in md
    for name in ("runs.csv", "variant_metrics.csv", "claims.csv", "interpolation.csv",
                 "variant_metrics.md"):
        assert (folder / "tables" / name).stat().st_size > 0
    page = (folder / "index.html").read_text()
    assert "<table>" in page and '<img alt="crops" src="figures/crops.png"' in page


def test_report_from_mongo_one_seed(mongo_server: Any, tmp_path: Path) -> None:
    import pymongo

    client = pymongo.MongoClient(mongo_server.url)
    client.drop_database("analysis_one_seed")
    db = client["analysis_one_seed"]
    for run in build_runs((3,), extras=False):
        if run["info"]["esrgan"].get("kind") != "interpolation":  # and no interpolation run
            insert_mongo_run(db, run)
    client.close()
    url = f"{mongo_server.url}/analysis_one_seed"
    assert report.main(["--mongo", url, "--name", "one", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "one" / "index.md").read_text()
    rows = _table_rows(md, "GAN model, set 'val'")
    assert len(rows) == 6 and not any("±" in r for r in rows)
    assert "(n=1, no interval) | inconclusive (one seed: no interval) |" in md
    assert "val: no deciding effect has two seeds or more, so none is decided." in md
    assert "No interpolation run in the store." in md
    for name in FIGURES:
        if name != "interpolation":  # one seed: the evidence figure shows the single dots
            assert (tmp_path / "one" / "figures" / f"{name}.svg").stat().st_size > 1000


def test_report_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs"
    store.mkdir()
    code = report.main(["--store", str(store), "--name", "x", "--preset", "cpu",
                        "--out", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == f"error: no completed runs for preset 'cpu' in {store}"
    assert not (tmp_path / "reports" / "x").exists()
    assert report.main(["--store", str(tmp_path / "missing"), "--name", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: run store folder not found")
    assert report.main(["--name", "x"]) == 2
    assert "give a run store" in capsys.readouterr().err


def test_report_needs_a_preset_when_the_store_mixes_them(
        stores: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--store", stores["file"], "--name", "x", "--out", str(tmp_path)]) == 2
    assert "several presets (cpu, tiny)" in capsys.readouterr().err


def test_report_without_paired_seeds(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    for run in (make_run(1, "ESRGAN", 0), make_run(2, "ESRGAN +BN", 1)):
        write_file_run(store, run)
    assert report.main(["--store", str(store), "--name", "r", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "r" / "index.md").read_text()
    assert "val: no deciding effect has two seeds or more, so none is decided." in md
    assert "C3 (The RRDB trunk raises PSNR): Not testable at this scale on val" in md
    assert len(_table_rows(md, "GAN model, set 'val'")) == 2
    assert (tmp_path / "r" / "figures" / "pd_plane_rmse.png").stat().st_size > 1000


def test_report_page_is_rendered_by_python_markdown() -> None:
    page = report.to_html("# T\n\n> **warn** *it*\n\n- a [b](c.csv)\n\n| x | y |\n"
                          "| --- | --- |\n| 1 \\| 2 | 3 |\n\n![f](f.png)", "t")
    assert "<h1>T</h1>" in page and "<strong>warn</strong> <em>it</em>" in page
    assert '<li>a <a href="c.csv">b</a></li>' in page
    assert "<td>1 | 2</td>" in page and '<img alt="f" src="f.png">' in page
    assert "<title>t</title>" in page and "max-width:100%" in page


def test_pi_from_ma_and_niqe(tmp_path: Path) -> None:
    run = make_run(1, "ESRGAN", 0)
    run["result"]["gan_model"]["val"]["ma"] = 8.0  # PI = 0.5 * ((10 - Ma) + NIQE)
    write_file_run(tmp_path, run)
    runs = load.load_runs(tmp_path)
    gan = runs[runs["model"] == "gan_model"].set_index("metric")["value"]
    assert gan["pi"] == pytest.approx(0.5 * (2.0 + gan["niqe"]))
    assert list(gan.index) == ["psnr", "ssim", "rmse", "niqe", "ma", "pi"]


def test_departures_from_the_record_the_config_or_an_old_runs_sentences(tmp_path: Path) -> None:
    from esrgan.paper.departures import Departure, departures
    from experiments import presets

    old = make_run(1, "ESRGAN", 0)  # sentences only, and a config older than today's keys
    # one setting with the others (what it has of today's keys), or the report refuses to pool
    old["config"].update(vgg_weights="imagenet", percep_normalize=False, steps2=250)
    full = presets.resolve("cpu", {"ema_decay": 0.999})  # no record: derived from the config
    derived = make_run(2, "ESRGAN", 1)
    derived["config"] = {**full, "seed": 1, "stage1_seed": 1}
    recorded = make_run(3, "ESRGAN", 2)  # the record wins over what the config would give
    recorded["config"] = {**full, "seed": 2, "stage1_seed": 2}
    mine = Departure("lr1", "stage-1 learning rate 1", "0.0002", "", "lr 1", "lr 1 sentence")
    recorded["info"]["esrgan"]["departures"] = [mine.record()]
    for run in (old, derived, recorded):
        write_file_run(tmp_path, run)
    by_seed = load.load_runs(tmp_path).drop_duplicates("run_id").set_index("seed")
    sentences = old["info"]["esrgan"]["substitutes"]
    assert [d.text for d in by_seed.loc[0, "substitutes"]] == sentences
    assert [d.short for d in by_seed.loc[0, "substitutes"]] == [
        "embedded scikit-image photos", "random-weight VGG19"]
    assert list(by_seed.loc[1, "substitutes"]) == departures(derived["config"])
    assert by_seed.loc[2, "substitutes"] == (mine,)
    assert report.main(["--store", str(tmp_path), "--name", "r", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "r" / "index.md").read_text()
    banner = next(x for x in md.splitlines() if x.startswith("> **Not the paper's setting.**"))
    assert ("reproduction: embedded scikit-image photos; random-weight VGG19; embedded photos; "
            "an exponential moving average of G; stage-1 learning rate 0.0005; smaller scale; "
            "lr 1. Its numbers") in banner
    listed = md.split("## Departures from the paper", 1)[1].split("##", 1)[0]
    assert f"- {sentences[0]} (ESRGAN seed 0)" in listed
    assert "- lr 1 sentence (ESRGAN seed 2)" in listed
    assert f"- {departures(full)[-1].text} (ESRGAN seed 1)" in listed


def test_report_says_which_metrics_of_the_panel_were_left_out_and_why(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    for run_id, seed in ((1, 0), (2, 1)):
        run = make_run(run_id, "ESRGAN", seed)
        run["config"]["val_metrics"] = ["psnr", "ssim", "niqe", "lpips", "dists"]
        run["info"]["esrgan"]["metrics_left_out"] = {
            "lpips": "LPIPS needs the weight file LPIPS_v0.1_alex-df73285e.pth (from https://h),"
                     " not found in: /x; put it there, or run `make weights` on a connected "
                     "machine"}
        write_file_run(store, run)
    assert report.main(["--store", str(store), "--name", "r", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "r" / "index.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Scored: "))
    assert "PSNR" in line.split("Left out:")[0]
    left = line.split("Left out: ", 1)[1]
    assert "LPIPS needs the weight file LPIPS_v0.1_alex-df73285e.pth (`make weights` gets it)" \
        in left
    assert "PI-Y: not asked for (add it to `val_metrics`)" in left

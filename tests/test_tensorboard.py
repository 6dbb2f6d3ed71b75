"""TensorBoard event files of a run, read back with TensorBoard's own reader: the folder per
run, the tags, images, and a resumed stage that shows each step once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import presets
from experiments.tblog import TensorBoard, run_folder, tag_of


def read_events(folder: Path) -> EventAccumulator:
    """Every event of one TensorBoard run folder (no sampling), as TensorBoard reads it."""
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of one TensorBoard run folder."""
    acc = read_events(folder)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def assert_mirrors_the_store(run_dir: Path, tb_run: Path) -> None:
    """Every scalar of a file-store run is in the TensorBoard folder, at the same steps."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics
    for name, series in metrics.items():
        group, tag = tag_of(name)
        got = scalars(tb_run / group)[tag]
        assert [s for s, _ in got] == series["steps"], name
        np.testing.assert_allclose([v for _, v in got], series["values"], rtol=1e-6)


def test_run_folder_groups_seeds_and_separates_other_settings(tmp_path: Path) -> None:
    cfg = presets.resolve("tiny", {"tb_dir": str(tmp_path)})
    a = run_folder(cfg)
    assert a is not None and a.name == "seed0" and a.parent.name.startswith("ESRGAN.")
    seed1 = run_folder({**cfg, "seed": 1, "stage1_seed": 1})
    assert seed1 == a.parent / "seed1"
    flipped = run_folder({**cfg, "rrdb": False})
    assert flipped is not None and flipped.parent.name.startswith("ESRGAN_w-o_RRDB.")
    other_lr = run_folder({**cfg, "lr2": 1e-5})  # same switches, another setting
    assert other_lr is not None and other_lr.parent != a.parent
    # where and how often it is shown is no part of the name
    assert run_folder({**cfg, "log_every": 5, "progress": False}) == a
    assert run_folder({**cfg, "seed": 2}).name == "seed2-stage1seed0"
    assert run_folder({**cfg, "tb_dir": ""}) is None
    assert presets.resolve("tiny", {"work_dir": "/w"})["tb_dir"] == "/w/tensorboard"


def test_scalars_and_images_read_back(tmp_path: Path) -> None:
    tb = TensorBoard(tmp_path)
    for step, value in ((10, 0.5), (20, 0.25)):  # exact in float32, as TensorBoard stores
        tb.scalar("stage1_l_pix", value, step)
    tb.scalar("stage2_val_psnr", 25.5, 5)
    crop = np.linspace(0, 1, 8 * 6 * 3, dtype=np.float32).reshape(8, 6, 3)
    tb.image("stage2_sr_coffee", crop, 5)
    tb.close()
    assert scalars(tmp_path / "stage1") == {"stage1/l_pix": [(10, 0.5), (20, 0.25)]}
    acc = read_events(tmp_path / "stage2")
    assert [(e.step, e.value) for e in acc.Scalars("stage2/val_psnr")] == [(5, 25.5)]
    (image,) = acc.Images("stage2/sr_coffee")
    assert (image.step, image.width, image.height) == (5, 6, 8)


def test_a_resumed_stage_shows_each_step_once(tmp_path: Path) -> None:
    killed = TensorBoard(tmp_path)
    for step in range(10, 80, 10):  # logged up to 70, the last checkpoint was at 40
        killed.scalar("stage2_l_g", 100.0 + step, step)
        killed.scalar("stage1_l_pix", 1.0, step)
    killed.close()
    resumed = TensorBoard(tmp_path)
    for step in range(50, 110, 10):
        resumed.scalar("stage2_l_g", float(step), step)
    resumed.close()
    got = scalars(tmp_path / "stage2")["stage2/l_g"]
    assert got == [(s, 100.0 + s) for s in range(10, 50, 10)] + \
        [(s, float(s)) for s in range(50, 110, 10)]
    # the other stage's folder is untouched by the purge
    assert len(scalars(tmp_path / "stage1")["stage1/l_pix"]) == 7

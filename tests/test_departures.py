"""A run's departures from the paper (esrgan.paper.departures): the fields, the sentences, the
short names, and what a run records.

The expected sentences are those the reports printed before departures became data (word for
word), and the short names those the figures' footers derived from them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from esrgan.paper.departures import Departure, departures
from experiments import presets

DATA = ("embedded photos (those shipped with the installed packages) instead of DF2K "
        "(DIV2K 800 + Flickr2K 2650 2K images)")
LR1 = "stage-1 learning rate 0.0005 instead of 0.0002 (a short stage 1)"
PAPER_SIZES = "nf 64, nb 23, gc 32, steps1 1000000, steps2 400000, batch 16, patch 128"
TINY = [
    DATA,
    "random-weight VGG19 (seed 0) instead of ImageNet VGG19: ImageNet weights were not "
    "available",
    "perceptual L1 divided by the mean |feature| of the HR image (not in the paper; keeps "
    "stage 2 stable with a random VGG19)",
    "perceptual features from conv3_4 instead of conv5_4",
    LR1,
    f"smaller scale: nf 16, nb 1, gc 8, steps1 100, steps2 50, batch 4, patch 32 (paper: "
    f"{PAPER_SIZES}); learning-rate milestones scaled",
]
TINY_SHORT = ["embedded photos", "random-weight VGG19",
              "perceptual L1 divided by the mean |feature| of the HR image",
              "perceptual features from conv3_4", "stage-1 learning rate 0.0005", "smaller scale"]
CPU = [
    DATA, LR1,
    f"smaller scale: nf 32, nb 4, gc 16, steps1 2000, steps2 250, batch 4, patch 64 (paper: "
    f"{PAPER_SIZES}); learning-rate milestones scaled",
]
CPU_SHORT = ["embedded photos", "stage-1 learning rate 0.0005", "smaller scale"]


@pytest.mark.parametrize(("preset", "sentences", "shorts"), [
    ("tiny", TINY, TINY_SHORT), ("cpu", CPU, CPU_SHORT), ("paper", [DATA], ["embedded photos"])])
def test_the_presets_departures_word_for_word(preset: str, sentences: list[str],
                                              shorts: list[str]) -> None:
    cfg = presets.resolve(preset)
    found = departures(cfg)
    assert [d.text for d in found] == sentences
    assert [d.short for d in found] == shorts
    assert presets.substitutes(cfg) == sentences  # the presets' sentences are these


@pytest.mark.parametrize(("overrides", "sentence", "short"), [
    ({"ema_decay": 0.999}, "an exponential moving average of G (decay 0.999) is scored and "
     "shipped, as BasicSR's recipe does, instead of the raw weights",
     "an exponential moving average of G"),
    ({"accum": 2}, "stage 2 accumulates 2 micro-batches of 2 per step: D's BatchNorm and "
     "RaGAN's batch means are taken over each micro-batch, not the batch",
     "stage 2 accumulates 2 micro-batches of 2 per step"),
    ({"precision1": "fp16", "precision2": "fp16"}, "fp16 autocast: the generator in stage 1 and "
     "all networks in stage 2 (precision1 fp16, precision2 fp16; the paper trained in fp32; "
     "README 'Performance' gives the measured difference)", "fp16 autocast"),
    ({"nf": 128, "nb": 2}, f"other sizes: nf 128, nb 2, gc 8, steps1 100, steps2 50, batch 4, "
     f"patch 32 (paper: {PAPER_SIZES}); learning-rate milestones scaled", "other sizes"),
    # a stage-1 cell of the deep design: the residual trunk's size, no GAN steps
    ({"rrdb": False, "bn": False, "nb_resblock": 64, "steps2": 0}, "other sizes: nf 16, "
     "nb_resblock 64, steps1 100, batch 4, patch 32 (paper: nf 64, nb_resblock 16, steps1 "
     "1000000, batch 16, patch 128); learning-rate milestones scaled", "other sizes"),
])
def test_each_kind_of_departure(overrides: dict[str, Any], sentence: str, short: str) -> None:
    found = departures(presets.resolve("tiny", overrides))
    (match,) = [d for d in found if d.text == sentence]
    assert match.short == short
    assert [d.text for d in found if d.text not in TINY] == [sentence]


def test_fields_and_the_record() -> None:
    found = departures(presets.resolve("cpu", {"vgg_weights": "random", "accum": 2,
                                               "precision2": "bf16-losses"}))
    by_key = {d.key: d for d in found}
    assert list(by_key) == ["train_hr", "vgg_weights", "percep_normalize", "lr1", "sizes",
                            "precision", "accum"]
    vgg = by_key["vgg_weights"]
    assert (vgg.ours, vgg.paper, vgg.why) == ("random-weight VGG19 (seed 0)", "ImageNet VGG19",
                                             "ImageNet weights were not available")
    assert by_key["lr1"].paper == "0.0002" and by_key["sizes"].paper == PAPER_SIZES
    assert by_key["percep_normalize"].paper == ""  # nothing of the kind in the paper
    records = json.loads(json.dumps([d.record() for d in found]))  # as a run store keeps them
    assert [Departure(**r) for r in records] == found
    assert set(records[0]) == {"key", "ours", "paper", "why", "short", "text"}


def test_a_config_that_predates_a_setting_is_a_key_error() -> None:
    cfg = presets.resolve("tiny")
    del cfg["ema_decay"]
    with pytest.raises(KeyError):
        departures(cfg)

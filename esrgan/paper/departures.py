"""A run's departures from the paper's setting, as data, computed from its config.

    for d in departures(cfg):
        d.key, d.ours, d.paper, d.why   # what differs, ours against the paper's, and why
        d.short                         # a few words for a figure's footer or a report's banner
        d.text                          # the full sentence for a report

A run records them (``info['esrgan']['departures']``, one mapping per departure, see
:meth:`Departure.record`); the report and the figures read those fields, never the sentence.
Only the config keys named below are read, so a config mapping from any source will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from esrgan.paper.setting import PAPER_DATA, PAPER_SETTING, SCALE_KEYS
from esrgan.paper.switches import SWITCH_TABLE, same_value

__all__ = ["Departure", "departures"]


@dataclass(frozen=True)
class Departure:
    """One way a run differs from the paper's setting.

    ``key`` names what differs: a config key, or ``sizes`` (the keys of SCALE_KEYS) or
    ``precision`` (precision1/2). ``ours`` and ``paper`` are the two settings in words
    (``paper`` is empty where the paper has nothing of the kind), ``why`` the reason or the
    consequence ('' when there is none to give), ``short`` a few words that name it, ``text``
    the sentence a report prints.
    """

    key: str
    ours: str
    paper: str
    why: str
    short: str
    text: str

    def record(self) -> dict[str, str]:
        """The mapping a run stores (``Departure(**mapping)`` reads it back)."""
        return asdict(self)


def departures(cfg: Mapping[str, Any]) -> list[Departure]:
    """What a run of ``cfg`` does differently from the paper's setting, in a fixed order.

    KeyError when ``cfg`` lacks a key this needs: a stored config is read through
    ``experiments.keys.complete`` first (a key added later at the value the run computed with).
    """
    out = []
    if cfg["train_hr"] is None:
        ours = "embedded photos (those shipped with the installed packages)"
        out.append(Departure("train_hr", ours, PAPER_DATA, "", "embedded photos",
                             f"{ours} instead of {PAPER_DATA}"))
    vgg = cfg["percep_net"] == "vgg19"  # the vgg_* keys matter only then
    if not vgg:
        out.append(_perceptual_net(cfg))
    if vgg and cfg["vgg_weights"] == "random":
        ours = f"random-weight VGG19 (seed {cfg['vgg_seed']})"
        paper, why = "ImageNet VGG19", "ImageNet weights were not available"
        out.append(Departure("vgg_weights", ours, paper, why, "random-weight VGG19",
                             f"{ours} instead of {paper}: {why}"))
    if cfg["percep_normalize"]:
        ours = "perceptual L1 divided by the mean |feature| of the HR image"
        why = "keeps stage 2 stable with a random VGG19"
        out.append(Departure("percep_normalize", ours, "", why, ours,
                             f"{ours} (not in the paper; {why})"))
    if cfg["percep_blur"] > 0:
        ours = (f"SR and HR low-passed (Gaussian, sigma {cfg['percep_blur']:g} px) before the "
                "perceptual network")
        paper = "the images themselves"
        why = "so that its gradient cannot carry a pattern finer than the low-pass's band"
        out.append(Departure("percep_blur", ours, paper, why, "low-passed perceptual input",
                             f"{ours} instead of {paper} ({why})"))
    if vgg and cfg["vgg_layer"] != PAPER_SETTING["vgg_layer"]:
        ours = f"perceptual features from {cfg['vgg_layer']}"
        paper = str(PAPER_SETTING["vgg_layer"])
        out.append(Departure("vgg_layer", ours, paper, "", ours, f"{ours} instead of {paper}"))
    if vgg and cfg["vgg_pool"] != "max":
        ours = "VGG19 with 2x2 average pooling"
        paper, why = "its max pooling", "smoother feature gradients for the generator"
        out.append(Departure("vgg_pool", ours, paper, why, ours,
                             f"{ours} instead of {paper} ({why})"))
    weights = [k for k in ("percep_weight", "lambda_adv", "eta_l1")
               if cfg[k] != PAPER_SETTING[k] and int(cfg["steps2"]) > 0]
    if weights:
        ours = ", ".join(f"{k} {cfg[k]:g}" for k in weights)
        paper = ", ".join(f"{k} {PAPER_SETTING[k]:g}" for k in weights)
        out.append(Departure("loss_weights", ours, paper, "", "other GAN-stage loss weights",
                             f"GAN-stage loss weights {ours} (paper: {paper})"))
    if cfg["ema_decay"]:
        short = "an exponential moving average of G"
        ours = f"{short} (decay {cfg['ema_decay']:g}) is scored and shipped"
        paper, why = "the raw weights", "as BasicSR's recipe does"
        out.append(Departure("ema_decay", ours, paper, why, short,
                             f"{ours}, {why}, instead of {paper}"))
    if cfg["lr1"] != PAPER_SETTING["lr1"]:
        ours = f"stage-1 learning rate {cfg['lr1']:g}"
        paper, why = f"{PAPER_SETTING['lr1']:g}", "a short stage 1"
        out.append(Departure("lr1", ours, paper, why, ours, f"{ours} instead of {paper} ({why})"))
    gan_stage = int(cfg["steps2"]) > 0
    sizes = _sizes(cfg, gan_stage)
    if sizes is not None:
        out.append(sizes)
    precision = _precision(cfg, gan_stage)
    if precision is not None:
        out.append(precision)
    if cfg["accum"] > 1 and gan_stage:
        ours = (f"stage 2 accumulates {cfg['accum']} micro-batches of "
                f"{cfg['batch'] // cfg['accum']} per step")
        why = ("D's BatchNorm and RaGAN's batch means are taken over each micro-batch, "
               "not the batch")
        out.append(Departure("accum", ours, "", why, ours, f"{ours}: {why}"))
    for switch in SWITCH_TABLE:  # a switch the paper does not have, on
        if switch.origin == "extension" and not same_value(switch.name, cfg[switch.name],
                                                           switch.paper):
            why = f"not in the paper; {switch.section}"
            out.append(Departure(switch.name, switch.baseline_text, switch.paper_text, why,
                                 switch.change, f"{switch.baseline_text} ({why})"))
    return out


def _perceptual_net(cfg: Mapping[str, Any]) -> Departure:
    """A fixed Gabor filter bank in place of VGG19 (``percep_net``)."""
    cells = "rectified" if cfg["percep_net"] == "gabor" else "local-energy"
    lowpass = (f" and its low-pass residual (weight {cfg['gabor_lowpass']:g})"
               if cfg["gabor_lowpass"] else "")
    ours = f"perceptual features from a fixed Gabor filter bank ({cells}, 3 scales){lowpass}"
    paper = f"ImageNet VGG19 {PAPER_SETTING['vgg_layer']}"
    why = ("a substitute where the ImageNet file is absent: a random-weight VGG19's gradient "
           "paints a periodic grid, a Gabor bank's is smooth in the image; the bank has no "
           "before/after-activation choice, so vgg_before_act does not change it")
    return Departure("percep_net", ours, paper, why, "Gabor-bank perceptual loss",
                     f"{ours} instead of {paper}: {why}")


def _sizes(cfg: Mapping[str, Any], gan_stage: bool) -> Departure | None:
    """The sizes of SCALE_KEYS that differ: the trunk's own size keys only, and no GAN steps
    for a stage-1-only (PSNR model) run."""
    keys = [k for k in SCALE_KEYS if not (k in ("nb", "gc") and not cfg["rrdb"])
            and not (k == "steps2" and not gan_stage)]
    if not cfg["rrdb"]:
        keys.insert(1, "nb_resblock")
    sizes = {k: cfg[k] for k in keys if cfg[k] != PAPER_SETTING[k]}
    if gan_stage and cfg.get("patch2") and cfg["patch2"] != cfg["patch"]:
        # the GAN stage's own patch (the paper trains both stages at 128)
        if cfg["patch2"] != PAPER_SETTING["patch"]:
            sizes["GAN-stage patch"] = cfg["patch2"]
        elif "patch" in sizes:
            sizes["patch"] = f"{cfg['patch']} (GAN stage {cfg['patch2']})"
    if not sizes:
        return None
    paper = ", ".join(f"{k} {PAPER_SETTING.get(k, PAPER_SETTING['patch'])}" for k in sizes)
    ours = ", ".join(f"{k} {v}" for k, v in sizes.items())
    smaller = all(not isinstance(v, int) or v <= PAPER_SETTING.get(k, PAPER_SETTING["patch"])
                  for k, v in sizes.items())
    short = "smaller scale" if smaller else "other sizes"
    why = "learning-rate milestones scaled"
    return Departure("sizes", ours, paper, why, short, f"{short}: {ours} (paper: {paper}); {why}")


def _precision(cfg: Mapping[str, Any], gan_stage: bool) -> Departure | None:
    """Reduced-precision autocast in either stage (the paper trained in fp32)."""
    parts = []
    if cfg["precision1"] != "fp32":
        parts.append("the generator in stage 1")
    if cfg["precision2"] != "fp32" and gan_stage:
        parts.append("VGG19 and D in stage 2" if cfg["precision2"].endswith("-losses")
                     else "all networks in stage 2")
    if not parts:
        return None
    used = [f"precision1 {cfg['precision1']}"] + (
        [f"precision2 {cfg['precision2']}"] if gan_stage else [])
    kinds = sorted({cfg[k][:4] for k in ("precision1", "precision2") if cfg[k] != "fp32"
                    and (k == "precision1" or gan_stage)})
    short = f"{'/'.join(kinds)} autocast"
    ours = f"{short}: {' and '.join(parts)} ({', '.join(used)})"
    why = "README 'Performance' gives the measured difference"
    text = (f"{short}: {' and '.join(parts)} ({', '.join(used)}; the paper trained in fp32; "
            f"{why})")
    return Departure("precision", ours, "fp32", why, short, text)

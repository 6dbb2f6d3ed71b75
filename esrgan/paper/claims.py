"""The claims ledger: what the paper claims, the evidence it gives, and how each claim is tested.

One row per claim (C8 is a sanity gate, not a claim of the paper). Each row names the switches
involved, the model and metric the claim is about and its direction, the regime in which the
paper makes it (depth, GAN steps, a trained VGG19, data), the design of the matrix that tests
it, and the measured effects that decide it (:class:`Effect`). The report, the matrix designs
and the tests read this table; the verdict logic is ``analysis.claims``.

An effect is ``value(a) - value(b)`` of one metric, paired by seed; the claim predicts its
sign (``direction``) and names its smallest effect of interest (``delta``, with the reason
beside it): an interval inside (-delta, +delta) means "no effect worth reporting". ``a`` and
``b`` name a variant (a label of ``esrgan.paper.switches``,
or one of :data:`DEEP_VARIANTS`) and a model (one of ``esrgan.evaluation.MODELS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esrgan.evaluation import BICUBIC, GAN_MODEL, MODELS, PSNR_MODEL
from esrgan.paper.switches import SWITCHES, known_labels, same_value

# Claim C1 is about a very deep no-BN residual network: its four variants, by init and beta
# (the 'deep' design; the trunk is SRGAN's residual block without BN).
DEEP_VARIANTS: dict[str, dict[str, object]] = {
    "plain MSRA": {"small_init": False, "beta": 1.0},
    "x0.1 init": {"small_init": True, "beta": 1.0},
    "beta 0.2": {"small_init": False, "beta": 0.2},
    "x0.1 init + beta 0.2": {"small_init": True, "beta": 0.2},
}
DEEP_STUDY = "deep"  # the ``study`` of the deep design's runs


def deep_label(values: dict[str, object]) -> str:
    """The name of a deep-design variant from its switches (init and beta)."""
    for label, setting in DEEP_VARIANTS.items():
        if bool(values.get("small_init")) == setting["small_init"] and \
                same_value("beta", values.get("beta", 0.0), setting["beta"]):
            return label
    return f"init {'x0.1' if values.get('small_init') else 'MSRA'}, beta {values.get('beta')}"


@dataclass(frozen=True)
class Side:
    """One side of an effect: a variant's model. The variant is a label the analysis gives
    runs (``switches.variant_label``, or a deep-design variant) and the model one of
    ``esrgan.evaluation.MODELS``: anything else is refused here, so that a typo cannot read
    as 'no runs of this claim's variants'."""

    variant: str
    model: str

    def __post_init__(self) -> None:
        labels = [*known_labels(), *DEEP_VARIANTS]
        if self.variant not in labels:
            raise ValueError(f"unknown variant {self.variant!r}; known: {labels}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {list(MODELS)}")


@dataclass(frozen=True)
class Regime:
    """What a claim needs of the setting before its numbers can speak (None: no need).

    ``min_depth``: blocks of the deep trunk (C1); ``max_gan_artifacts``: the artifact index
    of ESRGAN's GAN model on val, mean over seeds (a GAN stage that paints no grid);
    ``max_active_fraction``: the share of the perceptual layer's units active after the ReLU
    (the premise of C5: sparse features, which only a trained VGG19 has). A premise rests on
    the perceptual network: a claim with one runs its own cells only with a trained VGG19.
    """

    min_depth: int | None = None
    max_gan_artifacts: float | None = None
    max_active_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_gan_artifacts", "max_active_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"Regime.{name} must be in (0, 1], got {value!r}")
        if self.min_depth is not None and self.min_depth < 1:
            raise ValueError(f"Regime.min_depth must be >= 1, got {self.min_depth!r}")

    @property
    def has_premise(self) -> bool:
        """Whether the claim rests on a property of the perceptual network."""
        return self.max_active_fraction is not None


@dataclass(frozen=True)
class Effect:
    """value(a) - value(b) of ``metric``, paired by seed; the claim says its sign.

    ``direction`` +1: the claim predicts a > b; -1: a < b. ``kind`` 'paired' (two runs of
    one seed) or 'interpolation' (network against image interpolation of one run, at matched
    PSNR). ``study`` selects the runs (None: the ablation's runs).
    """

    name: str
    a: Side
    b: Side
    metric: str
    direction: int
    kind: str = "paired"
    study: str | None = None
    decides: bool = True  # False: reported beside the claim, not part of its verdict
    delta: float = 0.0  # smallest effect of interest (0: no equivalence verdict)
    delta_why: str = ""  # why this size


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how this repository tests it."""

    id: str
    title: str
    statement: str  # what the paper says
    evidence: str  # where the paper shows it
    switches: tuple[str, ...]
    model: str  # the model the claim is about
    metric: str  # the deciding metric
    regime: str  # what the claim needs to show (depth, GAN steps, trained VGG19, data)
    design: str  # the matrix design that tests it
    effects: tuple[Effect, ...]
    premise: str | None = None  # a property of the setting the claim rests on
    gate: bool = False  # a sanity check of the setting, not a claim of the paper
    qualitative: str = ""  # what the paper also claims that only a picture shows
    needs: Regime = field(default_factory=Regime)  # minimum regime, for the verdict

    @property
    def reads_gan_stage(self) -> bool:
        """Whether any effect reads a GAN model (or an interpolation sweep, which runs from
        one): else the claim reads only what stage 1 trains, and stage-1 cells serve it."""
        return any(e.kind == "interpolation" or GAN_MODEL in (e.a.model, e.b.model)
                   for e in self.effects)


# Smallest effects of interest, each with its reason (an interval inside +-delta: "no effect")
PSNR_DELTA = 0.1
PSNR_DELTA_WHY = ("0.1 dB: the smallest PSNR gain SR tables read as a gain (the paper's own "
                  "smallest reported gains, larger patches, are 0.04-0.12 dB)")
NIQE_DELTA = 0.1
NIQE_DELTA_WHY = ("0.1: the metric's own repeatability: shifting the HR photos of the "
                  "embedded sets by 1-7 px moves their set-mean NIQE by up to 0.1")
RESCUE_DELTA = 1.0
RESCUE_DELTA_WHY = ("1 dB: a trunk that trains gains tens of dB over one that stalls; less "
                    "than 1 dB is no rescue")
BRIGHTNESS_DELTA = 0.5
BRIGHTNESS_DELTA_WHY = "0.5 grey levels of mean brightness error: below what an eye sees"


# The GAN-stage claims are read only from a GAN stage that paints no periodic grid: the
# artifact index (esrgan.metrics.artifacts) of ESRGAN's GAN model on the validation photos,
# mean over seeds, at most this (PSNR-oriented models score 0.001-0.004 there, GAN models with
# a grid visible in the crops 0.006 and more). Above it, C4-C7 are not testable at this scale.
ARTIFACT_LIMIT = 0.005
WORKING_GAN = Regime(max_gan_artifacts=ARTIFACT_LIMIT)


def _psnr(**kw: object) -> dict[str, object]:
    return {"delta": PSNR_DELTA, "delta_why": PSNR_DELTA_WHY, **kw}


def _niqe(**kw: object) -> dict[str, object]:
    return {"delta": NIQE_DELTA, "delta_why": NIQE_DELTA_WHY, **kw}


def _esr(model: str) -> Side:
    return Side("ESRGAN", model)


def _flip(switch: str, model: str) -> Side:
    return Side(SWITCHES[switch].flipped_label, model)


def _deep(label: str) -> Side:
    return Side(label, PSNR_MODEL)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1", "Deep trainability: x0.1 init and residual scaling",
        "a very deep no-BN residual network stalls with plain MSRA init; x0.1 init or "
        "beta = 0.2 each make it train; x0.1 init beats beta = 0.2; both together are "
        "slightly better still",
        "supplementary section 2, Fig. 4 (64 residual blocks, L1, Set5 PSNR curves)",
        ("small_init", "beta"), PSNR_MODEL, "psnr",
        "depth, not width: a deep, narrow no-BN residual trunk, stage 1 (L1) only",
        "deep",
        (Effect("x0.1 init - plain MSRA", _deep("x0.1 init"), _deep("plain MSRA"), "psnr", +1,
                study=DEEP_STUDY, delta=RESCUE_DELTA, delta_why=RESCUE_DELTA_WHY),
         Effect("beta 0.2 - plain MSRA", _deep("beta 0.2"), _deep("plain MSRA"), "psnr", +1,
                study=DEEP_STUDY, delta=RESCUE_DELTA, delta_why=RESCUE_DELTA_WHY),
         Effect("x0.1 init - beta 0.2", _deep("x0.1 init"), _deep("beta 0.2"), "psnr", +1,
                **_psnr(study=DEEP_STUDY)),
         Effect("both - x0.1 init", _deep("x0.1 init + beta 0.2"), _deep("x0.1 init"), "psnr",
                +1, **_psnr(study=DEEP_STUDY, decides=False))),
        needs=Regime(min_depth=32),
    ),
    Claim(
        "C2", "BN removal raises PSNR",
        "removing BatchNorm from G raises the PSNR-oriented model's PSNR and removes the "
        "artifacts BN brings when training and test statistics differ",
        "section 3.1; supplementary section 1 (qualitative)",
        ("bn",), PSNR_MODEL, "psnr",
        "PSNR-oriented models, replicated over seeds", "default",
        (Effect("ESRGAN - ESRGAN +BN", _esr(PSNR_MODEL), _flip("bn", PSNR_MODEL), "psnr",
                +1, **_psnr()),),
        qualitative="BN artifacts: shown in the crop grid only",
    ),
    Claim(
        "C3", "The RRDB trunk raises PSNR",
        "the RRDB trunk is more expressive than SRGAN's residual blocks: a higher PSNR of the "
        "PSNR-oriented model", "section 3.1, Table 2 (RRDB_PSNR)",
        ("rrdb",), PSNR_MODEL, "psnr",
        "PSNR-oriented models at equal steps, replicated over seeds", "default",
        (Effect("ESRGAN - ESRGAN w/o RRDB", _esr(PSNR_MODEL), _flip("rrdb", PSNR_MODEL),
                "psnr", +1, **_psnr()),),
    ),
    Claim(
        "C4", "RaGAN lowers NIQE",
        "the relativistic average discriminator gives sharper, more detailed textures than "
        "the standard GAN", "section 3.2, Fig. 8",
        ("ragan",), GAN_MODEL, "niqe",
        "a GAN stage that moves the generator towards natural textures (the paper: 400k steps "
        "on DF2K with an ImageNet VGG19) and enough seeds for a small effect", "default",
        (Effect("ESRGAN - ESRGAN standard GAN", _esr(GAN_MODEL), _flip("ragan", GAN_MODEL),
                "niqe", -1, **_niqe()),),
        needs=WORKING_GAN,
    ),
    Claim(
        "C5", "VGG features before activation",
        "after-activation features are sparse (11.17% of conv5_4 units active on baboon for an "
        "ImageNet VGG19), supervise weakly and give an output brightness inconsistent with the "
        "HR image; features before activation fix both",
        "section 3.3, Fig. 9 (brightness histogram and crop)",
        ("vgg_before_act",), GAN_MODEL, "niqe",
        "a trained (ImageNet) VGG19 for the premise; the brightness part is measurable with any "
        "VGG19", "default",
        (Effect("ESRGAN - ESRGAN after-act VGG", _esr(GAN_MODEL),
                _flip("vgg_before_act", GAN_MODEL), "niqe", -1, **_niqe()),
         Effect("|brightness shift|: ESRGAN - after-act", _esr(GAN_MODEL),
                _flip("vgg_before_act", GAN_MODEL), "brightness_error", -1, decides=False,
                delta=BRIGHTNESS_DELTA, delta_why=BRIGHTNESS_DELTA_WHY)),
        premise="after-activation conv5_4 features are sparse (paper: 11.17% active)",
        needs=Regime(max_gan_artifacts=ARTIFACT_LIMIT, max_active_fraction=0.25),
    ),
    Claim(
        "C6", "Network interpolation beats image interpolation",
        "interpolating the weights of the PSNR-oriented and the GAN model lies closer to the "
        "lower-left of the perception-distortion plane than interpolating their images",
        "section 3.4, Fig. 10",
        (), GAN_MODEL, "niqe",
        "the two curves from the same pair of models, a GAN model better than its PSNR model "
        "perceptually (else both curves only trade PSNR away)", "default",
        (Effect("network - image NIQE at equal PSNR", _esr(GAN_MODEL), _esr(PSNR_MODEL),
                "niqe", -1, **_niqe(kind="interpolation")),),
        needs=WORKING_GAN,
    ),
    Claim(
        "C7", "The GAN stage trades distortion for perception",
        "the GAN model has a better perceptual score (lower NIQE / PI) than its PSNR-oriented "
        "model, at a cost in PSNR", "Fig. 2 (PIRM perception-distortion plane)",
        (), GAN_MODEL, "niqe",
        "a perceptual loss on trained (ImageNet) VGG19 features and GAN steps to match (the "
        "paper: 400k on DF2K); a random VGG19's features are not a perceptual measure", "default",
        (Effect("GAN - PSNR model NIQE", _esr(GAN_MODEL), _esr(PSNR_MODEL), "niqe", -1,
                **_niqe()),
         Effect("GAN - PSNR model PSNR (the cost)", _esr(GAN_MODEL), _esr(PSNR_MODEL),
                "psnr", -1, **_psnr(decides=False))),
        needs=WORKING_GAN,
    ),
    Claim(
        "C8", "Sanity gate: the PSNR model beats bicubic",
        "(not a claim of the paper) a trained PSNR-oriented model must beat bicubic "
        "upscaling on PSNR before any other effect means anything",
        "every SR paper's table (RRDB_PSNR: Set5 32.73 dB against bicubic's 28.42)",
        (), PSNR_MODEL, "psnr",
        "stage-1 steps enough to pass bicubic", "default",
        (Effect("PSNR model - bicubic", _esr(PSNR_MODEL), _esr(BICUBIC), "psnr", +1,
                **_psnr()),),
        gate=True,
    ),
)

BY_ID: dict[str, Claim] = {c.id: c for c in CLAIMS}

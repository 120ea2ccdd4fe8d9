"""One-pixel attacks: an exhaustive vulnerability map and differential evolution, both restricted
to any set of pixels (a region, a random subset, or the whole image).

Attacks follow torchattacks' shape: build with settings, call on (images in [0, 1], labels).

* :class:`ExhaustiveSearch` evaluates every allowed pixel × every palette colour in large batches
  and returns a full map per image: whether any colour flips the prediction, the best colour, and
  the drop in true-class probability. With ``precision="bf16_screened"`` (ours) it scores every
  candidate in low precision (bf16 autocast on CPUs with native bf16; CUDA runs the fp32 path
  until a GPU test exists) and evaluates in fp32 every candidate whose low-precision result could
  change the fp32 map under a run-time error bound. The maps equalled the fp32 maps on every image
  tried; exactness rests on that bound, measured from sampled candidates, not on a proof (see
  :class:`ExhaustiveSearch` and docs/p1.md, "The screened exhaustive map").
* :class:`RankedSearch` (ours) evaluates the same candidates best first by a prior (the input
  gradient, or raster order) and stops at the first success or a budget; optionally a
  neighbourhood stage then searches around the pixels that came closest.
* :class:`DifferentialEvolution` is Su et al.'s search (rand/1/bin, population 400, 100
  generations, F = 0.5, CR = 1, early stop on success) with our encoding (Su et al.: x, y
  coordinates and 8-bit colours): the candidate's position is an index into the allowed pixels,
  its colours real numbers in [0, 1], so it can never touch a pixel outside them; the population of
  all images in a call is evaluated together. With ``precision="bf16"`` (ours) the fitness comes
  from bf16 autocast and fp32 decides success: only fp32 successes are reported.

Untargeted by default (success: the prediction is no longer the label); targeted with
``targets`` (success: the prediction is the target).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .gradients import loss_gradient
from .incremental import Incremental, supports
from .models import low_precision_scorer
from .runtime import model_device

log = logging.getLogger("pixelrobust")


def make_palette(spec: str | list) -> torch.Tensor:
    """Colours to try at each pixel, P×3 in [0, 1].

    ``corners``: the 8 corners of the RGB cube (default); ``corners+faces``: plus the 6 face
    centres; ``gridK``: K levels per channel (K³ colours, K ≥ 2); or an explicit list of RGB
    triples in [0, 1].
    """
    if isinstance(spec, str):
        corners = [list(c) for c in itertools.product((0.0, 1.0), repeat=3)]
        if spec == "corners":
            colours = corners
        elif spec == "corners+faces":
            faces = (
                [[0.5, 0.5, v] for v in (0.0, 1.0)]
                + [[0.5, v, 0.5] for v in (0.0, 1.0)]
                + [[v, 0.5, 0.5] for v in (0.0, 1.0)]
            )
            colours = corners + faces
        elif m := re.fullmatch(r"grid(\d+)", spec):
            k = int(m.group(1))
            if k < 2:
                raise ConfigError(f"palette {spec!r}: a grid needs at least 2 levels per channel")
            levels = np.linspace(0.0, 1.0, k).tolist()
            colours = [list(c) for c in itertools.product(levels, repeat=3)]
        else:
            raise ConfigError(
                f"unknown palette {spec!r}: use 'corners', 'corners+faces', 'gridK' or a list of RGB triples in [0, 1]"
            )
    else:
        colours = spec
    t = torch.tensor(colours, dtype=torch.float32)
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0:
        raise ConfigError(
            f"palette must be a non-empty list of RGB triples, got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ConfigError(
            f"palette colours must lie in [0, 1] (images are in [0, 1]); got values in [{t.min():.3g}, {t.max():.3g}]"
        )
    return t


def _success(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == targets if targets is not None else pred != labels


@dataclass
class PixelMap:
    """Exhaustive result for one image (maps are H×W; pixels outside the searched set are False/NaN)."""

    searched: np.ndarray  # bool: pixel was searched
    vulnerable: np.ndarray  # bool: some colour succeeds at this pixel
    best_colour: np.ndarray  # int: palette index of the best colour (-1 where not searched)
    drop: (
        np.ndarray
    )  # float: p_true(clean) - min over colours of p_true (targeted: gain in p_target)
    p_clean: float  # true-class (or target) probability of the clean image
    n_evals: int  # candidates in the map (pixels x colours)
    n_fp32: int = (
        -1
    )  # candidate forward passes in fp32 (the fp32 path: n_evals; screened: those re-evaluated,
    #                   the run-time check's random sample and batch padding included)
    precision: str = "fp32"  # the path that ran: "fp32", "bf16_screened" or "fp32_incremental" (CUDA: always fp32 for now)
    screen_error: float = float(
        "nan"
    )  # screened: the largest |low precision - fp32| seen on this image's
    #                                     decision quantities (margin, log-odds); the band is screen_band x it
    bit_exact: bool = False  # incremental path: the checked incremental results equalled the full
    #                          pass bit for bit and were taken for every candidate (else: the band);
    #                          bf16_incremental: the checked fp32 rests equalled it, so the fp32 rest decides
    n_rest: int = (
        0  # bf16_incremental: candidates whose fp32 rest ran on their kept cone activations
    )
    #                  (the check's, the band's and chunk padding)
    screen_skipped: bool = False  # bf16_incremental: the screen's probe predicted that the
    #                  screen would not pay on this image, and its other candidates ran the exact
    #                  incremental path (cone and fp32 rest; ExhaustiveSearch, "screen gate")

    @property
    def success(self) -> bool:
        return bool(self.vulnerable.any())


PRECISIONS = ("fp32", "bf16_screened")
INCREMENTAL = ("auto", "off")
INCREMENTAL_MIN_BAND = 1e-4  # ours: the incremental path's band never falls below this (logits; its measured error is ~1e-5)
INCREMENTAL_CHECK = (
    64  # ours: random fp32 checks per image on the incremental path (batch padding adds more; every
)
#                         re-evaluated candidate, at least one per pixel, measures the difference too)
P_ONE = -25 * math.log(
    2
)  # log-odds below which fp32 softmax gives exactly 1.0 (the other classes' exps sum < 2^-25)
REL_SLACK = 2.0**-20  # rounding slack of an fp32 softmax probability, relative (16 ulps)
ABS_SLACK = (
    2.0**-149
)  # plus one subnormal step: below 2^-126 fp32 probabilities lose relative precision
MIN_RANDOM_CHECK = 256  # random fp32 checks per screened image at least, whatever the batch size
INCREMENTAL_SCREEN_SAMPLE = (
    1024  # ours: bf16_incremental's random sample per image for its band (at
)
#   least; the 64 full-pass checks count, the rest by the cheap fp32 rest). Its errors are heavier-tailed
#   than plain bf16's (a referee, session s40: with 256 random candidates the image's largest error exceeded
#   twice the sample's in 2-50 % of draws per image, up to 3.7x), so the sample is 4x the bf16 screen's
SCREENED_ARCHS = ("CifarResNet", "MobileNetV2")  # ours: where bf16_incremental runs
EAGER_SCREENED_ARCHS = ("CifarResNet",)  # ours: ... without the compiled screen (screen_compile
#   False): MobileNetV2's eager delta screen at 224 costs ~0.75 of the fp32 rest here (the elementwise
#   work around its 1 x 1 expansions) and a fifth of the candidates still need the fp32 rest: no
#   faster than the exact incremental map (bench/README.md, "Session s40"), so it keeps that path;
#   compiled (session s41) its screen costs about a third of the fp32 rest
FEATURE_CACHE_BYTES = (
    2 * 2**30
)  # ours: bf16_incremental keeps the fp32 activations at the switch of
#                                  an image's candidates up to this size (ResNet-20's map: 256 MiB)
SCREEN_GATE_PROBE = (
    8  # ours: bf16_incremental screens a random eighth of an image's batches first (the probe)
)
SCREEN_GATE_MIN_BATCHES = 16  # ... on images of at least this many full batches (else no gate)
SCREEN_ROUNDS = (
    4  # widening rounds before a screened image falls back to fp32 for every candidate left
)


def low_precision_dtype(device) -> torch.dtype | None:
    """The autocast dtype the screening uses on ``device``: bf16 on a CPU with native bf16
    (AVX-512 BF16 or AMX; emulated bf16 is slower than fp32); None elsewhere (the search then runs
    in fp32). CUDA gets None too: an fp16 path (overflow then ReLU6 gives finite wrong logits; TF32
    makes the "fp32" reference TF32) has no GPU test yet, so it is not used."""
    device = torch.device(device)
    if device.type == "cpu":
        native = (
            getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        )
        return torch.bfloat16 if native else None
    return None


def _decision(logits: torch.Tensor, cls: int, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate (float64, on the CPU): the margin ``z_cls - max_{j != cls} z_j`` (untargeted
    success: < 0; targeted: > 0; a tie goes to the lower class index, as ``argmax`` does) and the
    score ``u`` the best colour maximises: untargeted the true class's log-odds against the rest,
    ``log(1/p - 1) = logsumexp_{j != y}(z_j - z_y)`` (p = 1 / (1 + e^u)); targeted minus that of the
    target (p = 1 / (1 + e^-u))."""
    z = logits.detach().double().cpu()
    zc = z[:, cls]
    others = z.clone()
    others[:, cls] = -math.inf
    margin = zc - others.amax(1)
    lodds = torch.logsumexp(others - zc[:, None], 1)
    return margin, (-lodds if targeted else lodds)


class ExhaustiveSearch:
    """Every allowed pixel × every palette colour, evaluated in batches of ``batch_size``.

    ``precision="fp32"``: every candidate's logits in fp32. ``precision="bf16_screened"`` (ours):
    every candidate is scored under bf16 autocast (on CPUs with native bf16; elsewhere, CUDA
    included, the fp32 path runs: :func:`low_precision_dtype`), and fp32 evaluates every candidate
    whose low-precision result could change the fp32 map if the low-precision error stays within
    the band below. The maps (``vulnerable``, ``best_colour``, ``drop``) equalled the fp32 maps on
    every image tried; exactness rests on a run-time error bound measured on sampled candidates,
    not on a proof: a single candidate whose bf16 error is far above every sampled one can be
    missed silently (docs/p1.md, "Known limit"). Default off for that reason.

    * every candidate whose low-precision margin is within ``δ_m`` of the decision boundary, which
      includes every candidate low precision calls a success (so ``vulnerable`` is decided in fp32);
    * per pixel, every colour that could be the fp32 best colour: each colour's log-odds ``u`` lies
      in ``u_lp ± δ_u``, which bounds its fp32 probability (widened by fp32 rounding: ``REL_SLACK``
      relative plus ``ABS_SLACK`` absolute, for subnormal probabilities);
      a colour whose interval cannot reach the best bound among the pixel's colours is strictly worse
      in fp32 and is skipped. Working in log-odds, not probability, keeps colours that all give
      p ≈ 1 apart; where ``u_lp + δ_u`` is below ``log 2^-25`` the fp32 softmax gives exactly 1.0
      (the other classes' exps cannot move 1.0 by half an ulp), so that value is known without an
      fp32 pass: an image the model is sure of needs few re-evaluations.

    Only images whose clean true-class log-odds ``log(1/p - 1)`` are below ``max_clean_log_odds``
    (None: every image) are screened; the others run the fp32 path. Measured on ResNet-20, an image
    the model is that sure of has most one-pixel probabilities at exactly 1.0 and needs fp32 for
    6-22 % of its candidates; a less confident one for 66-97 %, which costs more than fp32 alone
    (docs/p1.md).

    The band is ``δ = screen_band`` × the largest |low precision − fp32| difference of the margin
    (for ``δ_m``) and of the log-odds (``δ_u``) seen so far by this search object: on the clean
    image, on every candidate fp32 evaluated, and on ``max(screen_check, MIN_RANDOM_CHECK)`` random
    candidates per image (the run-time self-check; batch padding adds more; one random generator
    per search object, seeded with ``seed``, so each image gets its own sample). When an fp32 result shows a larger error
    the band widens and the selection is redone; after
    ``SCREEN_ROUNDS`` widening rounds every candidate left is evaluated in fp32. Each fp32 candidate runs in a batch of the size the fp32
    path gives it (``batch_size``, or the last partial batch's size; padded with random unevaluated
    candidates), because fp32 CPU kernels may round differently at other batch sizes (measured:
    batch 1 for ResNet-20/56, small batches for MobileNetV2; the thresholds depend on the thread
    count and the CPU's kernels).

    The errors seen carry over between the images of one call (and one search object), so an
    image's ``n_fp32`` depends on which images came before it in the chunk and in what order; the
    maps do not (when the bound holds).

    ``incremental="auto"`` (ours): where :func:`pixelrobust.incremental.supports` the model (a
    Classifier around torchvision's MobileNetV2 or a CIFAR ResNet) and the model is on the CPU, the
    screening score is not bf16 but the fp32 logits of :class:`~pixelrobust.incremental.Incremental`
    (the early layers on the changed pixel's cone only), for every image (no ``max_clean_log_odds`` gate)
    and whatever ``precision`` says. Per image, first the run-time check: ``INCREMENTAL_CHECK``
    random candidates of the fp32 path's full batches (``batch_size``; batch padding fills the
    batch with more random ones) and the whole last partial batch go through the full fp32 pass.
    The first checked full batch also supplies the incremental path's clean cache
    (:meth:`~pixelrobust.incremental.Incremental.recording`: at every position, the
    activation of a checked candidate whose cone misses it, from every other candidate where one
    does, so that the rest are checked against a cache they did not supply): clean activations
    computed at the fp32 path's batch size, which a cache computed at batch 1 is not from block 8
    on (1 thread, this CPU). Then the incremental path evaluates the full batches, in the fp32
    path's batches (the last batch is fp32 already). When every checked candidate of a full
    batch has the same margin, log-odds, probability and success bit for bit (measured on this CPU
    with the default switches, 1 and 2 threads: :class:`~pixelrobust.incremental.Incremental`) and
    the recording covered every position (``uncovered`` 0: else an unchecked candidate may read a
    batch-1 value no checked one read), the incremental results are taken as the fp32 results for
    every candidate. Otherwise the difference
    is rounding (measured up to ~1e-5 on logits of magnitude ~15) and the band decides as above,
    with the band at least ``INCREMENTAL_MIN_BAND``: re-evaluated are the candidates within the
    band of the decision boundary and, per pixel, the colours that could be its best (at least one
    per pixel unless its probability is exactly 1.0: the map's ``drop`` is the fp32 value, bit for
    bit). Either way the trust rests on sampled candidates, like the bf16 band (a systematic
    difference, a kernel chosen by shape, shows in every candidate of a batch; the checked batch
    sees it). ``PixelMap.bit_exact`` says the bit-exact branch ran (``screen_error``, the largest
    difference seen, can be 0 on the banded branch too). At more than one thread the incremental
    pass runs its batches in single-threaded worker threads (:func:`_in_workers`). ``path`` is then
    ``fp32_incremental``; elsewhere (other models, CUDA, ``"off"``) nothing changes.

    ``precision="bf16_screened"`` with ``incremental="auto"`` (ours, session s40; ``path``
    ``bf16_incremental``, on a CPU with native bf16; a CIFAR ResNet or a MobileNetV2 with ReLU / ReLU6:
    ``SCREENED_ARCHS``. The screen runs through ``torch.compile`` (``screen_compile``, default true;
    session s41: its elementwise work fused, about a third of the fp32 rest on MobileNetV2 and a
    quarter on ResNet-20, one thread; eager where compiling fails, with the reason logged). Without it
    MobileNetV2 keeps the exact incremental path (``EAGER_SCREENED_ARCHS``: its eager delta screen,
    though ~35 times closer than plain bf16, costs about three quarters of the fp32 rest on this CPU,
    and the map was no faster)): three tiers. The cone runs in fp32 as above and its activations at the switch
    are kept (``FEATURE_CACHE_BYTES`` at most; larger maps run the exact incremental path); the rest
    of the network is screened in bf16 in *delta form*
    (:meth:`~pixelrobust.incremental.Incremental.screen`: convolutions on the change from the clean
    image, added to its fp32 pre-activations, so the error scales with what the pixel changes:
    ~0.04 in log-odds on ResNet-20 against ~0.2-0.3 for plain bf16; ~0.004 against ~0.12 on
    MobileNetV2 at 224, where plain bf16's error is as large as a pixel's colours differ). The
    run-time check is the same full-batch one; its candidates' fp32 rests on the kept activations
    must equal their full fp32 passes bit for bit (and ``uncovered`` be 0). Then the screen's band
    (as above, from the errors seen: the checked candidates, random ones topped up by the fp32 rest
    to ``max(screen_check, INCREMENTAL_SCREEN_SAMPLE)`` per image, and every re-evaluated one) selects what
    fp32 decides, and the fp32 rest on the kept
    activations gives those values (``n_rest`` counts them, in chunks of the rest's own size,
    padded); otherwise full fp32 passes do (the random sample too). Every colour that could be its pixel's best and every
    candidate near the boundary gets its fp32 value, so the map is the fp32 map when the sampled
    bound holds, as for the bf16 screen ("Known limit" in docs/p1.md applies); default off
    (``precision`` fp32).

    The screen gate (ours, session s42; ``screen_gate``, default 1.0, ``None``: no gate): on an
    image of at least ``SCREEN_GATE_MIN_BATCHES`` full batches (whole pixels per batch), a random
    ``1 / SCREEN_GATE_PROBE`` of the batches is screened first (the probe, :meth:`_probe`). When
    the probe predicts that the screen costs more than it saves (:meth:`_skip_screen`: the
    screen's measured cost over the fp32 rest's, plus the share of the probe the band sends to the
    rest, plus the band's random sample, above ``screen_gate``), the image's other batches run the
    exact incremental path (the cone, then the fp32 rest), checked bit for bit by the same
    full-pass check, and the probe's candidates all get the fp32 rest: every candidate then has
    its fp32 value and no band is needed. On ResNet-20 this happens on images the model is unsure
    of, or sure of with most probabilities within the rounding slack of 1, where the band sends
    about half to 90 % of the candidates to the fp32 rest and the screened map was slower than the
    exact one (docs/p1.md, "Session s42"). A choice of speed only (``PixelMap.screen_skipped``): a
    gated image's map is the fp32 map through the exact path's bit-exact check, a screened image's
    when the sampled bound holds. If the check fails on a gated image, full passes evaluate every
    screened (probe) candidate and what the band needs.

    Threads (ours, session s39): on a CPU every full fp32 pass of the map runs at one intra-op thread:
    the fp32 path's batches as single-threaded worker streams (:func:`_in_workers`, one per thread),
    the clean image, the incremental path's check batches (the recorded one alone) and its
    re-evaluations. A full pass at two intra-op threads can round otherwise than at one (measured:
    MobileNetV2 at batch 16-112 on this project's CPU; not at 224), so the map would depend on the
    thread count, and the incremental path (single-threaded, like the raw pass at its fastest here)
    would miss the bit-exact branch at those batch sizes. The fp32 and incremental maps are therefore
    the same at any thread count (on the same CPU and kernels; the bf16 screen's passes still run at
    the process's threads and only choose what fp32 evaluates), and on CUDA nothing changes. Costs:
    ``threads`` batches are in flight at once (peak memory grows with the thread count: MobileNetV2
    at batch 256, about 2.7 GB per stream), the model is called from several Python threads at once
    (hooks and wrappers must be thread-safe; a thread-local context the caller set, such as autocast
    or a profiler, reaches only the passes in the calling thread).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        palette: str | list = "corners",
        batch_size: int = 256,
        precision: str = "fp32",
        screen_band: float = 2.0,
        screen_check: int = 256,
        seed: int = 0,
        max_clean_log_odds: float | None = -17.0,
        incremental: str = "off",
        incremental_switch: int | None = None,
        screen_compile: bool = True,
        screen_gate: float | None = 1.0,
    ):
        if precision not in PRECISIONS:
            raise ConfigError(f"onepixel.precision must be one of {PRECISIONS}, got {precision!r}")
        if not screen_band >= 1:
            raise ConfigError(
                f"onepixel.screening.band (multiple of the largest low-precision error seen) must be >= 1, got {screen_band!r}"
            )
        if int(screen_check) < 1:
            raise ConfigError(
                f"onepixel.screening.check (random fp32 checks per image) must be >= 1, got {screen_check!r}"
            )
        self.model = model
        self.palette = make_palette(palette)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.low = (
            low_precision_dtype(model_device(model)) if precision == "bf16_screened" else None
        )
        self.path = (
            "fp32"
            if self.low is None
            else ("bf16_screened" if self.low == torch.bfloat16 else "fp16_screened")
        )
        self.screen_band, self.screen_check, self.seed = (
            float(screen_band),
            int(screen_check),
            int(seed),
        )
        self.max_clean_log_odds = None if max_clean_log_odds is None else float(max_clean_log_odds)
        if incremental is False:  # YAML reads a bare ``off`` as false
            incremental = "off"
        if incremental not in INCREMENTAL:
            raise ConfigError(
                f"onepixel.incremental must be one of {INCREMENTAL}, got {incremental!r}"
            )
        self.incremental = incremental
        self.inc = None
        self.screen_dtype = None  # the incremental path's screen of the rest (bf16_incremental)
        self.screen_compile = bool(screen_compile)
        if screen_gate is not None and not float(screen_gate) > 0:
            raise ValueError(
                f"ExhaustiveSearch screen_gate must be a positive cost ratio or None (no gate), got {screen_gate!r}"
            )
        self.screen_gate = None if screen_gate is None else float(screen_gate)
        # bf16_incremental: thread CPU seconds of fp32 rests and their candidates, per shape of the
        # activations at the switch (an image size's rests cost their own)
        self._rest_cost: dict[tuple, list] = {}
        # ... and of the delta screens (the kept activations' copy included), per shape likewise: the
        # screen gate's S, pooled over images (one image's probe alone moved S/R by 2x, session s43)
        self._screen_cost: dict[tuple, list] = {}
        self.last_gate = None  # bf16_incremental: the screen gate's last estimate (_skip_screen)
        self._compile_probed = False  # the first screened image compiles the screen (_screened)
        if incremental == "auto" and torch.device(model_device(model)).type == "cpu":
            if supports(model):
                self.inc = Incremental(model, switch=incremental_switch)
                low = self.low
                self.low, self.path = None, "fp32_incremental"
                archs = SCREENED_ARCHS if screen_compile else EAGER_SCREENED_ARCHS
                if low is not None and self.inc.arch.name in archs and self.inc.supports_screen():
                    # bf16_screened on the incremental path: the rest of the network screened in
                    # delta form, fp32 (the cone's activations kept, the rest re-run) decides
                    self.screen_dtype, self.path = low, "bf16_incremental"
        self.seen_error = [0.0, 0.0]  # largest |low precision - fp32| so far: margin, log-odds
        self._gen = torch.Generator().manual_seed(
            self.seed
        )  # one per search: a new random sample for every image

    def describe(self) -> str:
        """Which path runs, for the log."""
        sw = None if self.inc is None else ("auto" if self.inc.switch is None else self.inc.switch)
        if self.inc is not None and self.screen_dtype is not None:
            return (
                f"bf16_incremental: the first blocks (switch {sw}) on each candidate's changed cone in fp32, the rest "
                f"screened in bf16 in delta form ({'through torch.compile, eager where that fails' if self.screen_compile else 'eager'}); the fp32 rest on the kept cone activations re-evaluates every "
                f"candidate the screen's band (x{self.screen_band:g} the largest error seen: on "
                f"{max(self.screen_check, INCREMENTAL_SCREEN_SAMPLE)} random candidates per image at least and every one "
                f"re-evaluated) could change, once {INCREMENTAL_CHECK} random full fp32 checks per image (padded to a "
                f"full batch; the last partial batch in fp32) equal that fp32 rest bit for bit; else full fp32 passes "
                f"re-evaluate"
            )
        if self.inc is not None:
            return (
                f"fp32_incremental: the first blocks (switch {sw}) on each candidate's changed cone, the rest in full; "
                f"fp32 full passes decide (band {self.screen_band:g} x the largest difference seen, at least "
                f"{INCREMENTAL_MIN_BAND:g}; per image {INCREMENTAL_CHECK} random fp32 checks padded to a full batch, which "
                f"also gives the clean cache, and the last partial batch in fp32; where the checks all equal the "
                f"incremental results bit for bit, those are taken for every candidate)"
            )
        if self.path != "fp32":
            name = str(self.low).removeprefix("torch.")
            gate = (
                "every image"
                if self.max_clean_log_odds is None
                else f"images whose clean true-class log-odds are below {self.max_clean_log_odds:g}, the others in fp32"
            )
            return (
                f"{self.path}: {name} autocast scores every candidate, fp32 decides (band {self.screen_band:g} x the "
                f"largest error seen, {max(self.screen_check, MIN_RANDOM_CHECK)} random fp32 checks per image); screens {gate}"
            )
        if self.precision != "fp32":
            dev = model_device(self.model)
            why = (
                "screening on CUDA has no GPU test yet"
                if torch.device(dev).type == "cuda"
                else "the device has no native bf16"
            )
            return f"fp32 (onepixel.precision {self.precision} asked, but {dev}: {why})"
        return "fp32"

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> list[PixelMap]:
        _check_images(images)
        return [
            self._one(
                images[i],
                labels[i],
                None if masks is None else masks[i],
                None if targets is None else targets[i],
            )
            for i in range(len(images))
        ]

    def _one(self, image, label, mask, target) -> PixelMap:
        device = model_device(self.model)
        c, h, w = image.shape
        image = image.to(device)
        palette = self.palette.to(device)
        n_col = len(palette)
        mask = torch.ones(h, w, dtype=torch.bool) if mask is None else mask.bool().cpu()
        pix = mask.flatten().nonzero().squeeze(1).to(device)  # allowed pixel indices (row-major)
        cls = int(target if target is not None else label)
        with _one_thread(device):  # as every full fp32 pass of the map (see the class docstring)
            clean = self.model(image[None])
        p_clean = clean.softmax(1)[0, cls].item()
        n_cand = len(pix) * n_col
        buf = _Buffers(self.batch_size, (c, h, w), device)
        extra = {}
        screen = self.inc is not None or (
            self.path != "fp32"
            and (
                self.max_clean_log_odds is None
                or float(_decision(clean, int(label), False)[1][0]) < self.max_clean_log_odds
            )
        )
        if not screen:
            prob_tab = torch.empty(n_cand, device=device)  # candidate p = pixel * n_col + colour
            succ_tab = torch.empty(n_cand, dtype=torch.bool, device=device)

            def evaluate(start):
                idx = torch.arange(start, min(start + self.batch_size, n_cand), device=device)
                logits = self.model(_candidates(buf.get(), image, pix, palette, idx))
                prob_tab[idx] = logits.softmax(1)[:, cls]
                pred = logits.argmax(1)
                succ_tab[idx] = (pred == cls) if target is not None else (pred != cls)

            _in_workers(evaluate, list(range(0, n_cand, self.batch_size)), device)
            prob_tab, succ_tab = prob_tab.view(-1, n_col).cpu(), succ_tab.view(-1, n_col).cpu()
            vuln = succ_tab.any(1)
            extra["n_fp32"] = n_cand
        else:
            prob_tab, vuln, extra = self._screened(
                image, cls, target is not None, pix, palette, buf, clean
            )
        # best colour: lowest true-class probability (targeted: highest target probability)
        best_p, best_c = prob_tab.min(1) if target is None else prob_tab.max(1)
        vul_map = torch.zeros(h * w, dtype=torch.bool)
        vul_map[pix.cpu()] = vuln
        col_map = torch.full((h * w,), -1, dtype=torch.long)
        col_map[pix.cpu()] = best_c
        drop = torch.full((h * w,), float("nan"))
        drop[pix.cpu()] = (p_clean - best_p) if target is None else (best_p - p_clean)
        return PixelMap(
            mask.numpy(),
            vul_map.view(h, w).numpy(),
            col_map.view(h, w).numpy(),
            drop.view(h, w).numpy(),
            p_clean,
            n_cand,
            precision=self.path if screen else "fp32",
            **extra,
        )

    def _band(self) -> tuple[float, float]:
        floor = INCREMENTAL_MIN_BAND if self.inc is not None else 0.0
        return max(self.screen_band * self.seen_error[0], floor), max(
            self.screen_band * self.seen_error[1], floor
        )

    def _observe(self, m_lo, u_lo, m32, u32) -> tuple[float, float]:
        """Fold the low-precision errors of fp32-evaluated candidates into the seen maxima."""
        ok = torch.isfinite(m_lo) & torch.isfinite(u_lo) & torch.isfinite(m32) & torch.isfinite(u32)
        em = float((m_lo[ok] - m32[ok]).abs().max()) if ok.any() else 0.0
        eu = float((u_lo[ok] - u32[ok]).abs().max()) if ok.any() else 0.0
        self.seen_error = [max(self.seen_error[0], em), max(self.seen_error[1], eu)]
        return em, eu

    @staticmethod
    def _needed(m_lo, u_lo, known, p32, n_col, targeted, dm, du):
        """Candidates that fp32 must evaluate under the band (δ_m, δ_u), and those whose fp32
        probability is exactly 1.0 (see the class docstring); also the per-pixel contenders."""
        finite = torch.isfinite(m_lo) & torch.isfinite(u_lo)
        near = (m_lo >= -dm) if targeted else (m_lo <= dm)  # a success or within the band of one
        if targeted:  # p = 1 / (1 + e^-u), increasing in u
            one = (-(u_lo - du) < P_ONE) & finite
            lo, hi = torch.sigmoid(u_lo - du), torch.sigmoid(u_lo + du)
        else:  # p = 1 / (1 + e^u), decreasing in u
            one = ((u_lo + du) < P_ONE) & finite
            lo, hi = torch.sigmoid(-(u_lo + du)), torch.sigmoid(-(u_lo - du))
        lo, hi = lo * (1 - REL_SLACK) - ABS_SLACK, hi * (1 + REL_SLACK) + ABS_SLACK
        lo = torch.where(finite, lo, torch.zeros_like(lo))
        hi = torch.where(finite, hi, torch.full_like(hi, math.inf))
        value = torch.where(known, p32.double(), torch.ones_like(lo))
        exact = known | one
        lo, hi = (
            torch.where(exact, value, lo).view(-1, n_col),
            torch.where(exact, value, hi).view(-1, n_col),
        )
        if targeted:
            contender = hi >= lo.max(1, keepdim=True).values
        else:
            contender = lo <= hi.min(1, keepdim=True).values
        contender = contender.flatten()
        need = ~known & (near | ~finite | (contender & ~one))
        return need, one & ~known, contender

    def _screened(self, image, cls, targeted, pix, palette, buf, clean):
        """Low precision for every candidate, fp32 for those that could change the map; returns the
        fp32 probability table (non-contenders at ±inf), the vulnerable pixels and the counts."""
        device, B = image.device, self.batch_size
        self.last_gate = None  # set by _skip_screen when this image's gate runs
        n_col = len(palette)
        n = len(pix) * n_col
        m_lo = torch.empty(n, dtype=torch.float64)
        u_lo = torch.empty(n, dtype=torch.float64)
        n_full = (n // B) * B  # the fp32 path's full batches; the rest is its last batch
        w = image.shape[-1]
        feats = None  # bf16_incremental: every full batch's fp32 activations at the switch
        if self.inc is not None:
            # the incremental values come after round 0 (its fp32 check batch supplies the clean cache)
            self.inc.prepare(image)
            if self.screen_dtype is not None and self.screen_compile and not self._compile_probed:
                # once per search: compile the screen now (on this image's batch-1 cache: the graph
                # is the same); a MobileNetV2 whose screen does not compile takes the exact path
                self._compile_probed = True
                self.inc.prepare_screen(self.screen_dtype, True)
                if (
                    not self.inc.screen_compiled()
                    and self.inc.arch.name not in EAGER_SCREENED_ARCHS
                ):
                    log.warning(
                        "bf16_incremental: the screen did not compile; this %s runs the exact "
                        "incremental path (its eager screen does not pay)",
                        self.inc.arch.name,
                    )
                    self.screen_dtype, self.path = None, "fp32_incremental"
            p_inc = torch.full((n,), math.nan)
            s_inc = torch.zeros(n, dtype=torch.bool)
            m_inc = torch.full((n,), math.nan, dtype=torch.float64)
            u_inc = torch.full((n,), math.nan, dtype=torch.float64)
            err = (0.0, 0.0)  # the random check measures the difference
            if self.screen_dtype is not None:
                hh, ww, cc = self.inc.clean_out.shape
                need_bytes = n_full * hh * ww * cc * 4
                if need_bytes <= FEATURE_CACHE_BYTES:
                    shape = (n_full, hh, ww, cc)
                    feats = getattr(self, "_feats", None)
                    if feats is None or tuple(feats.shape) != shape or feats.device != device:
                        # kept between images of the same size (its pages faulted in once)
                        feats = self._feats = torch.empty(shape, device=device)
                else:
                    log.info(
                        "bf16_incremental: the activations at the switch would take %.1f GiB (more than "
                        "%.1f): this image runs the exact incremental path",
                        need_bytes / 2**30,
                        FEATURE_CACHE_BYTES / 2**30,
                    )
            k = self.inc.rest_batch()
            chunk = (
                B if (B <= k or B % k) else k
            )  # the rest's chunk within a batch (Incremental.rest)

            def rest_exact(idx: torch.Tensor) -> int:
                """The fp32 rest on the kept activations of candidates ``idx`` (full batches), in
                chunks of the rest's own size within a batch (padded with repeats); returns the
                candidates run."""
                total = -(-len(idx) // chunk) * chunk
                idx = torch.cat([idx, idx[-1:].expand(total - len(idx))])
                spent = []  # thread CPU seconds (the screen gate's cost of a rest)

                def run(s):
                    t0 = time.thread_time()
                    j = idx[s : s + chunk]
                    z = self.inc.rest(feats[j.to(device)].permute(0, 3, 1, 2))
                    p32[j] = z.softmax(1)[:, cls].float().cpu()
                    pred = z.argmax(1).cpu()
                    succ[j] = (pred == cls) if targeted else (pred != cls)
                    m32[j], u32[j] = _decision(z, cls, targeted)
                    spent.append(time.thread_time() - t0)

                _in_workers(run, list(range(0, total, chunk)), device)
                cost = self._cost(self._rest_cost, feats)
                cost[0] += sum(spent)
                cost[1] += total
                return total
        else:
            for start in range(0, n, B):
                idx = torch.arange(start, min(start + B, n), device=device)
                with torch.autocast(device.type, dtype=self.low):
                    z = self.model(_candidates(buf.get(), image, pix, palette, idx)).float()
                m_lo[start : start + len(idx)], u_lo[start : start + len(idx)] = _decision(
                    z, cls, targeted
                )
            with torch.autocast(device.type, dtype=self.low):
                z = self.model(image[None]).float()
            err = self._observe(
                *_decision(z, cls, targeted), *_decision(clean.float(), cls, targeted)
            )
        known = torch.zeros(n, dtype=torch.bool)
        p32 = torch.full((n,), math.nan)
        m32 = torch.full((n,), math.nan, dtype=torch.float64)
        u32 = torch.full((n,), math.nan, dtype=torch.float64)
        succ = torch.zeros(n, dtype=torch.bool)
        groups = [
            (lo, hi, size) for lo, hi, size in ((0, n_full, B), (n_full, n, n - n_full)) if hi > lo
        ]
        gen = self._gen
        n_check = (
            INCREMENTAL_CHECK if self.inc is not None else max(self.screen_check, MIN_RANDOM_CHECK)
        )
        n_fp32, n_rest, rounds, fell_back, exact = 0, 0, 0, False, False
        skipped = (
            False  # bf16_incremental: the gate sent the image's other batches to the exact path
        )
        gated = torch.zeros(n, dtype=torch.bool)  # ... these candidates
        probe = []  # the gate's probe: its batches' starts ...
        in_probe = torch.zeros(n, dtype=torch.bool)  # ... and candidates
        forced = torch.zeros(
            n, dtype=torch.bool
        )  # bf16_incremental's random sample, if full passes run it
        while True:
            dm, du = self._band()
            need, _, _ = self._needed(m_lo, u_lo, known, p32, n_col, targeted, dm, du)
            if self.inc is not None and rounds == 0:
                need = torch.zeros_like(
                    need
                )  # incremental: round 0 is the random check alone, in every batch size
            if rounds == 1:
                need |= forced & ~known
            if rounds >= SCREEN_ROUNDS:
                need, fell_back = ~known, True
            if not need.any() and rounds > 0:  # round 0 always runs the random check
                break
            if feats is not None and exact:  # the fp32 rest on the kept cone activations decides
                sel = need.nonzero().squeeze(1)  # all in full batches: the last one is known
                n_rest += rest_exact(sel)
                known[sel] = True
                e = self._observe(m_lo[sel], u_lo[sel], m32[sel], u32[sel])
                err = (max(err[0], e[0]), max(err[1], e[1]))
                rounds += 1
                continue
            for g, (g_lo, g_hi, size) in enumerate(groups):
                sel = need[g_lo:g_hi].nonzero().squeeze(1) + g_lo
                check = (
                    0
                    if rounds > 0
                    else (
                        n_check
                        if g == 0 and self.inc is None
                        else min(n_check, g_hi - g_lo)
                        if self.inc is not None
                        else 0
                    )
                )
                if len(sel) + check == 0:
                    continue
                total = -(-(len(sel) + check) // size) * size
                pool = (~known[g_lo:g_hi] & ~need[g_lo:g_hi]).nonzero().squeeze(1) + g_lo
                fill = pool[torch.randperm(len(pool), generator=gen)[: total - len(sel)]]
                order = torch.cat([sel, fill]).sort().values
                if (
                    len(order) < total
                ):  # not enough candidates left: repeat one (its result is the same)
                    order = torch.cat([order, order[-1:].expand(total - len(order))])

                def full(s, order=order, size=size, p32=p32, succ=succ, m32=m32, u32=u32):
                    idx = order[s : s + size]
                    logits = self.model(_candidates(buf.get(), image, pix, palette, idx.to(device)))
                    p32[idx] = logits.softmax(1)[:, cls].float().cpu()
                    pred = logits.argmax(1).cpu()
                    succ[idx] = (pred == cls) if targeted else (pred != cls)
                    m32[idx], u32[idx] = _decision(logits, cls, targeted)

                starts = list(range(0, total, size))
                if self.inc is not None and rounds == 0 and g_hi == n_full:
                    # the clean cache from the first batch, at the fp32 path's batch size and in one
                    # thread, as the fp32 path runs it; taken from every other candidate where it can
                    # be, so the rest check it independently. Alone: the recording hooks must see
                    # this batch only.
                    idx = order[:size]
                    p = pix[idx.to(device) // n_col]
                    prefer = torch.arange(len(idx)) % 2 == 0
                    with self.inc.recording(p // w, p % w, prefer), _one_thread(device):
                        full(0)
                    starts = starts[1:]
                _in_workers(full, starts, device)
                n_fp32 += total
                known[order] = True
            if self.inc is not None and rounds == 0:
                # fp32 on the changed cone (pixelrobust.incremental), in the fp32 path's full batches
                # (none when the check already covered them all); its last batch ran whole in fp32
                # above, so its values are the fp32 ones
                all_checked = bool(known[:n_full].all())
                if feats is not None:  # after the recording: the clean cache the check batch gave
                    self.inc.prepare_screen(self.screen_dtype, self.screen_compile)

                screen_seconds = []  # thread CPU seconds of the screens (and the kept activations' copy)

                def evaluate(start, screen=True, spent=screen_seconds):
                    idx = torch.arange(start, start + B, device=device)
                    p = pix[idx // n_col]
                    if feats is not None and screen:  # the cone in fp32, kept; the rest screened
                        f = self.inc.features_at_switch(p // w, p % w, palette[idx % n_col])
                        t0 = time.thread_time()
                        feats[start : start + B] = f.permute(0, 2, 3, 1)
                        z = self.inc.screen(f, self.screen_dtype)
                        m_lo[start : start + B], u_lo[start : start + B] = _decision(
                            z, cls, targeted
                        )
                        spent.append(time.thread_time() - t0)
                        return
                    z = self.inc(p // w, p % w, palette[idx % n_col])  # exact (the gate's too)
                    p_inc[start : start + B] = z.softmax(1)[:, cls].float().cpu()
                    pred = z.argmax(1).cpu()
                    s_inc[start : start + B] = (pred == cls) if targeted else (pred != cls)
                    m_lo[start : start + B], u_lo[start : start + B] = _decision(z, cls, targeted)

                starts = list(range(0, 0 if all_checked else n_full, B))
                if (
                    feats is not None
                    and self.screen_gate is not None
                    and len(starts) >= SCREEN_GATE_MIN_BATCHES
                    and B % n_col == 0  # the probe's batches hold whole pixels (contenders)
                ):
                    # the screen gate: a random SCREEN_GATE_PROBE-th of the batches screened first,
                    # the others screened only if the probe predicts that the screen pays
                    probe = self._probe(starts, B, known)
                    for s_ in probe:
                        in_probe[s_ : s_ + B] = True
                    _in_workers(evaluate, probe, device)
                    tables = known, m_lo, u_lo, m32, u32, p32
                    skipped = self._skip_screen(
                        probe, (B, n_full, n_col, targeted), tables, sum(screen_seconds), feats
                    )
                    done = set(probe)
                    starts = [s_ for s_ in starts if s_ not in done]
                if skipped:
                    for s_ in starts:
                        gated[s_ : s_ + B] = True
                    _in_workers(lambda s_: evaluate(s_, False), starts, device)
                else:
                    _in_workers(evaluate, starts, device)
                if feats is not None and screen_seconds:  # the screen gate's pooled S
                    cost = self._cost(self._screen_cost, feats)
                    cost[0] += sum(screen_seconds)
                    cost[1] += len(screen_seconds) * B
                fp32 = torch.ones(n, dtype=torch.bool) if all_checked else torch.arange(n) >= n_full
                m_lo[fp32], u_lo[fp32] = m32[fp32], u32[fp32]
                p_inc[fp32], s_inc[fp32] = p32[fp32], succ[fp32]
                if feats is not None and not all_checked:
                    # the fp32 rest on the screened checked candidates' kept activations, into
                    # copies of the tables (the full passes' values stay for the comparison
                    # below); the gated ones are checked on the exact path's own values
                    chk = (known & (torch.arange(n) < n_full) & ~gated).nonzero().squeeze(1)
                    saved = p32.clone(), succ.clone(), m32.clone(), u32.clone()
                    if len(chk):
                        n_rest += rest_exact(chk)
                    p_inc[chk], s_inc[chk], m_inc[chk], u_inc[chk] = (
                        p32[chk],
                        succ[chk],
                        m32[chk],
                        u32[chk],
                    )
                    p32, succ, m32, u32 = saved
                    m_inc[gated], u_inc[gated] = m_lo[gated], u_lo[gated]
                else:
                    m_inc, u_inc = m_lo, u_lo
            e = self._observe(m_lo[known], u_lo[known], m32[known], u32[known])
            err = (max(err[0], e[0]), max(err[1], e[1]))
            if (
                self.inc is not None
                and rounds == 0
                and self.inc.uncovered == 0  # else unchecked candidates read batch-1 values
                and self._reproduces(
                    known
                    & (torch.arange(n) < n_full),  # the incremental values checked against fp32
                    m_inc,
                    u_inc,
                    p_inc,
                    s_inc,
                    m32,
                    u32,
                    p32,
                    succ,
                )
            ):
                exact = True
                if feats is None:
                    # every checked candidate's incremental result is the fp32 result bit for bit: take them all
                    p32, succ = torch.where(known, p32, p_inc), torch.where(known, succ, s_inc)
                    m32, u32 = torch.where(known, m32, m_lo), torch.where(known, u32, u_lo)
                    known = torch.ones_like(known)
                elif skipped:
                    # bf16_incremental, gated: the exact path's values (just checked) for the gated
                    # batches, the fp32 rest for every candidate of the probe's (their screen's
                    # errors observed): every candidate known, no band
                    if not bool((known & in_probe).any()):
                        # no checked candidate in the probe (p = (7/8)^64 at batch 64): the check
                        # did not see the fp32 rest on kept activations, so the probe takes the
                        # exact path too, whose values it did see
                        _in_workers(lambda s_: evaluate(s_, False), probe, device)
                        gated |= in_probe
                    g = gated.nonzero().squeeze(1)
                    p32[g], succ[g], m32[g], u32[g] = p_inc[g], s_inc[g], m_lo[g], u_lo[g]
                    known[g] = True
                    n_rest += len(g)
                    left = (~known[:n_full]).nonzero().squeeze(1)
                    if len(left):
                        n_rest += rest_exact(left)
                        known[left] = True
                        e = self._observe(m_lo[left], u_lo[left], m32[left], u32[left])
                        err = (max(err[0], e[0]), max(err[1], e[1]))
                else:
                    # bf16_incremental: the fp32 rest re-evaluates what the screen's band needs. The
                    # band's random sample first: INCREMENTAL_SCREEN_SAMPLE random candidates at
                    # least, the checked ones counted, the rest by the fp32 rest (exact: just
                    # checked), their errors observed
                    extra = self._screen_sample(known, n_full, gen)
                    if len(extra):
                        n_rest += rest_exact(extra)
                        known[extra] = True
                        e = self._observe(m_lo[extra], u_lo[extra], m32[extra], u32[extra])
                        err = (max(err[0], e[0]), max(err[1], e[1]))
            elif feats is not None and rounds == 0:
                # bf16_incremental whose fp32 rest failed the check: the screen's band still needs
                # its random sample; full fp32 passes evaluate it in the next round. A gated image:
                # every screened candidate (the probe's), as its sample would mostly land on the
                # gated batches, whose exact-path values the check measured already
                forced[
                    (in_probe & ~known) if skipped else self._screen_sample(known, n_full, gen)
                ] = True
            rounds += 1
        dm, du = self._band()
        need, one, contender = self._needed(m_lo, u_lo, known, p32, n_col, targeted, dm, du)
        value = torch.where(one, torch.ones_like(p32), p32)
        worst = math.inf if not targeted else -math.inf
        value = torch.where(contender, value, torch.full_like(value, worst))
        if need.any() or torch.isnan(value).any():
            raise RuntimeError(
                "screened exhaustive search: a contender was left without an fp32 value (a bug)"
            )
        vuln = succ.view(-1, n_col).any(1)
        if fell_back:
            log.info(
                "screened exhaustive search fell back to fp32 for all %d candidates of an image (error seen %.3g, %.3g)",
                n,
                *self.seen_error,
            )
        if self.inc is not None:
            log.debug(
                "incremental map: %s, %d full fp32 passes and %d fp32 rests of %d",
                "bit-exact" if exact else "banded",
                n_fp32,
                n_rest,
                n,
            )
        return (
            value.view(-1, n_col),
            vuln,
            {
                "n_fp32": n_fp32,
                "n_rest": n_rest,
                "screen_error": max(err),
                "bit_exact": exact,
                "screen_skipped": skipped,
            },
        )

    def _probe(self, starts: list, B: int, known: torch.Tensor) -> list:
        """The screen gate's probe: a random ``1 / SCREEN_GATE_PROBE`` of the full batches ``starts``
        (at least one; this search's generator), in order. Random, not every k-th: with batch 64
        and 32-pixel rows every 8th batch is one strip of the image (a referee, session s42: its
        share of rests differed from the image's by up to 0.12, a random eighth's by up to 0.06).
        ``known`` (the checked candidates) is not used here; a test picks batches by it."""
        k = max(1, len(starts) // SCREEN_GATE_PROBE)
        pick = torch.randperm(len(starts), generator=self._gen)[:k].sort().values
        return [starts[int(i)] for i in pick]

    def _skip_screen(self, probe, shape, tables, spent: float, feats) -> bool:
        """The screen gate (ours, session s42): whether the screen would cost more than it saves on
        this image, predicted from its probe (the screened batches ``probe``). Per candidate, the
        screened path costs the screen ``S`` and, for the share ``f`` of candidates the band sends
        to the fp32 rest (the probe's share under the band so far, after its checked candidates'
        errors are observed) plus the band's random sample ``s``, the rest ``R``; the exact path
        the rest alone. Skip when ``S / R + f + s (1 - f)`` exceeds ``screen_gate``. ``S``: this
        search's screens of images of this size so far and the probe's (thread CPU time per
        candidate, pooled: they cost the same on every image of a size, and one probe's timing is
        noisy); ``R``: this search's fp32 rests of this size so far, or on its first image of the
        size one batch per worker stream, timed after an untimed warm-up run of it (the probe's
        first batches, one single-threaded stream per thread, beside each other, as the rests and
        the screens run; a cold first batch was timed up to 37 % high, session s43). ``f`` is the
        image's own signal. A choice of speed only: either path gives the fp32 map.
        ``shape``: (batch size, candidates in full batches, colours, targeted); ``tables``: the
        search's (known, m_lo, u_lo, m32, u32, p32); ``spent``: the probe's screen seconds."""
        B, n_full, n_col, targeted = shape
        known, m_lo, u_lo, m32, u32, p32 = tables
        device = feats.device
        sel = torch.cat([torch.arange(s, s + B) for s in probe])
        chk = sel[known[sel]]  # the probe's full-pass checks: the screen's error now
        if len(chk):
            self._observe(m_lo[chk], u_lo[chk], m32[chk], u32[chk])
        dm, du = self._band()
        need = self._needed(m_lo[sel], u_lo[sel], known[sel], p32[sel], n_col, targeted, dm, du)[0]
        f = float(need.float().mean())
        s = min(1.0, self._sample_left(known, n_full) / max(1, n_full - int(known[:n_full].sum())))
        cost = self._cost(self._rest_cost, feats)
        if cost[1] == 0:
            # the first image of this size: the rest timed on the probe's first batches, one per
            # worker stream, beside each other as the rests and the probe's screens run
            timed = []

            def one(s0):
                f0 = feats[s0 : s0 + B].permute(0, 3, 1, 2)
                self.inc.rest(f0)  # warm-up, untimed
                t0 = time.thread_time()
                self.inc.rest(f0)
                timed.append(time.thread_time() - t0)

            _in_workers(one, probe[: max(1, torch.get_num_threads())], device)
            rest = sum(timed) / (len(timed) * B)
        else:
            rest = cost[0] / cost[1]
        pooled = self._cost(self._screen_cost, feats)
        ratio = ((pooled[0] + spent) / (pooled[1] + len(sel))) / max(rest, 1e-12)
        est = ratio + f + s * (1 - f)
        skip = est > self.screen_gate
        self.last_gate = {
            "estimate": est,
            "screen_over_rest": ratio,
            "need": f,
            "sample": s,
            "skip": skip,
        }
        log.debug("bf16_incremental screen gate: %s", self.last_gate)
        return skip

    @staticmethod
    def _cost(table: dict, feats: torch.Tensor) -> list:
        """``table``'s [thread CPU seconds, candidates] for images of ``feats``' size (keyed by the
        shape of the activations at the switch; [0.0, 0] until one is added)."""
        return table.setdefault(tuple(feats.shape[1:]), [0.0, 0])

    def _screen_sample(self, known, n_full: int, gen) -> torch.Tensor:
        """bf16_incremental's random sample for its band: candidates of the full batches not yet
        evaluated, so that with the evaluated ones there are ``max(screen_check,
        INCREMENTAL_SCREEN_SAMPLE)``."""
        pool = (~known[:n_full]).nonzero().squeeze(1)
        return pool[torch.randperm(len(pool), generator=gen)[: self._sample_left(known, n_full)]]

    def _sample_left(self, known, n_full: int) -> int:
        """How many random candidates :meth:`_screen_sample` adds to the evaluated ones."""
        return max(0, max(self.screen_check, INCREMENTAL_SCREEN_SAMPLE) - int(known[:n_full].sum()))

    @staticmethod
    def _reproduces(known, m_lo, u_lo, p_inc, s_inc, m32, u32, p32, succ) -> bool:
        """Whether the incremental results of the fp32-checked candidates equal theirs bit for bit
        (margin, log-odds, probability and success), in every batch size checked."""
        k = known
        return bool(
            k.any()
            and torch.equal(m_lo[k], m32[k])
            and torch.equal(u_lo[k], u32[k])
            and torch.equal(p_inc[k], p32[k])
            and torch.equal(s_inc[k], succ[k])
        )


@dataclass
class RankedResult:
    success: bool
    pixel: tuple[
        int, int
    ]  # (row, col) of the first successful candidate (else the best one evaluated)
    colour: (
        np.ndarray
    )  # its RGB in [0, 1] (a palette colour; any colour when the colour stage found it)
    p_true: float  # its true-class (targeted: target) probability
    n_evals: int  # candidate evaluations (the prior's one forward and backward pass not included)
    rank: int  # how many candidates were evaluated before it: its position in the prior's order, or
    #            past the budget when a later stage found it (-1 when nothing succeeded)
    refined: bool = False  # found by the neighbourhood or the colour stage


class RankedSearch:
    """Best-first one-pixel search (ours): the candidates of :class:`ExhaustiveSearch` (every allowed
    pixel × every palette colour), evaluated in the order of a prior, in batches, until the first
    success or ``max_evals`` candidates.

    Priors: ``gradient`` (white-box) orders candidates by the first-order estimate of how much they
    raise the margin loss, ∇ₓL · (colour − x) at the pixel, with L = max_{j≠y} z_j − z_y
    (targeted: z_t − max_{j≠t} z_j), from one forward and backward pass per image; ``raster``
    (black-box) takes pixels row by row, colours in palette order. With ``max_evals=None`` the
    search is complete: it succeeds exactly when the exhaustive map has a vulnerable pixel, and only
    stops sooner. With a budget it trades that guarantee for time (the benchmark measures how much).

    Neighbourhood stage (``refine_pixels`` > 0, used only when a budget ended the prior's stage
    without success): the ``refine_pixels`` pixels whose best evaluated colour brought the
    true-class probability lowest (targeted: the target's highest) seed it; every candidate not yet
    evaluated within ``refine_radius`` pixels (Chebyshev) of a seed is evaluated, seed by seed (best
    first), the window in raster order, colours in palette order, until the first success. It uses
    what the first stage measured where the first-order prior is wrong (a pixel whose neighbours'
    colours already moved the prediction), and adds at most
    ``refine_pixels × (2 · refine_radius + 1)² × colours`` evaluations.

    Colour stage (``colour_steps`` > 0, after a neighbourhood stage without success): the seeds are
    picked again, now with the neighbourhood stage's evaluations counted, and every pixel of their
    windows starts from its best palette colour and takes ``colour_steps`` signed-gradient
    steps of size ``colour_step`` on its own RGB (clipped to [0, 1]) that raise the margin loss,
    all pixels in one batch per step; success is checked at every step. It reaches colours off the
    palette, where a decision boundary passes between the corners (evaluations: one forward and
    backward pass per window pixel and step).
    """

    PRIORS = ("gradient", "raster")

    def __init__(
        self,
        model: torch.nn.Module,
        palette: str | list = "corners",
        prior: str = "gradient",
        max_evals: int | None = None,
        batch_size: int = 256,
        refine_pixels: int = 0,
        refine_radius: int = 1,
        colour_steps: int = 0,
        colour_step: float = 0.1,
    ):
        if prior not in self.PRIORS:
            raise ConfigError(f"ranked search prior must be one of {self.PRIORS}, got {prior!r}")
        if max_evals is not None and max_evals < 1:
            raise ConfigError(
                f"ranked search max_evals must be a positive number of candidates (or None for all), got {max_evals}"
            )
        if refine_pixels < 0 or refine_radius < 0:
            raise ConfigError(
                f"ranked search refine_pixels and refine_radius must be >= 0, got {refine_pixels} and {refine_radius}"
            )
        self.model, self.prior = model, prior
        self.palette = make_palette(palette)
        self.max_evals = None if max_evals is None else int(max_evals)
        self.batch_size = int(batch_size)
        if colour_steps < 0 or not 0 < colour_step <= 1:
            raise ConfigError(
                f"ranked search colour_steps must be >= 0 and colour_step in (0, 1], got {colour_steps} and {colour_step}"
            )
        self.refine_pixels, self.refine_radius = int(refine_pixels), int(refine_radius)
        self.colour_steps, self.colour_step = int(colour_steps), float(colour_step)

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> list[RankedResult]:
        _check_images(images)
        device = model_device(self.model)
        n, _, h, w = images.shape
        images, labels = images.to(device), labels.to(device)
        targets = None if targets is None else targets.to(device)
        masks = torch.ones(n, h, w, dtype=torch.bool) if masks is None else masks.bool().cpu()
        grads = self._gradients(images, labels, targets) if self.prior == "gradient" else None
        results = []
        for i in range(n):
            pix = _allowed_pixels(masks[i]).to(device)
            order = self._order(images[i], pix, None if grads is None else grads[i])
            results.append(
                self._search(
                    images[i], labels[i], None if targets is None else targets[i], pix, order
                )
            )
        return results

    def _gradients(self, images, labels, targets) -> torch.Tensor:
        """∂L/∂x of the margin loss (P2's attack objective), one pass for all images; targeted: the
        negated margin of the target."""
        with torch.enable_grad():
            if targets is None:
                return loss_gradient(self.model, images, labels, "margin")
            return -loss_gradient(self.model, images, targets, "margin")

    def _order(self, image, pix, grad) -> torch.Tensor:
        """Candidate indices p = k * n_col + colour (k: position in ``pix``), best first."""
        n_col = len(self.palette)
        n_cand = len(pix) * n_col
        if grad is None:
            return torch.arange(n_cand, device=image.device)
        c = image.shape[0]
        x = image.reshape(c, -1)[:, pix]  # c × K
        g = grad.reshape(c, -1)[:, pix]
        delta = self.palette.to(image.device)[:, :, None] - x[None]  # n_col × c × K
        score = (g[None] * delta).sum(1).T.reshape(-1)  # K × n_col, flattened
        return score.argsort(descending=True, stable=True)

    def _window_pixels(self, fit: torch.Tensor, pix: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Positions k (into ``pix``) of the allowed pixels in the seeds' windows: seed by seed (best
        first), raster order within a window, each pixel once."""
        device, n_col, r = pix.device, len(self.palette), self.refine_radius
        per_pixel = fit.view(len(pix), n_col).min(1).values  # inf where no colour was evaluated
        seeds = per_pixel.argsort(stable=True)[: self.refine_pixels]
        seeds = seeds[torch.isfinite(per_pixel[seeds])]
        position = torch.full((h * w,), -1, dtype=torch.long, device=device)  # image pixel -> k
        position[pix] = torch.arange(len(pix), device=device)
        off = torch.arange(-r, r + 1, device=device)
        rows = (pix[seeds] // w)[:, None, None] + off[
            None, :, None
        ]  # seed × window row × window col
        cols = (pix[seeds] % w)[:, None, None] + off[None, None, :]
        rows, cols = torch.broadcast_tensors(rows, cols)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        k = position[(rows[inside] * w + cols[inside])]
        return _first_occurrences(k[k >= 0])

    def _neighbourhood(
        self, fit: torch.Tensor, done: torch.Tensor, pix: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        """The neighbourhood stage's candidates, in evaluation order (see the class docstring)."""
        n_col = len(self.palette)
        k = self._window_pixels(fit, pix, h, w)
        cand = (k[:, None] * n_col + torch.arange(n_col, device=pix.device)).flatten()
        return cand[~done[cand]]

    def _colour_stage(
        self, image, label, target, pix, k, start
    ) -> tuple[int, np.ndarray | None, float | None, int]:
        """Signed-gradient steps on the RGB of pixels ``pix[k]`` from colours ``start`` (see the
        class docstring): (hit index into k, its colour, its probability, evaluations) or
        (-1, None, None, evaluations)."""
        w = image.shape[-1]
        cls = int(target if target is not None else label)
        where = pix[k]
        rows, cols = where // w, where % w
        colour = start.clone()
        n_evals = 0
        for step in range(self.colour_steps + 1):
            hits, grads, probs = [], [], []
            for s0 in range(0, len(k), self.batch_size):
                sl = slice(s0, s0 + self.batch_size)
                col = colour[sl].clone().requires_grad_(True)
                batch = image.expand(len(col), -1, -1, -1).clone()
                batch[torch.arange(len(col), device=image.device), :, rows[sl], cols[sl]] = col
                with torch.enable_grad():
                    logits = self.model(batch)
                    z = logits.gather(1, torch.full((len(col), 1), cls, device=image.device))[:, 0]
                    other = logits.scatter(
                        1, torch.full((len(col), 1), cls, device=image.device), -float("inf")
                    ).amax(1)
                    loss = (other - z) if target is None else (z - other)  # raise it to succeed
                    (g,) = torch.autograd.grad(loss.sum(), col)
                n_evals += len(col)
                probs.append(logits.detach().softmax(1)[:, cls])
                hits.append(
                    _success(
                        logits.detach(),
                        label.expand(len(col)),
                        None if target is None else target.expand(len(col)),
                    )
                )
                grads.append(g)
            succ = torch.cat(hits)
            if succ.any():
                j = int(succ.nonzero()[0])
                return (
                    j,
                    colour[j].detach().cpu().numpy().copy(),
                    float(torch.cat(probs)[j]),
                    n_evals,
                )
            if step < self.colour_steps:
                colour = (colour + self.colour_step * torch.cat(grads).sign()).clamp(0, 1)
        return -1, None, None, n_evals

    def _search(self, image, label, target, pix, order) -> RankedResult:
        device = image.device
        c, h, w = image.shape
        palette = self.palette.to(device)
        n_col = len(palette)
        cls = int(target if target is not None else label)
        budget = len(order) if self.max_evals is None else min(self.max_evals, len(order))
        buf = torch.empty(self.batch_size, c, h, w, device=device)
        fit_tab = torch.full(
            (len(order),), float("inf"), device=device
        )  # p_true (targeted: -p_target)
        done = torch.zeros(len(order), dtype=torch.bool, device=device)
        state = {"n_evals": 0, "hit": -1, "cand": -1}

        @torch.inference_mode()
        def evaluate(seq: torch.Tensor) -> bool:
            for start in range(0, len(seq), self.batch_size):
                idx = seq[start : start + self.batch_size]
                b = len(idx)
                logits = self.model(_candidates(buf, image, pix, palette, idx))
                p = logits.softmax(1)[:, cls]
                fit_tab[idx] = p if target is None else -p
                done[idx] = True
                succ = _success(
                    logits, label.expand(b), None if target is None else target.expand(b)
                )
                if succ.any():
                    j = int(succ.nonzero()[0])
                    state["hit"], state["cand"] = state["n_evals"] + j, int(idx[j])
                    state["n_evals"] += b
                    return True
                state["n_evals"] += b
            return False

        refined = False
        if not evaluate(order[:budget]) and self.refine_pixels and budget < len(order):
            refined = evaluate(self._neighbourhood(fit_tab, done, pix, h, w))
            if not refined and self.colour_steps:
                k = self._window_pixels(fit_tab, pix, h, w)
                start = palette[fit_tab.view(len(pix), n_col)[k].argmin(1)]
                j, colour, prob, n = self._colour_stage(image, label, target, pix, k, start)
                if j >= 0:
                    p = int(pix[k[j]])
                    rank = (
                        state["n_evals"] + n - len(k) + j
                    )  # the successful step's pixels evaluate in k's order
                    return RankedResult(
                        True, (p // w, p % w), colour, prob, state["n_evals"] + n, rank, True
                    )
                state["n_evals"] += n
        cand = state["cand"] if state["hit"] >= 0 else int(fit_tab.argmin())
        p = int(pix[cand // n_col])
        fit = float(fit_tab[cand])
        return RankedResult(
            state["hit"] >= 0,
            (p // w, p % w),
            palette[cand % n_col].cpu().numpy().copy(),
            fit if target is None else -fit,
            state["n_evals"],
            state["hit"],
            refined,
        )


@dataclass
class DEResult:
    success: bool
    pixel: tuple[int, int]  # (row, col) of the best candidate
    colour: np.ndarray  # RGB in [0, 1]
    p_true: float  # true-class (targeted: target) probability of the best candidate, in fp32
    n_evals: int
    generations: int
    n_fp32: int = (
        -1
    )  # candidate forward passes in fp32 (fp32 path: n_evals; bf16: re-evaluations, random checks
    #                   and the final fp32 evaluation of the best candidate)
    band_hits: int = 0  # bf16: candidates bf16 did not call a success that fp32 did (found only through the band)
    rejected: int = 0  # bf16: candidates bf16 called a success that fp32 did not (never reported)
    precision: str = (
        "fp32"  # the path that ran: "fp32" or "bf16" (CPU without native bf16, CUDA: fp32)
    )


DE_PRECISIONS = ("fp32", "bf16")
DE_CHECK = (
    32  # bf16 DE: random candidates per generation also evaluated in fp32 (the band's error bound)
)


class DifferentialEvolution:
    """Su et al.'s one-pixel DE, vectorised over the population and over images.

    A candidate is (position, r, g, b): the position is a real number in [0, K) floored to an
    index into the K allowed pixels, so a region-restricted search never leaves its region.
    Initial colours ~ N(0.5, 0.5) clipped to [0, 1] (Su et al.: N(128, 127) in 0..255), positions
    uniform. Mutation rand/1 (v = a + F (b − c)); with CR = 1 the trial is the mutant; genes out of
    bounds are redrawn uniformly (as scipy's differential_evolution does). A trial replaces its
    parent when its fitness (true-class probability; targeted: minus the target probability) is
    not worse. The search stops for an image as soon as any candidate succeeds.

    ``precision="bf16"`` (ours): the population's fitness comes from bf16 autocast logits (CPUs with
    native bf16, see :func:`low_precision_dtype`; elsewhere, CUDA included, the fp32 path runs), and
    success is decided in fp32 only: every candidate that bf16 calls a success, or whose bf16
    distance to success (untargeted ``z_y - max_{j != y} z_j``; targeted ``max_{j != t} z_j - z_t``)
    is within ``band`` × the largest |bf16 − fp32| difference of that distance seen so far, is
    re-evaluated in fp32, and only fp32 successes stop the search and are reported. The error bound
    comes from ``check`` random candidates per generation evaluated in both precisions (their own
    generator: the search's random stream is that of the fp32 path) and from every re-evaluation;
    the band widens (and more candidates are re-evaluated) until no new candidate falls in it.
    Re-evaluated candidates keep their fp32 fitness; the reported probability of an unbroken run's
    best candidate is re-evaluated in fp32 too. The search trajectory differs from the fp32 path's
    (selection compares bf16 fitnesses); every reported success is an fp32 success.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        popsize: int = 400,
        maxiter: int = 100,
        F: float = 0.5,
        CR: float = 1.0,
        seed: int = 0,
        batch_size: int | None = None,
        strategy: str = "rand1",
        precision: str = "fp32",
        band: float = 2.0,
        check: int = DE_CHECK,
    ):
        if popsize < 4:
            raise ConfigError(f"DE popsize must be at least 4, got {popsize}")
        if not 0 <= CR <= 1 or F <= 0:
            raise ConfigError(f"DE needs 0 <= CR <= 1 and F > 0, got CR={CR}, F={F}")
        self.model, self.popsize, self.maxiter, self.F, self.CR = (
            model,
            int(popsize),
            int(maxiter),
            float(F),
            float(CR),
        )
        if strategy not in ("rand1", "best1"):
            raise ConfigError(
                f"DE strategy must be 'rand1' (Su et al.) or 'best1' (scipy's default), got {strategy!r}"
            )
        if precision not in DE_PRECISIONS:
            raise ConfigError(
                f"onepixel.de.precision must be one of {DE_PRECISIONS}, got {precision!r}"
            )
        if not band >= 1:
            raise ConfigError(
                f"the bf16 DE's band (multiple of the largest bf16 error seen) must be >= 1, got {band!r}"
            )
        if int(check) < 1:
            raise ConfigError(
                f"the bf16 DE needs at least 1 random fp32 check per generation, got {check!r}"
            )
        self.seed = int(seed)
        self.batch_size = batch_size
        self.strategy = strategy
        self.precision, self.band, self.check = precision, float(band), int(check)
        self.low = low_precision_dtype(model_device(model)) if precision == "bf16" else None
        # the model the bf16 fitness comes from (batch norm folded; fp32 of ``model`` decides success). Not
        # used by the screened map: there the folded copy's larger bf16 error (0.31-0.44 against 0.22-0.36 on
        # ResNet-20's confident images) widened the band about as much as the faster pass saved (docs/p1.md)
        self.scorer, self.scorer_note = (
            low_precision_scorer(model) if self.low is not None else (model, "")
        )
        self.seen_error = 0.0  # bf16: largest |bf16 - fp32| distance to success seen in this call

    @property
    def path(self) -> str:
        return "bf16" if self.low is not None else "fp32"

    def describe(self) -> str:
        if self.low is not None:
            return (
                f"bf16 autocast fitness, fp32 decides success (band {self.band:g} x the largest bf16 error seen, "
                f"{self.check} random fp32 checks per generation; low-precision model: {self.scorer_note})"
            )
        if self.precision != "fp32":
            return f"fp32 (onepixel.de.precision {self.precision} asked, but {model_device(self.model)} has no native bf16 or no tested low-precision path)"
        return "fp32"

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> list[DEResult]:
        _check_images(images)
        device = model_device(self.model)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        self._check_gen = torch.Generator(device="cpu").manual_seed(self.seed + 1)
        self.seen_error = 0.0  # per call: a run's results do not depend on earlier calls
        n, c, h, w = images.shape
        images = images.to(device)
        labels = labels.to(device)
        targets = None if targets is None else targets.to(device)
        masks = torch.ones(n, h, w, dtype=torch.bool) if masks is None else masks.bool().cpu()
        allowed = [_allowed_pixels(m) for m in masks]
        k = torch.tensor([len(a) for a in allowed], dtype=torch.float32)
        P = self.popsize
        counts = torch.zeros(
            n, 3, dtype=torch.long
        )  # per image: fp32 evaluations, band hits, rejected
        # population: n × P × 4 (position in [0, K), r, g, b in [0, 1])
        pop = torch.empty(n, P, 4)
        pop[..., 0] = torch.rand(n, P, generator=gen) * k[:, None]
        pop[..., 1:] = (torch.randn(n, P, 3, generator=gen) * 0.5 + 0.5).clamp(0, 1)
        fit, succ, exact = self._evaluate(images, labels, targets, allowed, pop, counts)
        n_evals = torch.full((n,), P, dtype=torch.long)
        done = succ.any(1)
        winner = torch.full((n, 4), float("nan"))  # the first successful candidate per image
        winner_fit = torch.full((n,), float("nan"))
        for i in done.nonzero().squeeze(1).tolist():
            j = int(succ[i].nonzero()[0])
            winner[i], winner_fit[i] = pop[i, j], fit[i, j]
        generations = torch.zeros(n, dtype=torch.long)
        for g in range(1, self.maxiter + 1):
            active = (~done).nonzero().squeeze(1)
            if len(active) == 0:
                break
            trial = self._mutate(pop[active], k[active], gen, fit[active])
            sub = counts[active]
            tf, ts, te = self._evaluate(
                images[active],
                labels[active],
                None if targets is None else targets[active],
                [allowed[i] for i in active.tolist()],
                trial,
                sub,
            )
            counts[active] = sub
            better = tf <= fit[active]
            pa, fa, ea = pop[active], fit[active], exact[active]
            pa[better], fa[better], ea[better] = trial[better], tf[better], te[better]
            pop[active], fit[active], exact[active] = pa, fa, ea
            n_evals[active] += P
            generations[active] = g
            for row, i in enumerate(active.tolist()):
                if ts[row].any():  # early stop: keep the successful trial, selected or not
                    j = int(ts[row].nonzero()[0])
                    winner[i], winner_fit[i] = trial[row, j], tf[row, j]
                    done[i] = True
        best = fit.argmin(1)
        # bf16: an unbroken run's best candidate gets its fp32 probability (successes are fp32 already)
        redo = [i for i in range(n) if not done[i] and not exact[i, best[i]]]
        if redo:
            idx = torch.tensor(redo)
            pf, ps, _ = self._evaluate(
                images[idx],
                labels[idx],
                None if targets is None else targets[idx],
                [allowed[i] for i in redo],
                pop[idx, best[idx]][:, None],
                None,
                fp32=True,
            )
            fit[idx, best[idx]] = pf[:, 0]
            counts[idx, 0] += 1
            for row in (
                ps[:, 0].nonzero().squeeze(1).tolist()
            ):  # an fp32 success the band missed: still an answer
                i = redo[row]
                winner[i], winner_fit[i], done[i] = pop[i, best[i]], fit[i, best[i]], True
                counts[i, 1] += 1
        results = []
        for i in range(n):
            if done[i]:
                cand, f = winner[i], float(winner_fit[i])
            else:
                j = int(best[i])
                cand, f = pop[i, j], float(fit[i, j])
            p = int(allowed[i][min(int(cand[0]), len(allowed[i]) - 1)])
            p_val = f if targets is None else -f
            n_fp32 = int(n_evals[i]) if self.low is None else int(counts[i, 0])
            results.append(
                DEResult(
                    bool(done[i]),
                    (p // w, p % w),
                    cand[1:].numpy().copy(),
                    p_val,
                    int(n_evals[i]),
                    int(generations[i]),
                    n_fp32,
                    int(counts[i, 1]),
                    int(counts[i, 2]),
                    self.path,
                )
            )
        return results

    def _mutate(
        self,
        pop: torch.Tensor,
        k: torch.Tensor,
        gen: torch.Generator,
        fit: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """rand/1: a + F (b − c); best/1: the image's best member + F (b − c); partners distinct from the member."""
        n, P, d = pop.shape
        # three distinct partners per member, all different from the member itself: the first three
        # of a random permutation of the other P - 1 members (indices >= own index shifted by one);
        # the three smallest of the random keys, in order: argsort's first three (ties aside), 7x cheaper
        r = torch.rand(n, P, P - 1, generator=gen).topk(3, dim=2, largest=False).indices
        r = r + (r >= torch.arange(P)[None, :, None]).long()
        a, b, c = (torch.gather(pop, 1, r[..., j : j + 1].expand(n, P, d)) for j in range(3))
        if self.strategy == "best1":
            a = pop[torch.arange(n), fit.argmin(1)][:, None].expand(n, P, d)
        mutant = a + self.F * (b - c)
        if self.CR < 1:
            cross = torch.rand(n, P, d, generator=gen) < self.CR
            cross[
                torch.arange(n)[:, None],
                torch.arange(P)[None, :],
                torch.randint(0, d, (n, P), generator=gen),
            ] = True
            mutant = torch.where(cross, mutant, pop)
        hi = torch.cat([k[:, None, None].expand(n, P, 1), torch.ones(n, P, 3)], dim=2)
        out = (mutant < 0) | (mutant >= hi)
        mutant[out] = torch.rand(int(out.sum()), generator=gen) * hi[out]
        return mutant

    def _logits(self, x: torch.Tensor, low: bool) -> torch.Tensor:
        bs = self.batch_size or len(x)
        model = self.scorer if low else self.model
        with torch.autocast(x.device.type, dtype=self.low, enabled=low):
            return torch.cat([model(x[s : s + bs]) for s in range(0, len(x), bs)]).float()

    def _evaluate(self, images, labels, targets, allowed, pop, counts, fp32: bool = False):
        """Fitness (lower is better), success (fp32) and whether the fitness is fp32, of every
        candidate: n × P each; ``counts`` (n × 3: fp32 evaluations, band hits, rejected) is updated."""
        n, P, _ = pop.shape
        c, h, w = images.shape[1:]
        device = images.device
        pos = torch.stack(
            [allowed[i][pop[i, :, 0].long().clamp(max=len(allowed[i]) - 1)] for i in range(n)]
        ).to(device)
        x = images[:, None].expand(n, P, c, h, w).reshape(n * P, c, h * w).clone()
        x[torch.arange(n * P, device=device), :, pos.flatten()] = (
            pop[..., 1:].reshape(n * P, 3).to(device)
        )
        x = x.view(n * P, c, h, w)
        lab = labels.repeat_interleave(P)
        tgt = None if targets is None else targets.repeat_interleave(P)
        cls = lab if tgt is None else tgt
        if self.low is None or fp32:
            logits = self._logits(x, False)
            succ = _success(logits, lab, tgt)
            exact = torch.ones(n * P, dtype=torch.bool)
        else:
            logits = self._logits(x, True)
            dist = _distance(logits, cls, tgt is not None)
            low_succ = _success(logits, lab, tgt)
            exact = torch.zeros(n * P, dtype=torch.bool, device=device)
            d32 = torch.full((n * P,), math.nan, device=device)
            n_check = min(self.check, n * P)
            todo = torch.randperm(n * P, generator=self._check_gen)[:n_check].to(device)
            while len(todo):  # fp32 for the checks, then for the band until it stops widening
                z = self._logits(x[todo], False)
                logits[todo] = z
                d32[todo] = _distance(z, cls[todo], tgt is not None)
                exact[todo] = True
                err = float((d32[todo] - dist[todo]).abs().max())
                self.seen_error = max(
                    self.seen_error, err if math.isfinite(err) else math.inf
                )  # NaN/inf: fp32 for all
                todo = (
                    ((low_succ | (dist <= self.band * self.seen_error)) & ~exact)
                    .nonzero()
                    .squeeze(1)
                )
            succ = _success(logits, lab, tgt) & exact  # success only where fp32 says so
            if counts is not None:
                img = torch.arange(n, device=device).repeat_interleave(P)
                for col, flag in ((0, exact), (1, succ & ~low_succ), (2, low_succ & ~succ)):
                    counts[:, col] += torch.bincount(img[flag], minlength=n).cpu()
            exact = exact.cpu()
        prob = logits.softmax(1)
        fit = (
            prob.gather(1, lab[:, None]).squeeze(1)
            if tgt is None
            else -prob.gather(1, tgt[:, None]).squeeze(1)
        )
        return fit.view(n, P).cpu(), succ.view(n, P).cpu(), exact.view(n, P).cpu()


def _in_workers(fn, items: list, device) -> None:
    """``fn(item)`` for every item (ours): on a CPU with ``torch.get_num_threads()`` > 1, in that
    many Python threads of one intra-op thread each, every thread taking every k-th item; else in
    order (on a CPU with one intra-op thread too, whatever the process's setting, so that every item
    runs the same way at any thread count). The incremental pass's many small operations keep two intra-op threads busy less well than
    two single-threaded streams (measured: bench/onepixel/run.py, docs/p1.md), and its batches are
    independent. The results do not depend on the thread count here: the fp32 check that decides
    whether they are taken compares them, computed this way, with the full pass bit for bit. A
    forward hook a user put on the model's later blocks fires in these threads (``threads`` batches
    are in flight at once, so peak memory grows with the thread count). When one item raises, or
    the caller is interrupted, the others stop after their current item and the error is raised."""
    threads = torch.get_num_threads()
    workers = min(threads, len(items)) if torch.device(device).type == "cpu" else 1
    if workers <= 1:
        with _one_thread(device):
            for item in items:
                fn(item)
        return
    errors, stop = [], threading.Event()

    def work(k):
        try:
            torch.set_num_threads(1)  # this thread's intra-op pool only (OpenMP: per thread)
            with torch.inference_mode():
                for item in items[k::workers]:
                    if stop.is_set():  # another worker failed, or the caller was interrupted
                        return
                    fn(item)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)
            stop.set()

    pool = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(workers)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        stop.set()  # an interrupt in the caller: the workers stop after their current item
        # the process-wide count new threads start from (each worker's own setting is its own)
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def _one_thread(device):
    """One intra-op thread for the block on a CPU (ours), as each :func:`_in_workers` worker runs:
    the exhaustive map's full fp32 passes all run this way, so that its numbers do not depend on the
    thread count (see :class:`ExhaustiveSearch`). Elsewhere (CUDA) nothing changes."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Buffers:
    """One candidate buffer (``batch`` × C × H × W) per thread: the exhaustive map's worker threads
    write their batches side by side."""

    def __init__(self, batch: int, shape: tuple, device):
        self.batch, self.shape, self.device = batch, shape, device
        self._local = threading.local()

    def get(self) -> torch.Tensor:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = torch.empty(self.batch, *self.shape, device=self.device)
        return buf


def _distance(logits: torch.Tensor, cls: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per candidate, how far it is from success in logits (success needs < 0; a tie is decided by
    ``argmax``): untargeted ``z_cls - max_{j != cls} z_j``, targeted ``max_{j != cls} z_j - z_cls``."""
    zc = logits.gather(1, cls[:, None]).squeeze(1)
    others = logits.scatter(1, cls[:, None], -math.inf).amax(1)
    return others - zc if targeted else zc - others


def _first_occurrences(v: torch.Tensor) -> torch.Tensor:
    """``v`` with repeated values dropped, first occurrences kept in order."""
    if len(v) == 0:
        return v
    uniq, inverse = torch.unique(v, return_inverse=True)
    first = torch.full(uniq.shape, len(v), device=v.device).scatter_reduce(
        0, inverse, torch.arange(len(v), device=v.device), "amin"
    )
    return v[first.sort().values]


def _allowed_pixels(mask: torch.Tensor) -> torch.Tensor:
    """Row-major indices of a mask's pixels; an empty mask is refused."""
    pix = mask.flatten().nonzero().squeeze(1)
    if len(pix) == 0:
        raise ValueError(
            "a pixel mask is empty: nothing to search (check the segmentation: an empty region?)"
        )
    return pix


def _candidates(
    buf: torch.Tensor,
    image: torch.Tensor,
    pix: torch.Tensor,
    palette: torch.Tensor,
    idx: torch.Tensor,
) -> torch.Tensor:
    """Candidates ``idx`` (p = k * n_colours + colour, k indexing the allowed pixels ``pix``) of one
    image, written into the first ``len(idx)`` slots of ``buf``."""
    b, n_col = len(idx), len(palette)
    out = buf[:b]
    out.copy_(image.expand_as(out))
    out.view(b, image.shape[0], -1)[torch.arange(b, device=buf.device), :, pix[idx // n_col]] = (
        palette[idx % n_col]
    )
    return out


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"one-pixel attacks take images shaped (N, 3, H, W) in [0, 1]; got {tuple(images.shape)}"
        )
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            "one-pixel attacks take images in [0, 1]; normalisation belongs inside the model wrapper"
        )

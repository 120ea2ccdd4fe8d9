"""Input-transformation defences (P3's defence table), each a model wrapper taking images in [0, 1].

Every defence wraps a classifier (:class:`pixelrobust.models.Classifier` or anything with the
same interface) and is itself called on images in [0, 1], returning one score row per image whose
argmax is the defended prediction. The randomised ones draw **per image** (every image its own λ,
shift, resize, noise or deflections), never from the global RNG. Where an image's randomness comes from:

* inside ``with defence.images(ids, draw)`` (evaluation): from a stable hash of (``seed``, image id,
  ``draw``), so an image's result does not depend on which images share its batch or chunk, and
  every call repeats it;
* inside ``with defence.images(ids)`` (no draw; adaptive crafting): from a hash of (``seed``, image
  id, the number of earlier calls on that image), fresh on every call as EOT needs, and still
  independent of the batch;
* otherwise (or when the batch does not match ``ids``, as when an attack passes a subset): from the
  defence's own stream, seeded at construction (``seed``) and re-seedable (:meth:`reseed`).

* :class:`StochasticPRM` — P3's defence: per image, one or more PRMs drawn at random, each after a
  random shift of 1–2 pixels (zero padded) that moves its lattice — by default drawn from the
  authors' shift set of that PRM's lattice (:data:`LATTICE_SHIFTS`) — with λ drawn from
  ``lambdas`` (authors' ``ACE.forward``). ``stochastic=False`` gives the deterministic PRM model the gray-box
  attacks are crafted on.
* :class:`RegionBased` — Cao & Gong (2017): ``samples`` points drawn uniformly from the hypercube
  of half-side ``radius`` around the image, majority vote. Output: log of the vote shares.
* :class:`Randomization` — Xie et al. (2018), as in the authors' code: per image one nearest-neighbour
  resize by a factor in ``scale``, then a random zero pad back to the input size.
* :class:`PixelDeflection` — Prakash et al. (2018): ``deflections`` single-channel pixel
  replacements by a random neighbour within ``window``, then BayesShrink wavelet denoising
  (σ = ``sigma``, soft threshold, YCbCr, Haar), batched in torch (equal to scikit-image's
  ``denoise_wavelet``, tested) or with scikit-image itself. Pixels are drawn uniformly unless a
  robust activation map is supplied (``rcam``: a callable image → H×W map in [0, 1]; pixels are
  then skipped with that probability, as in the original).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from skimage.restoration import denoise_wavelet
from torch import nn
from torch.nn import functional as F

from .prm import check_lattice
from .runtime import derive_seed

# The authors' per-version shift sets (branch nsml, submodules/ace.py ``shifts``, unet_v0..v5 = our
# lattices in this order), read as (row, column) shifts (dy, dx): so read, every shift moves pixels
# the lattice skips onto it. The authors' ``ACE.pad_shape`` applies each pair as (column, row)
# instead; for the anisotropic lattices that moves s2x1 / s1x2 along the axis they already read
# whole (``lattice_as_run`` reproduces that; docs/decisions.md).
_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
LATTICE_SHIFTS: dict[str, tuple[tuple[int, int], ...]] = {
    "s2": _NEIGHBOURS,
    "s2x1": ((1, 0), (-1, 0)),
    "s1x2": ((0, 1), (0, -1)),
    "k1x2_s2x4": _NEIGHBOURS + ((0, 2), (0, -2), (1, 2), (1, -2), (-1, 2), (-1, -2)),
    "k2x1_s4x2": _NEIGHBOURS + ((2, 0), (-2, 0), (2, 1), (-2, 1), (2, -1), (-2, -1)),
    "k2_s4": (
        (0, 1),
        (0, -1),
        (0, 2),
        (0, -2),
        (1, 1),
        (1, -1),
        (1, 2),
        (1, -2),
        (-1, 1),
        (-1, -1),
        (-1, 2),
        (-1, -2),
        (2, 1),
        (2, -1),
        (2, 2),
        (2, -2),
        (-2, 1),
        (-2, -1),
        (-2, 2),
        (-2, -2),
    ),
}
DEFAULT_SHIFTS = _NEIGHBOURS  # StochasticPRM's shifts when none are given: the s2 set
SHIFT_MODES = ("lattice", "lattice_as_run", "sizes", "none")


class _Randomised(nn.Module):
    def __init__(self, model: nn.Module, seed: int = 0):
        super().__init__()
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)
        self._ids: list[str] | None = None
        self._draw: int | None = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self._calls: dict[str, int] = {}

    @contextmanager
    def images(self, ids, draw: int | None = None):
        """Key the randomness of the calls inside to the images ``ids`` (module doc): with ``draw``, the
        same draw on every call; without, a fresh draw per call and image."""
        previous = self._ids, self._draw
        self._ids, self._draw = [str(i) for i in ids], None if draw is None else int(draw)
        try:
            yield self
        finally:
            self._ids, self._draw = previous

    def image_seeds(self, n: int) -> list[int]:
        """One seed per image of a batch of ``n`` (module doc)."""
        if self._ids is not None and len(self._ids) == n:
            if self._draw is not None:
                return [derive_seed(self.seed, i, "draw", self._draw) for i in self._ids]
            seeds = []
            for i in self._ids:
                c = self._calls.get(i, 0)
                self._calls[i] = c + 1
                seeds.append(derive_seed(self.seed, i, "call", c))
            return seeds
        if self._draw is not None:
            raise ValueError(
                f"a batch of {n} images inside images(ids, draw={self._draw}) with {len(self._ids)} ids: "
                "pass the ids of exactly the images classified"
            )
        return [int(v) for v in torch.randint(0, 2**62, (n,), generator=self.gen)]

    def generators(self, n: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in self.image_seeds(n)]


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the image content by (dy, dx) pixels, filling with zeros; same size."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


class StochasticPRM(_Randomised):
    """``f(x_k)`` with ``x_{i+1} = λ_i·PRM_i(s_i(x_i)) + (1 − λ_i)·s_i(x_i)`` for ``stacks`` random draws.

    ``shifts``: the (dy, dx) shifts ``s_i`` is drawn from, one list for every PRM, or per PRM a list
    (``prm_shifts``, aligned with ``prms``; the authors draw from the set of the drawn PRM's lattice).
    An empty list means no shift.
    """

    def __init__(
        self,
        classifier: nn.Module,
        prms: list[nn.Module],
        lambdas=(0.0, 0.5, 1.0),
        stacks=(1,),
        shifts=DEFAULT_SHIFTS,
        stochastic: bool = True,
        fixed_lambda: float = 1.0,
        seed: int = 0,
        prm_shifts=None,
    ):
        if not prms:
            raise ValueError("StochasticPRM needs at least one trained PRM")
        if any(not 0 <= lam <= 1 for lam in lambdas) or not 0 <= fixed_lambda <= 1:
            raise ValueError(f"λ values must lie in [0, 1], got {list(lambdas)} / {fixed_lambda}")
        if prm_shifts is not None and len(prm_shifts) != len(prms):
            raise ValueError(
                f"prm_shifts needs one shift list per PRM: {len(prm_shifts)} lists for {len(prms)} PRMs"
            )
        super().__init__(classifier, seed)
        self.prms = nn.ModuleList(prms)
        self.lambdas, self.stacks = [float(v) for v in lambdas], list(stacks)
        per_prm = prm_shifts if prm_shifts is not None else [shifts] * len(prms)
        self.prm_shifts = [[tuple(int(v) for v in s) for s in sl] for sl in per_prm]
        self.stochastic, self.fixed_lambda = stochastic, float(fixed_lambda)

    @staticmethod
    def _pick(seq, gen: torch.Generator):
        return seq[int(torch.randint(len(seq), (1,), generator=gen))]

    def plan(self, gen: torch.Generator) -> list[tuple[int, float, tuple[int, int]]]:
        """One image's draw: per pass (PRM index, λ, shift)."""
        out = []
        for _ in range(self._pick(self.stacks, gen)):
            i, lam = self._pick(range(len(self.prms)), gen), self._pick(self.lambdas, gen)
            out.append(
                (i, lam, self._pick(self.prm_shifts[i], gen) if self.prm_shifts[i] else (0, 0))
            )
        return out

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stochastic:
            return self.fixed_lambda * self.prms[0](x) + (1 - self.fixed_lambda) * x
        plans = [self.plan(g) for g in self.generators(len(x))]
        for p in range(max(len(plan) for plan in plans)):
            rows = [j for j, plan in enumerate(plans) if len(plan) > p]
            xs = torch.cat([shift(x[j : j + 1], *plans[j][p][2]) for j in rows])
            out = xs
            for i in sorted(
                {plans[j][p][0] for j in rows if plans[j][p][1] > 0}
            ):  # λ = 0: the shift alone
                sel = [k for k, j in enumerate(rows) if plans[j][p][0] == i and plans[j][p][1] > 0]
                lam = torch.tensor(
                    [plans[rows[k]][p][1] for k in sel], dtype=x.dtype, device=x.device
                ).view(-1, 1, 1, 1)
                part = xs[sel]
                out = out.index_put(
                    (torch.tensor(sel, device=x.device),),
                    lam * self.prms[i](part) + (1 - lam) * part,
                )
            x = (
                x.index_put((torch.tensor(rows, device=x.device),), out)
                if len(rows) < len(x)
                else out
            )
        return x

    def forward(self, x):
        return self.model(self.transform(x))


NOISE_BLOCK = 100  # region-based noise samples drawn from one seed (ours; any batch_size gives the same votes)


class RegionBased(_Randomised):
    """Majority vote over ``samples`` uniform draws in the L∞ ball of ``radius`` (clipped to [0, 1])."""

    def __init__(
        self,
        model: nn.Module,
        radius: float = 0.02,
        samples: int = 1000,
        batch_size: int = 500,
        surrogate: bool = False,
        seed: int = 0,
    ):
        if radius < 0 or samples < 1 or batch_size < 1:
            raise ValueError(
                f"region-based defence needs radius >= 0, samples >= 1 and batch_size >= 1, got {radius}, "
                f"{samples}, {batch_size}"
            )
        super().__init__(model, seed)
        self.radius, self.samples, self.batch_size, self.surrogate = (
            float(radius),
            int(samples),
            int(batch_size),
            surrogate,
        )

    def _votes(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample votes (or, for the EOT surrogate, probabilities) summed over the last-but-one axis."""
        if self.surrogate:  # EOT: the mean softmax, differentiable
            return logits.softmax(-1).sum(-2)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype).sum(-2)

    def forward(self, x):
        """Each image's noise comes in blocks of :data:`NOISE_BLOCK` samples, each from its own seed, so the
        result does not depend on ``batch_size`` (forward passes of at most max(batch_size, block) samples)."""
        seeds = self.image_seeds(len(x))
        votes: list = [0] * len(x)
        buf: list[torch.Tensor] = []
        owners: list[int] = []

        def flush():
            logits = self.model(torch.cat(buf))
            start = 0
            for j, part in zip(owners, buf):
                votes[j] = votes[j] + self._votes(logits[start : start + len(part)])
                start += len(part)
            buf.clear()
            owners.clear()

        for j in range(len(x)):
            for b in range(0, self.samples, NOISE_BLOCK):
                m = min(NOISE_BLOCK, self.samples - b)
                if buf and sum(map(len, buf)) + m > self.batch_size:
                    flush()
                g = torch.Generator().manual_seed(derive_seed(seeds[j], "block", b))
                noise = (torch.rand((m, *x.shape[1:]), generator=g) * 2 - 1).to(
                    x.device
                ) * self.radius
                buf.append((x[j : j + 1] + noise).clamp(0, 1))
                owners.append(j)
        if buf:
            flush()
        return (torch.stack(votes) / self.samples).clamp_min(1e-12).log()


class Randomization(_Randomised):
    """Random nearest-neighbour downscale by a factor in ``scale`` and random zero padding back to size."""

    def __init__(self, model: nn.Module, scale=(0.9, 1.0), seed: int = 0):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"randomisation scale must satisfy 0 < low <= high <= 1, got {scale}")
        super().__init__(model, seed)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        lo_h, lo_w = (
            max(1, int(np.ceil(h * self.scale[0]))),
            max(1, int(np.ceil(w * self.scale[0]))),
        )
        out = []
        for j, g in enumerate(self.generators(len(x))):  # one resize and pad per image
            nh = int(torch.randint(lo_h, max(lo_h, int(h * self.scale[1])) + 1, (1,), generator=g))
            nw = int(torch.randint(lo_w, max(lo_w, int(w * self.scale[1])) + 1, (1,), generator=g))
            small = F.interpolate(x[j : j + 1], size=(nh, nw), mode="nearest")
            top = int(torch.randint(0, h - nh + 1, (1,), generator=g))
            left = int(torch.randint(0, w - nw + 1, (1,), generator=g))
            out.append(F.pad(small, (left, w - nw - left, top, h - nh - top)))
        return torch.cat(out)

    def forward(self, x):
        return self.model(self.transform(x))


# skimage.color's YCbCr (ITU-R BT.601, Y in [16, 235] for RGB in [0, 1])
_YCBCR_FROM_RGB = torch.tensor(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
    dtype=torch.float64,
)
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


def _haar_levels(h: int, w: int) -> int:
    """skimage's default: the maximum db1 decomposition level minus 3, at least 1."""
    return max(int(np.floor(np.log2(min(h, w)))) - 3, 1)


def wavelet_denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``skimage.restoration.denoise_wavelet(img, sigma, wavelet='db1', mode='soft', method='BayesShrink',
    convert2ycbcr=True, rescale_sigma=True, channel_axis=-1)`` for a batch N×3×H×W, in float64.

    Needs H and W divisible by 2^levels (no boundary extension; 32×32 and 224×224 are). Each
    YCbCr channel is scaled to [0, 1] per image, decomposed with the orthonormal Haar wavelet,
    every detail sub-band soft-thresholded at BayesShrink's σ²/√max(mean(d²) − σ², eps), and
    reconstructed (tested equal to scikit-image).
    """
    n, c, h, w = x.shape
    levels = _haar_levels(h, w)
    if c != 3 or h % 2**levels or w % 2**levels:
        raise ValueError(
            f"wavelet_denoise needs N×3×H×W with H, W divisible by {2**levels}, got {tuple(x.shape)}"
        )
    m = _YCBCR_FROM_RGB.to(x.device)
    img = x.to(torch.float64)
    ycc = torch.einsum("ij,njhw->nihw", m, img) + _YCBCR_OFFSET.to(x.device).view(1, 3, 1, 1)
    sig = torch.sqrt(((m * m) * sigma**2).sum(1))  # σ of each YCbCr channel
    lo = ycc.amin(dim=(2, 3), keepdim=True)
    scale = ycc.amax(dim=(2, 3), keepdim=True) - lo
    flat = scale == 0
    chan = (ycc - lo) / torch.where(flat, torch.ones_like(scale), scale)
    var = (sig.view(1, 3, 1, 1) / torch.where(flat, torch.ones_like(scale), scale)) ** 2
    eps = torch.finfo(torch.float64).eps
    details, a = [], chan
    for _ in range(levels):
        p, q, r, t = a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]
        a = (p + q + r + t) / 2
        bands = [(p - q + r - t) / 2, (p + q - r - t) / 2, (p - q - r + t) / 2]
        shrunk = []
        for d in bands:
            dvar = (d * d).mean(dim=(2, 3), keepdim=True)
            thr = var / torch.sqrt(torch.clamp(dvar - var, min=eps))
            shrunk.append(torch.sign(d) * torch.clamp(d.abs() - thr, min=0))
        details.append(shrunk)
    for h1, h2, h3 in reversed(details):
        out = a.new_empty(*a.shape[:-2], a.shape[-2] * 2, a.shape[-1] * 2)
        out[..., 0::2, 0::2] = (a + h1 + h2 + h3) / 2
        out[..., 0::2, 1::2] = (a - h1 + h2 - h3) / 2
        out[..., 1::2, 0::2] = (a + h1 - h2 - h3) / 2
        out[..., 1::2, 1::2] = (a - h1 - h2 + h3) / 2
        a = out
    den = torch.where(flat, ycc, a * scale + lo)
    rgb = torch.einsum(
        "ij,njhw->nihw", torch.linalg.inv(m), den - _YCBCR_OFFSET.to(x.device).view(1, 3, 1, 1)
    )
    return rgb.clamp(0, 1).to(x.dtype)


class PixelDeflection(_Randomised):
    """Deflect ``deflections`` pixel values to random neighbours within ``window``, then wavelet-denoise.

    ``backend='torch'`` (default, ours): batched on the images' device — the deflections of an
    image all read the input image (the original applies them one after another), then
    :func:`wavelet_denoise`. ``backend='skimage'``: the original's sequential loop and
    ``skimage.restoration.denoise_wavelet``; used whenever an R-CAM is given or the image size
    does not suit the batched Haar transform.
    """

    def __init__(
        self,
        model: nn.Module,
        deflections: int = 100,
        window: int = 10,
        sigma: float = 0.04,
        rcam=None,
        backend: str = "torch",
        seed: int = 0,
    ):
        if deflections < 0 or window < 1 or sigma <= 0:
            raise ValueError(
                f"pixel deflection needs deflections >= 0, window >= 1, sigma > 0; got {deflections}, {window}, {sigma}"
            )
        if backend not in ("torch", "skimage"):
            raise ValueError(
                f"pixel deflection backend must be 'torch' or 'skimage', got {backend!r}"
            )
        super().__init__(model, seed)
        self.deflections, self.window, self.sigma, self.rcam = (
            int(deflections),
            int(window),
            float(sigma),
            rcam,
        )
        self.backend = backend

    def deflect(
        self, img: np.ndarray, rcam: np.ndarray | None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """``img``: C×H×W float array (modified copy returned); ``rng``: the image's generator (default: the
        defence's own stream)."""
        rng = self.rng if rng is None else rng
        img = img.copy()
        c_n, h, w = img.shape
        left, tries = self.deflections, 0
        while left > 0 and tries < 100 * max(
            1, self.deflections
        ):  # an R-CAM of ones would skip forever
            for c in range(c_n):
                tries += 1
                y, x = rng.integers(0, h), rng.integers(0, w)
                if rcam is not None and rng.random() < rcam[y, x]:
                    continue
                while True:
                    a, b = rng.integers(-self.window, self.window + 1, size=2)
                    if 0 <= y + a < h and 0 <= x + b < w and (a or b):
                        break
                img[c, y, x] = img[c, y + a, x + b]
                left -= 1
                if left == 0:
                    break
        return img

    def deflect_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Batched deflection: per image ``deflections`` (channel k mod C, random pixel, random valid neighbour)."""
        n, c, h, w = x.shape
        k = self.deflections
        if k == 0:
            return x.clone()
        ys, xs, dy, dx = (torch.zeros(n, k, dtype=torch.long) for _ in range(4))
        for j, g in enumerate(self.generators(n)):  # each image from its own generator
            ys[j] = torch.randint(0, h, (k,), generator=g)
            xs[j] = torch.randint(0, w, (k,), generator=g)
            todo = torch.ones(k, dtype=torch.bool)
            while (
                todo.any()
            ):  # redraw offsets that leave the image or stay in place, as the original
                m = int(todo.sum())
                dy[j, todo] = torch.randint(-self.window, self.window + 1, (m,), generator=g)
                dx[j, todo] = torch.randint(-self.window, self.window + 1, (m,), generator=g)
                ty, tx = ys[j] + dy[j], xs[j] + dx[j]
                todo = (ty < 0) | (ty >= h) | (tx < 0) | (tx >= w) | ((dy[j] == 0) & (dx[j] == 0))
        ty, tx = ys + dy, xs + dx
        ch = (torch.arange(k) % c).expand(n, k)
        img = torch.arange(n).view(n, 1).expand(n, k)
        dev = x.device
        img, ch, ys, xs, ty, tx = (t.to(dev) for t in (img, ch, ys, xs, ty, tx))
        out = x.clone()
        out[img, ch, ys, xs] = x[img, ch, ty, tx]
        return out

    def _torch_ok(self, x: torch.Tensor) -> bool:
        levels = _haar_levels(*x.shape[-2:])
        return (
            self.backend == "torch"
            and self.rcam is None
            and x.shape[1] == 3
            and x.shape[-2] % 2**levels == 0
            and x.shape[-1] % 2**levels == 0
        )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self._torch_ok(x):
            with torch.no_grad():
                y = wavelet_denoise(self.deflect_batch(x.detach()), self.sigma)
            return (
                x + (y - x).detach()
            )  # BPDA: the transformation's gradient is taken as the identity
        out = []
        for img, seed in zip(x.detach().cpu(), self.image_seeds(len(x))):
            rcam = None if self.rcam is None else np.asarray(self.rcam(img))
            d = self.deflect(img.numpy().astype(np.float64), rcam, np.random.default_rng(seed))
            den = denoise_wavelet(
                d.transpose(1, 2, 0),
                sigma=self.sigma,
                mode="soft",
                channel_axis=-1,
                convert2ycbcr=True,
                method="BayesShrink",
                rescale_sigma=True,
            )
            out.append(torch.from_numpy(np.clip(den, 0, 1).transpose(2, 0, 1).astype(np.float32)))
        y = torch.stack(out).to(x.device)
        return x + (y - x).detach()  # BPDA: the transformation's gradient is taken as the identity

    def forward(self, x):
        return self.model(self.transform(x))


class EOT(nn.Module):
    """Expectation over transformation (Athalye et al. 2018): log of the mean softmax over ``samples`` calls.

    Wraps a randomised defence for an adaptive attack: every call of the defence draws new
    randomness, and the gradient of the average is the EOT gradient (BPDA where the defence
    passes it through, as pixel deflection does).
    """

    def __init__(self, defense: nn.Module, samples: int):
        if samples < 1:
            raise ValueError(f"EOT needs samples >= 1, got {samples}")
        super().__init__()
        self.defense, self.samples = defense, int(samples)
        self.num_classes = getattr(defense, "num_classes", None)

    def images(self, ids, draw: int | None = None):
        """The wrapped defence's :meth:`_Randomised.images` (without ``draw``: fresh draws per sample)."""
        return self.defense.images(ids, draw)

    def forward(self, x):
        probs = sum(self.defense(x).softmax(1) for _ in range(self.samples)) / self.samples
        return probs.clamp_min(1e-12).log()


def shifts_of_sizes(sizes) -> list[tuple[int, int]]:
    """Every non-zero shift (dy, dx) whose Chebyshev length max(|dy|, |dx|) is one of ``sizes``."""
    sizes = sorted({int(s) for s in sizes})
    if any(s < 1 for s in sizes):
        raise ValueError(f"shift sizes must be positive integers, got {sizes}")
    top = max(sizes, default=0)
    return [
        (dy, dx)
        for dy in range(-top, top + 1)
        for dx in range(-top, top + 1)
        if max(abs(dy), abs(dx)) in sizes
    ]


def lattice_shifts(lattice: str, as_run: bool = False) -> list[tuple[int, int]]:
    """The authors' shift set of a PRM lattice as (dy, dx); ``as_run``: as their code applies it (axes swapped)."""
    check_lattice(lattice)  # LATTICE_SHIFTS has a set for every lattice (tested)
    return [(dx, dy) if as_run else (dy, dx) for dy, dx in LATTICE_SHIFTS[lattice]]


def shift_sets(mode: str, sizes, prms: list[nn.Module]) -> list[list[tuple[int, int]]]:
    """Per PRM, the shifts the stochastic PRM draws from (``defense_settings.stochastic_prm.shifts``).

    ``lattice``: the authors' set of each PRM's lattice read as (row, column) (ours: the reading under
    which every shift moves skipped pixels onto the lattice); ``lattice_as_run``: the same sets as the
    authors' code applies them; ``sizes``: every direction at the Chebyshev lengths ``sizes`` (ours,
    one set for all PRMs); ``none``: no shift. ``sizes`` is read by the ``sizes`` mode only.
    """
    if mode not in SHIFT_MODES:
        raise ValueError(
            f"stochastic_prm.shifts must be one of {', '.join(SHIFT_MODES)}, got {mode!r}"
        )
    if (mode == "sizes") != (sizes is not None):
        raise ValueError(
            "stochastic_prm.shift_sizes goes with shifts: sizes, and only with it "
            f"(got shifts: {mode}, shift_sizes: {sizes}); set both or neither"
        )
    if mode == "sizes":
        return [shifts_of_sizes(sizes)] * len(prms)
    if mode == "none":
        return [[] for _ in prms]
    out = []
    for prm in prms:
        lattice = getattr(prm, "lattice", None)
        if lattice is None:
            raise ValueError(
                f"shifts: {mode} needs PRMs that name their lattice (a pixelrobust.prm.PRM); got "
                f"{type(prm).__name__}; use shifts: sizes or none"
            )
        out.append(lattice_shifts(lattice, as_run=mode == "lattice_as_run"))
    return out


DEFENSES = {
    "stochastic_prm": StochasticPRM,
    "region_based": RegionBased,
    "randomization": Randomization,
    "pixel_deflection": PixelDeflection,
}


def build_defense(
    name: str,
    classifier: nn.Module,
    settings: dict | None = None,
    *,
    prms: list[nn.Module] | None = None,
    seed: int = 0,
    deterministic: bool = False,
    eot_samples: int | None = None,
) -> nn.Module:
    """A defence by name from its config settings (``defense_eval.defense_settings.<name>``).

    ``deterministic=True`` gives the model gray-box attacks are crafted on: the classifier itself,
    except for the stochastic PRM (its deterministic PRM model at ``graybox_lambda``).
    ``eot_samples`` gives the adaptive attack's model: :class:`EOT` over the defence, or for the
    region-based defence its differentiable surrogate (mean softmax over ``eot_samples`` noise
    draws instead of a vote over ``samples``).
    """
    if name == "none":
        return classifier
    if name not in DEFENSES:
        raise ValueError(f"unknown defence {name!r}; known: none, {', '.join(DEFENSES)}")
    s = dict(settings or {})
    if name == "stochastic_prm":
        if not prms:
            raise ValueError(
                "the stochastic PRM defence needs trained PRMs (results/p3/prm/<model>/<variant>/prm.pt)"
            )
        s.pop(
            "pool", None
        )  # which PRMs to train: the workflow's concern; the PRMs themselves arrive in ``prms``
        fixed = s.pop("graybox_lambda", 1.0)
        per_prm = shift_sets(s.pop("shifts", "lattice"), s.pop("shift_sizes", None), prms)
        d = StochasticPRM(
            classifier,
            prms,
            prm_shifts=per_prm,
            fixed_lambda=fixed,
            stochastic=not deterministic,
            seed=seed,
            **s,
        )
        return d if deterministic or eot_samples is None else EOT(d, eot_samples)
    if deterministic:
        return classifier
    if name == "region_based" and eot_samples is not None:
        s.update(samples=eot_samples, surrogate=True)
        return RegionBased(classifier, seed=seed, **s)
    d = DEFENSES[name](classifier, seed=seed, **s)
    return d if eot_samples is None else EOT(d, eot_samples)

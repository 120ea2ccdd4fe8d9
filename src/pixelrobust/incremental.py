"""Incremental evaluation of one-pixel candidates (ours): the early, high-resolution layers only on
the cone a changed pixel reaches, the rest of the network as usual.

A one-pixel change at (r, c) changes a convolution's output only where the kernel sees (r, c):
a window of a few positions per layer that grows by the kernel's reach and shrinks by its stride.
:class:`IncrementalMobileNetV2` caches the clean image's activations at every layer of the first
``switch`` blocks of torchvision's MobileNetV2 (``net.features``) and, for a batch of candidates
(pixel, colour), computes each layer only on that window: it gathers the input patch the window's
outputs need from the cached clean activation (zero padded, as the full convolution pads), puts the
candidate's changed window over it, runs the layer's own convolution on the patch without padding,
then its batch norm / activation, and sets positions outside the image to zero (they are padding
for the next convolution). Residual blocks add the block input's window, gathered the same way.
After block ``switch - 1`` the window is pasted into the clean activation and the rest of the
network runs on full tensors.

The result is the full forward pass's arithmetic on the same numbers, but a convolution on a patch
may use other kernels or another summation order than the one on the whole image, so the logits can
differ from the full forward pass in the last bits. Callers that need the fp32 answer
(:class:`~pixelrobust.onepixel.ExhaustiveSearch`, ``incremental="auto"``) treat these logits like a
screening score: they measure the difference to the full fp32 forward pass on sampled candidates
and evaluate in full fp32 every candidate whose decision the difference could change.

Supported: a :class:`~pixelrobust.models.Classifier` around torchvision's ``MobileNetV2`` (blocks
``Conv2dNormActivation`` and ``InvertedResidual``, with batch norm in eval mode and elementwise
activations), on any device (only conv2d, indexing and elementwise ops). :func:`supports` says
whether a model qualifies; the exhaustive map runs its full path otherwise.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Identity)


@dataclass
class _Step:
    conv: nn.Conv2d
    post: list  # elementwise modules after the convolution (batch norm, activation)
    block_start: bool = (
        False  # first step of a block: its input is the block input (for a residual)
    )
    residual_end: bool = False  # last step of a residual block: add the block input afterwards


def _mobilenet_blocks(model) -> list | None:
    """The ``features`` blocks of a Classifier around torchvision's MobileNetV2, else None."""
    try:
        # lazy: torchvision takes about 1 s to import; only a MobileNetV2 needs these
        from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
        from torchvision.ops.misc import Conv2dNormActivation
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    net = getattr(model, "net", None)
    if not isinstance(net, MobileNetV2) or not hasattr(model, "mean"):
        return None
    blocks = []
    for b in net.features:
        if isinstance(b, InvertedResidual):
            mods = [m for m in b.conv.modules() if not isinstance(m, nn.Sequential)]
            blocks.append((mods, bool(b.use_res_connect)))
        elif isinstance(b, Conv2dNormActivation):
            blocks.append(([m for m in b.modules() if not isinstance(m, nn.Sequential)], False))
        else:
            return None
    for mods, _ in blocks:
        if not mods or not isinstance(mods[0], nn.Conv2d):
            return None
        for m in mods:
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros" or m.dilation != (1, 1) or isinstance(m.padding, str):
                    return None
            elif not isinstance(m, ELEMENTWISE):
                return None
    return blocks


def supports(model) -> bool:
    """Whether :class:`IncrementalMobileNetV2` can run ``model`` (a Classifier around torchvision's
    MobileNetV2 in eval mode)."""
    return _mobilenet_blocks(model) is not None and not model.training


def _steps(blocks) -> list[_Step]:
    steps = []
    for mods, res in blocks:
        block = []
        for m in mods:
            if isinstance(m, nn.Conv2d):
                block.append(_Step(m, []))
            else:
                block[-1].post.append(m)
        block[0].block_start = True
        block[-1].residual_end = res
        steps += block
    return steps


def _cone(conv: nn.Conv2d, y0, x0, h: int, w: int):
    """The output window of ``conv`` that an input window (rows y0..y0+h-1, columns x0..x0+w-1,
    per candidate) reaches: its first row and column (per candidate), its height and width."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    ho, wo = -(-(h + k[0] - 1) // s[0]), -(-(w + k[1] - 1) // s[1])
    oy = torch.div(y0 + p[0] - k[0] + 1 + s[0] - 1, s[0], rounding_mode="floor")
    ox = torch.div(x0 + p[1] - k[1] + 1 + s[1] - 1, s[1], rounding_mode="floor")
    return oy, ox, ho, wo


def window_sizes(model, side: int, switch: int) -> list[tuple[int, int]]:
    """(window side, activation side) at the output of each of the first ``switch`` blocks for a
    one-pixel change of a ``side`` × ``side`` image (the cone :class:`IncrementalMobileNetV2` computes)."""
    out, h, full = [], 1, side
    for mods, _ in _mobilenet_blocks(model)[:switch]:
        for m in mods:
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                h = -(-(h + k - 1) // s)
                full = (full + 2 * p - k) // s + 1
        out.append((h, full))
    return out


class IncrementalMobileNetV2:
    """Logits of one-pixel candidates of one image, the first ``switch`` blocks on the changed cone
    only (see the module docstring). ``switch=None`` picks the last block whose output window covers
    at most ``max_cover`` of the activation (MobileNetV2 at 224: blocks 0-9, the last a 9 × 9 window
    of 14 × 14, 41 %: ``switch`` 10; 11 × 11 at block 10 is 62 %). Measured on this CPU at 224
    (``bench/onepixel/switch.py``, batch 256, CPU time against the full pass of the same batch;
    docs/p1.md): 0.27 / 0.26 / 0.24 / 0.25 / 0.29 of a full pass at ``switch`` 8 / 9 / 10 / 11 / 12
    with 1 thread, 0.27 / 0.26 / 0.21 / 0.22 / 0.28 with 2: past block 10 the windows cover most
    of the 14 × 14 activation and the patches cost more than they save. The cache :meth:`prepare`
    computes (the clean image at batch 1) equals the clean activations of a batch of 256 bit for
    bit through block 7 only with 1 thread (through block 11 with 2); :meth:`recording` takes the
    cache from a full pass at the fp32 path's batch size instead, and with it the logits equal the
    full pass's bit for bit at every switch measured (7-12), 1 and 2 threads.

    Use: ``inc = IncrementalMobileNetV2(model); inc.prepare(image)`` (3×H×W in [0, 1]), optionally
    ``with inc.recording(rows, cols): model(batch)`` (a full pass of candidates), then
    ``inc(rows, cols, colours)`` for N candidates (pixel rows, columns, N×3 colours in [0, 1]).
    """

    def __init__(self, model, switch: int | None = None, max_cover: float = 0.5):
        blocks = _mobilenet_blocks(model)
        if blocks is None:
            raise ValueError(
                f"incremental evaluation needs a Classifier around torchvision's MobileNetV2; got {type(getattr(model, 'net', model)).__name__}"
            )
        self.model = model
        self.net = model.net
        self.max_cover = float(max_cover)
        self.switch = switch  # resolved in prepare (depends on the image size) when None
        self._blocks = blocks
        self._side = None

    def _resolve_switch(self, h: int, w: int) -> int:
        if self.switch is not None:
            if not 1 <= int(self.switch) <= len(self._blocks):
                raise ValueError(
                    f"switch must be a block index in 1..{len(self._blocks)}, got {self.switch!r}"
                )
            return int(self.switch)
        best = 1
        for i, (win, full) in enumerate(window_sizes(self.model, min(h, w), len(self._blocks)), 1):
            if win * win <= self.max_cover * full * full:
                best = i
            else:
                break
        return best

    @torch.inference_mode()
    def prepare(self, image: torch.Tensor) -> IncrementalMobileNetV2:
        """Cache the clean image's activations (each step's input, zero padded)."""
        c, h, w = image.shape
        self.n_switch = self._resolve_switch(h, w)
        self.steps = _steps(self._blocks[: self.n_switch])
        z = (image[None] - self.model.mean) / self.model.std
        self.size = (h, w)
        self.clean_in = []  # per step: (activation N=1 NHWC, height, width)
        x, block_in = z, None
        for st in self.steps:
            if st.block_start:
                block_in = x
            self.clean_in.append(x[0].permute(1, 2, 0).contiguous())
            y = st.conv(x)
            for m in st.post:
                y = m(y)
            if st.residual_end:
                y = block_in + y
            x = y
        self.clean_out = x[0].permute(1, 2, 0).contiguous()  # H×W×C at the switch
        self._pads = {}
        self.uncovered = (
            None  # positions :meth:`recording` left at their batch-1 value (None: not recorded)
        )
        return self

    @contextmanager
    def recording(self, rows: torch.Tensor, cols: torch.Tensor, prefer: torch.Tensor | None = None):
        """Take the clean cache from a full forward pass of candidates (after :meth:`prepare`).

        While the context is open, a full forward pass of ``self.model`` on a batch of one-pixel
        candidates of the prepared image (row i: pixel ``rows[i]``, ``cols[i]`` changed, any colour)
        records, at every position of every cached activation, the value of a candidate whose cone
        misses that position (a candidate with ``prefer`` true where there is one): the clean
        image's activation as that batch computed it. On leaving, these replace the cache; where
        every candidate's cone covers a position the :meth:`prepare` value stays (``uncovered``
        counts those positions). Why: a convolution's kernel may differ with the batch size (measured
        here, 1 thread, from block 8 on at 224: the clean activation of a batch of 1 differs from
        the same image's in a batch of 256 in the last bits), so a cache computed at the fp32
        path's batch size is what lets the cone run through the 14 × 14 blocks and still give the
        full pass's logits bit for bit. An exception in the forward pass leaves the cache as it was.
        """
        dev = self.clean_out.device
        rows, cols = rows.to(dev).long(), cols.to(dev).long()
        n = len(rows)
        prefer = (
            torch.zeros(n, dtype=torch.bool, device=dev)
            if prefer is None
            else prefer.to(dev).bool()
        )
        windows, y0, x0, h, w = [], rows, cols, 1, 1
        for st in self.steps:
            windows.append((y0, x0, h, w))
            y0, x0, h, w = _cone(st.conv, y0, x0, h, w)
        windows.append((y0, x0, h, w))
        cache = [*self.clean_in, self.clean_out]
        new = list(cache)
        uncovered = [0] * len(cache)

        def take(i, act):
            if act.shape[0] != n:
                raise ValueError(
                    f"recording: the forward pass has {act.shape[0]} images, the candidates {n}"
                )
            wy0, wx0, wh, ww = windows[i]
            H, W = act.shape[2:]
            ys, xs = torch.arange(H, device=dev), torch.arange(W, device=dev)
            iny = (ys >= wy0[:, None]) & (ys < wy0[:, None] + wh)
            inx = (xs >= wx0[:, None]) & (xs < wx0[:, None] + ww)
            free = ~(iny[:, :, None] & inx[:, None, :])  # N×H×W: the cone misses the position
            score = free.to(torch.uint8) * 2 + (free & prefer[:, None, None]).to(torch.uint8)
            first = score.argmax(0)  # a preferred free candidate, else any free one
            got = act[first, :, ys[:, None], xs[None, :]]  # H×W×C
            ok = free.any(0)
            uncovered[i] = int((~ok).sum())
            new[i] = torch.where(ok[..., None], got, cache[i]).contiguous()

        hooks = [
            st.conv.register_forward_pre_hook(lambda m, a, i=i: take(i, a[0]))
            for i, st in enumerate(self.steps)
        ]
        hooks.append(
            self.net.features[self.n_switch - 1].register_forward_hook(
                lambda m, a, o: take(len(cache) - 1, o)
            )
        )
        try:
            yield
        finally:
            for hk in hooks:
                hk.remove()
        self.clean_in, self.clean_out, self._pads = new[:-1], new[-1], {}
        self.uncovered = sum(uncovered)

    def _padded(self, i: int, pad: int) -> torch.Tensor:
        key = (i, pad)
        if key not in self._pads:
            a = self.clean_in[i] if i >= 0 else self.clean_out
            self._pads[key] = F.pad(a, (0, 0, pad, pad, pad, pad))
        return self._pads[key]

    @staticmethod
    def _view(win, y0, x0, clean_pad, pad, r0, c0, rh, rw):
        """The activation at rows r0..r0+rh-1, columns c0..c0+rw-1 (per candidate, N×rh×rw×C):
        the candidate's window ``win`` (N×h×w×C at y0, x0) where it covers, else the clean
        activation (``clean_pad``, zero padded by ``pad``)."""
        n, h, w, _ = win.shape
        dev = win.device
        ry = r0[:, None] + torch.arange(rh, device=dev)
        rx = c0[:, None] + torch.arange(rw, device=dev)
        out = clean_pad[(ry + pad)[:, :, None], (rx + pad)[:, None, :]]
        jy, jx = ry - y0[:, None], rx - x0[:, None]
        iny, inx = (jy >= 0) & (jy < h), (jx >= 0) & (jx < w)
        nn_ = torch.arange(n, device=dev)[:, None, None]
        wv = win[nn_, jy.clamp(0, h - 1)[:, :, None], jx.clamp(0, w - 1)[:, None, :]]
        return torch.where((iny[:, :, None] & inx[:, None, :])[..., None], wv, out)

    @torch.inference_mode()
    def features_at_switch(
        self, rows: torch.Tensor, cols: torch.Tensor, colours: torch.Tensor
    ) -> torch.Tensor:
        """The activation after block ``switch - 1`` for each candidate (N×C×H×W, channels last)."""
        dev = self.clean_out.device
        rows, cols = rows.to(dev).long(), cols.to(dev).long()
        n = len(rows)
        mean, std = self.model.mean.view(1, -1), self.model.std.view(1, -1)
        win = ((colours.to(dev).float() - mean) / std).view(
            n, 1, 1, -1
        )  # the changed pixel, normalised as the wrapper does
        y0, x0 = rows, cols
        H, W = self.size
        block = None
        for i, st in enumerate(self.steps):
            if st.block_start:
                block = (win, y0, x0, i)
            k, s, p = st.conv.kernel_size, st.conv.stride, st.conv.padding
            oy, ox, ho, wo = _cone(st.conv, y0, x0, *win.shape[1:3])
            rh, rw = (ho - 1) * s[0] + k[0], (wo - 1) * s[1] + k[1]
            pad = max(rh, rw) + 16  # room for windows that reach past the border
            patch = self._view(
                win, y0, x0, self._padded(i, pad), pad, oy * s[0] - p[0], ox * s[1] - p[1], rh, rw
            )
            y = F.conv2d(
                patch.permute(0, 3, 1, 2),
                st.conv.weight,
                st.conv.bias,
                st.conv.stride,
                0,
                1,
                st.conv.groups,
            )
            for m in st.post:
                y = m(y)
            H = (H + 2 * p[0] - k[0]) // s[0] + 1
            W = (W + 2 * p[1] - k[1]) // s[1] + 1
            if st.residual_end:
                bwin, by0, bx0, bi = block
                pad = max(ho, wo) + 16
                y = y + self._view(
                    bwin, by0, bx0, self._padded(bi, pad), pad, oy, ox, ho, wo
                ).permute(0, 3, 1, 2)
            ry = oy[:, None] + torch.arange(ho, device=dev)
            rx = ox[:, None] + torch.arange(wo, device=dev)
            inside = ((ry >= 0) & (ry < H))[:, :, None] & ((rx >= 0) & (rx < W))[:, None, :]
            win = y.permute(0, 2, 3, 1).masked_fill(
                ~inside[..., None], 0.0
            )  # outside the image: padding of the next layer
            y0, x0 = oy, ox
        zero = torch.zeros(n, dtype=torch.long, device=dev)
        full = self._view(win, y0, x0, self._padded(-1, 0), 0, zero, zero, H, W)
        return full.permute(0, 3, 1, 2)

    @torch.inference_mode()
    def __call__(
        self, rows: torch.Tensor, cols: torch.Tensor, colours: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N × classes) of the image with pixel (rows[i], cols[i]) set to colours[i]."""
        x = self.features_at_switch(rows, cols, colours)
        for b in self.net.features[self.n_switch :]:
            x = b(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.net.classifier(torch.flatten(x, 1))


def cost_fraction(model, side: int, switch: int) -> float:
    """Multiply-accumulates of the incremental path per candidate over the full forward pass's
    (from the geometry: windows plus their halos for the first ``switch`` blocks, full tensors after)."""
    blocks = _mobilenet_blocks(model)
    full_macs = inc_macs = 0.0
    h, hs = 1, side
    for i, (mods, _) in enumerate(blocks):
        for m in mods:
            if not isinstance(m, nn.Conv2d):
                continue
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            hs = (hs + 2 * p - k) // s + 1
            per = m.in_channels // m.groups * m.out_channels * k * k
            full_macs += per * hs * hs
            if i < switch:
                h = -(-(h + k - 1) // s)
                inc_macs += per * h * h
            else:
                inc_macs += per * hs * hs
    return inc_macs / full_macs if full_macs else math.nan

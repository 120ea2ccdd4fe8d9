"""Incremental evaluation of one-pixel candidates (ours): the early, high-resolution layers only on
the cone a changed pixel reaches, the rest of the network as usual.

A one-pixel change at (r, c) changes a convolution's output only where the kernel sees (r, c):
a window of a few positions per layer that grows by the kernel's reach and shrinks by its stride.
:class:`Incremental` caches the clean image's activations at every layer of the first
``switch`` blocks of the network (torchvision's MobileNetV2: ``net.features``; a CIFAR ResNet: the
stem, then the residual blocks of layer1-3) and, for a batch of candidates
(pixel, colour), computes each layer only on that window: it gathers the input patch the window's
outputs need from the cached clean activation (zero padded, as the full convolution pads), puts the
candidate's changed window over it, runs the layer's own convolution on the patch without padding,
then its batch norm / activation, and sets positions outside the image to zero (they are padding
for the next convolution). Residual blocks add the block input's window, gathered the same way
(option-A shortcuts: every other row and column of it, the new channels zero), then their post-add
activation.
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
activations) or around :class:`~pixelrobust.models.CifarResNet` (basic blocks with identity or
option-A shortcuts; a 1 × 1 convolution shortcut, option B, ends the incremental part), on any
device (only conv2d, indexing and elementwise ops). :func:`supports` says whether a model
qualifies; the exhaustive map runs its full path otherwise. With the clean cache recorded at the
fp32 path's batch size (:meth:`Incremental.recording`) the logits equal the full pass's bit for
bit on this CPU (measured: bench/onepixel/switch.py), and the callers check it at run time.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Identity)

log = logging.getLogger(__name__)


@dataclass
class _Step:
    conv: nn.Conv2d
    post: list  # elementwise modules after the convolution (batch norm, activation)
    block_start: bool = (
        False  # first step of a block: its input is the block input (for a residual)
    )
    residual_end: bool = False  # last step of a residual block: add the block input afterwards
    after_add: nn.Module | None = None  # elementwise, after the residual add (a ResNet's ReLU)
    shortcut: nn.Module | None = (
        None  # the residual's option-A shortcut (None: the block input itself)
    )


@dataclass
class _Arch:
    """What the incremental path needs of a supported network."""

    name: str
    blocks: (
        list  # (modules: a convolution then elementwise ones, ..., residual?, after_add or None)
    )
    rest: object  # rest(x, n): the logits from the activation after block n - 1 (full tensors)
    hook: object  # hook(n): (module, "pre" | "post"): its input / output is the activation after block n - 1


@dataclass
class _Gather:
    """Where each position of a per-candidate view comes from (:meth:`Incremental._gather`)."""

    index: torch.Tensor  # flat rows of the padded clean activation (mixed: then the window's rows)
    shape: tuple  # (N, rh, rw)
    pad: int  # the clean activation's zero padding
    copy: tuple | None  # None: mixed gather; else the window's slice copy over the tiles (() none)


REST_CHUNK_BYTES = (
    2**20
)  # ours: the activation at the switch per chunk of the rest (Incremental.rest_batch)
PLAN_CACHE_BYTES = (
    256 * 2**20
)  # ours: the geometry cache's index tensors (per Incremental; ResNet-20's
# whole CIFAR map takes 98 MiB, MobileNetV2's stride-8 ImageNet grid 81 MiB)


def _elementwise(mods, y: torch.Tensor) -> torch.Tensor:
    """``mods`` applied to ``y`` (a tensor the caller owns): ReLUs in place (the same kernel,
    without a new tensor), the others as modules."""
    for m in mods:
        if type(m) is nn.ReLU:
            y = y.relu_()
        else:
            y = m(y)
    return y


def _compact(index: torch.Tensor) -> torch.Tensor:
    """Row indices as int32 where they fit (half the plan cache's memory; index_select takes both)."""
    return index.int() if index.numel() == 0 or int(index.max()) < 2**31 else index


def _convs_ok(mods) -> bool:
    if not mods or not isinstance(mods[0], nn.Conv2d):
        return False
    for m in mods:
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or m.dilation != (1, 1) or isinstance(m.padding, str):
                return False
        elif not isinstance(m, ELEMENTWISE):
            return False
    return True


def _mobilenet(model) -> _Arch | None:
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
            blocks.append((mods, bool(b.use_res_connect), None))
        elif isinstance(b, Conv2dNormActivation):
            blocks.append(
                ([m for m in b.modules() if not isinstance(m, nn.Sequential)], False, None)
            )
        else:
            return None
    if not all(_convs_ok(mods) for mods, _, _ in blocks):
        return None

    def rest(x, n):  # torchvision's MobileNetV2.forward from block n on
        for b in net.features[n:]:
            x = b(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return net.classifier(torch.flatten(x, 1))

    return _Arch("MobileNetV2", blocks, rest, lambda n: (net.features[n - 1], "post"))


def _cifar_resnet(model) -> _Arch | None:
    """The stem and the residual blocks of a Classifier around :class:`~pixelrobust.models.CifarResNet`
    (ResNet-20/56 of the mirror) up to the first with a 1 × 1 convolution shortcut (option B), else
    None: identity shortcuts and option A's (subsample by 2, zero-pad the new channels)."""
    from .models import CifarResNet, _PadShortcut  # lazy: models imports much more than this module

    net = getattr(model, "net", None)
    if not isinstance(net, CifarResNet) or not hasattr(model, "mean"):
        return None
    seq = [*net.layer1, *net.layer2, *net.layer3]
    blocks = [([net.conv1, net.bn1, nn.ReLU()], False, None)]
    for b in seq:
        if isinstance(b.downsample, nn.Identity) and b.conv1.stride == (1, 1):
            res = True
        elif isinstance(b.downsample, _PadShortcut) and b.conv1.stride == (2, 2):
            res = b.downsample
        else:
            break
        blocks.append(([b.conv1, b.bn1, nn.ReLU(), b.conv2, b.bn2], res, nn.ReLU()))
    if not all(_convs_ok(mods) for mods, _, _ in blocks):
        return None

    def rest(x, n):  # CifarResNet.forward from block n on (block 0: the stem; block i: seq[i - 1])
        for b in seq[n - 1 :]:
            x = b(x)
        return net.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def hook(
        n,
    ):  # the activation after block n - 1: the input of seq[n - 1] (the last one's output)
        return (seq[n - 1], "pre") if n - 1 < len(seq) else (seq[-1], "post")

    return _Arch("CifarResNet", blocks, rest, hook)


def _arch(model) -> _Arch | None:
    return _mobilenet(model) or _cifar_resnet(model)


def supports(model) -> bool:
    """Whether :class:`Incremental` can run ``model`` (a Classifier around torchvision's MobileNetV2
    or around a :class:`~pixelrobust.models.CifarResNet`, in eval mode)."""
    return _arch(model) is not None and not any(m.training for m in model.modules())


def _steps(blocks) -> list[_Step]:
    steps = []
    for mods, res, after_add in blocks:
        block = []
        for m in mods:
            if isinstance(m, nn.Conv2d):
                block.append(_Step(m, []))
            else:
                block[-1].post.append(m)
        block[0].block_start = True
        block[-1].residual_end = bool(res)
        block[-1].shortcut = res if isinstance(res, nn.Module) else None
        block[-1].after_add = after_add
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
    one-pixel change of a ``side`` × ``side`` image (the cone :class:`Incremental` computes)."""
    out, h, full = [], 1, side
    for mods, _, _ in _arch(model).blocks[:switch]:
        for m in mods:
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                h = -(-(h + k - 1) // s)
                full = (full + 2 * p - k) // s + 1
        out.append((h, full))
    return out


class Incremental:
    """Logits of one-pixel candidates of one image, the first ``switch`` blocks on the changed cone
    only (see the module docstring). ``switch=None`` picks the last block whose output window covers
    at most ``max_cover`` of the activation (ours, 0.65: MobileNetV2 at 224, blocks 0-10, the last
    an 11 × 11 window of 14 × 14, 62 %, ``switch`` 11, where 13 × 13 at block 11 is 86 %; ResNet-20
    at 32, the stem, layer1 and layer2[0], 11 × 11 of 16 × 16, 47 %, ``switch`` 5, where layer2[1]'s
    15 × 15 is 88 %). Measured on this CPU (``bench/onepixel/switch.py``, batch 256, CPU time
    against the full pass of the same batch; bench/README.md): MobileNetV2 0.267 / 0.249 / 0.233 /
    0.222 / 0.239 of a full pass at ``switch`` 8 / 9 / 10 / 11 / 12 with 1 thread, 0.257 / 0.240 /
    0.228 / 0.216 / 0.234 with 2: past block 10 the windows cover most of the activation and the
    patches cost more than they save. The cache :meth:`prepare` computes (the clean image at batch
    1) equals the clean activations of a batch of 256 bit for bit only part of the way (MobileNetV2
    through block 7 with 1 thread, through block 11 with 2; ResNet-20 through layer1);
    :meth:`recording` takes the cache from a full pass at the fp32 path's batch size instead, and
    with it the logits equal the full pass's bit for bit at every switch measured, 1 and 2 threads.

    Use: ``inc = Incremental(model); inc.prepare(image)`` (3×H×W in [0, 1]), optionally
    ``with inc.recording(rows, cols): model(batch)`` (a full pass of candidates), then
    ``inc(rows, cols, colours)`` for N candidates (pixel rows, columns, N×3 colours in [0, 1]).
    """

    def __init__(self, model, switch: int | None = None, max_cover: float = 0.65):
        arch = _arch(model)
        if arch is None:
            raise ValueError(
                "incremental evaluation needs a Classifier around torchvision's MobileNetV2 or a CIFAR ResNet "
                f"(pixelrobust.models.CifarResNet); got {type(getattr(model, 'net', model)).__name__}"
            )
        self.model = model
        self.arch = arch
        self.max_cover = float(max_cover)
        self.switch = switch  # resolved in prepare (depends on the image size) when None
        self._plans, self._plan_bytes = {}, 0  # the geometry cache (:meth:`_plan`)
        self._plan_lock = threading.Lock()
        self._delta = None

    def _resolve_switch(self, h: int, w: int) -> int:
        if self.switch is not None:
            if not 1 <= int(self.switch) <= len(self.arch.blocks):
                raise ValueError(
                    f"switch must be a block index in 1..{len(self.arch.blocks)}, got {self.switch!r}"
                )
            return int(self.switch)
        best = 1
        for i, (win, full) in enumerate(
            window_sizes(self.model, min(h, w), len(self.arch.blocks)), 1
        ):
            if win * win <= self.max_cover * full * full:
                best = i
            else:
                break
        return best

    @torch.inference_mode()
    def prepare(self, image: torch.Tensor) -> Incremental:
        """Cache the clean image's activations (each step's input, zero padded)."""
        c, h, w = image.shape
        self.n_switch = self._resolve_switch(h, w)
        if (self.n_switch, (h, w)) != getattr(self, "_geometry", None):  # plans of another geometry
            with self._plan_lock:
                self._plans, self._plan_bytes = {}, 0
            self._geometry = (self.n_switch, (h, w))
        self.steps = _steps(self.arch.blocks[: self.n_switch])
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
                y = y + (block_in if st.shortcut is None else st.shortcut(block_in))
                if st.after_add is not None:
                    y = st.after_add(y)
            x = y
        self.clean_out = x[0].permute(1, 2, 0).contiguous()  # H×W×C at the switch
        self._delta = None  # the screen's clean pre-activations (prepare_screen)
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
        counts those positions, and every position of an activation the pass did not reach): a
        candidate whose cone misses such a position reads a value the batch did not compute, and a
        check of the recorded candidates cannot see it (their own cones cover it). Why: a convolution's kernel may differ with the batch size (measured
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
        module, kind = self.arch.hook(self.n_switch)
        hooks.append(
            module.register_forward_hook(lambda m, a, o: take(len(cache) - 1, o))
            if kind == "post"
            else module.register_forward_pre_hook(lambda m, a: take(len(cache) - 1, a[0]))
        )
        try:
            yield
        finally:
            for hk in hooks:
                hk.remove()
        self.clean_in, self.clean_out, self._pads = new[:-1], new[-1], {}
        self._delta = None  # a screen built on the old cache is stale: prepare_screen again
        # an activation the forward pass never reached (no pass, or hooks that did not fire) is
        # uncovered everywhere: its batch-1 value stayed
        self.uncovered = sum(
            u if new[i] is not cache[i] else cache[i].shape[0] * cache[i].shape[1]
            for i, u in enumerate(uncovered)
        )

    def _padded(self, i: int, pad: int) -> torch.Tensor:
        key = (i, pad)
        if key not in self._pads:
            a = self.clean_in[i] if i >= 0 else self.clean_out
            self._pads[key] = F.pad(a, (0, 0, pad, pad, pad, pad))
        return self._pads[key]

    @staticmethod
    def _gather(n, h, w, y0, x0, pad, shape, r0, c0, rh, rw, step=1) -> _Gather:
        """Where each position of the per-candidate view of rows r0 + step·a, columns c0 + step·b
        (a < rh, b < rw) comes from: the candidate's window (N×h×w at y0, x0) where it covers the
        position, else the clean activation of ``shape`` (H×W×C) zero padded by ``pad``."""
        dev = y0.device
        Hp, Wp = shape[0] + 2 * pad, shape[1] + 2 * pad
        ar_h, ar_w = torch.arange(rh, device=dev) * step, torch.arange(rw, device=dev) * step
        rows = ((r0 + pad) * Wp + (c0 + pad))[:, None] + (ar_h[:, None] * Wp + ar_w).flatten()
        dy, dx = y0 - r0, x0 - c0
        if step == 1 and n and bool(((dy == dy[0]) & (dx == dx[0])).all()):
            # the window sits at the same offset in every candidate's view (stride-1 layers): the
            # clean tiles, then one slice copy of the window over them
            oy, ox = int(dy[0]), int(dx[0])
            y_lo, y_hi, x_lo, x_hi = max(0, oy), min(rh, oy + h), max(0, ox), min(rw, ox + w)
            copy = (y_lo, y_hi, x_lo, x_hi, oy, ox) if y_hi > y_lo and x_hi > x_lo else ()
            return _Gather(_compact(rows.flatten()), (n, rh, rw), pad, copy)
        # offsets differ (strided layers, the paste at the switch): one gather from the padded
        # activation's rows followed by the window's rows (index_copy_ of the window into the tiles
        # took ~3x as long)
        wy = ar_h - dy[:, None]  # N×rh: the window's row at each view row
        wx = ar_w - dx[:, None]
        cover = ((wy >= 0) & (wy < h))[:, :, None] & ((wx >= 0) & (wx < w))[:, None, :]
        cand = torch.arange(n, device=dev)[:, None, None]
        from_win = (
            Hp * Wp
            + (cand * h + wy.clamp(0, h - 1)[:, :, None]) * w
            + wx.clamp(0, w - 1)[:, None, :]
        )
        index = _compact(torch.where(cover, from_win, rows.view(n, rh, rw)).flatten())
        return _Gather(index, (n, rh, rw), pad, None)

    @staticmethod
    def _take(g: _Gather, win, clean_pad) -> torch.Tensor:
        """The view :meth:`_gather` planned (N×rh×rw×C), from the window and the padded activation."""
        C = clean_pad.shape[-1]
        flat = clean_pad.view(-1, C)
        if g.copy is None:
            table = torch.cat([flat, win.reshape(-1, C)])
            return table.index_select(0, g.index).view(*g.shape, C)
        out = flat.index_select(0, g.index).view(*g.shape, C)
        if g.copy:
            y_lo, y_hi, x_lo, x_hi, oy, ox = g.copy
            out[:, y_lo:y_hi, x_lo:x_hi] = win[:, y_lo - oy : y_hi - oy, x_lo - ox : x_hi - ox]
        return out

    def _plan(self, rows: torch.Tensor, cols: torch.Tensor) -> list:
        """The geometry of :meth:`features_at_switch` for candidates at (rows, cols): per step
        ``(i, patch, res, zero)``: the patch's gather, the residual's gather (None without a
        residual) and the 0/1 mask of the output window's positions inside the image (None where all
        are); last, the paste's gather. It depends on the positions only, so the same batch of
        pixels of another image of the same size reuses it: kept (int32 indices) up to
        ``PLAN_CACHE_BYTES``, past which new plans are computed and not kept (nothing is evicted);
        :meth:`prepare` empties the cache when the image size or the switch changes."""
        key = (
            rows.cpu().numpy().tobytes(),
            cols.cpu().numpy().tobytes(),
            self.n_switch,
            self.size,
            str(rows.device),
        )
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        dev = rows.device
        n = len(rows)
        y0, x0, h, w = rows, cols, 1, 1
        H, W = self.size
        sizes = [(H, W)]
        plan = []
        block = None
        for i, st in enumerate(self.steps):
            if st.block_start:
                block = (y0, x0, h, w, i)
            k, s, p = st.conv.kernel_size, st.conv.stride, st.conv.padding
            oy, ox, ho, wo = _cone(st.conv, y0, x0, h, w)
            rh, rw = (ho - 1) * s[0] + k[0], (wo - 1) * s[1] + k[1]
            pad = max(rh, rw) + 16  # room for windows that reach past the border
            patch = self._gather(
                n, h, w, y0, x0, pad, (H, W), oy * s[0] - p[0], ox * s[1] - p[1], rh, rw
            )
            H = (H + 2 * p[0] - k[0]) // s[0] + 1
            W = (W + 2 * p[1] - k[1]) // s[1] + 1
            res = None
            if st.residual_end:
                by0, bx0, bh, bw, bi = block
                bH, bW = sizes[bi]
                if st.shortcut is None:  # the block input at the output window
                    res = self._gather(
                        n, bh, bw, by0, bx0, max(ho, wo) + 16, (bH, bW), oy, ox, ho, wo
                    )
                else:  # option A: the block input at every other row and column
                    res = self._gather(
                        n,
                        bh,
                        bw,
                        by0,
                        bx0,
                        2 * max(ho, wo) + 16,
                        (bH, bW),
                        2 * oy,
                        2 * ox,
                        ho,
                        wo,
                        step=2,
                    )
            ry = oy[:, None] + torch.arange(ho, device=dev)
            rx = ox[:, None] + torch.arange(wo, device=dev)
            inside = ((ry >= 0) & (ry < H))[:, :, None] & ((rx >= 0) & (rx < W))[:, None, :]
            # outside the image: the next layer's padding (x * 1.0 is x for finite x: exact; a
            # non-finite activation makes the full pass's logits NaN anyway)
            zero = None if bool(inside.all()) else inside[..., None].float()
            plan.append((i, patch, res, zero))
            y0, x0, h, w = oy, ox, ho, wo
            sizes.append((H, W))
        zero = torch.zeros(n, dtype=torch.long, device=dev)
        plan.append(self._gather(n, h, w, y0, x0, 0, (H, W), zero, zero, H, W))
        tensors = [plan[-1].index]
        for _, patch, res, zero in plan[:-1]:
            tensors += (
                [patch.index]
                + ([] if res is None else [res.index])
                + ([] if zero is None else [zero])
            )
        size = sum(t.numel() * t.element_size() for t in tensors)
        with self._plan_lock:  # the exhaustive map's worker threads share the cache
            if key not in self._plans and self._plan_bytes + size <= PLAN_CACHE_BYTES:
                self._plans[key] = plan
                self._plan_bytes += size
        return plan

    @torch.inference_mode()
    def features_at_switch(
        self, rows: torch.Tensor, cols: torch.Tensor, colours: torch.Tensor
    ) -> torch.Tensor:
        """The activation after block ``switch - 1`` for each candidate (N×C×H×W, channels last)."""
        dev = self.clean_out.device
        rows, cols = rows.to(dev).long(), cols.to(dev).long()
        n = len(rows)
        plan = self._plan(rows, cols)
        mean, std = self.model.mean.view(1, -1), self.model.std.view(1, -1)
        win = ((colours.to(dev).float() - mean) / std).view(
            n, 1, 1, -1
        )  # the changed pixel, normalised as the wrapper does
        block = None
        for (i, patch, res, zero), st in zip(plan, self.steps):
            if st.block_start:
                block = (win, i)
            y = F.conv2d(
                self._take(patch, win, self._padded(i, patch.pad)).permute(0, 3, 1, 2),
                st.conv.weight,
                st.conv.bias,
                st.conv.stride,
                0,
                1,
                st.conv.groups,
            )
            y = _elementwise(st.post, y)
            if st.residual_end:
                bwin, bi = block
                r = self._take(res, bwin, self._padded(bi, res.pad))
                if st.shortcut is not None:  # option A: the new channels are zero
                    r = F.pad(r, (st.shortcut.pad, st.shortcut.pad))
                y.add_(r.permute(0, 3, 1, 2))  # y is this step's own tensor
                if st.after_add is not None:
                    y = _elementwise([st.after_add], y)
            win = y.permute(0, 2, 3, 1)
            if zero is not None:
                win.mul_(zero)
        full = self._take(plan[-1], win, self._padded(-1, 0))
        return full.permute(0, 3, 1, 2)

    @torch.inference_mode()
    def __call__(
        self, rows: torch.Tensor, cols: torch.Tensor, colours: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N × classes) of the image with pixel (rows[i], cols[i]) set to colours[i].

        The network after the switch runs in equal chunks of :meth:`rest_batch` candidates where
        that divides N (a batch whose activations stay in cache runs faster per image on a CPU),
        else whole. Equal chunks only: a kernel chosen by the chunk's shape then shows in every
        candidate of the batch, so the exhaustive map's run-time check (a full batch of the map's
        candidates against full fp32 passes, ``onepixel.ExhaustiveSearch``) sees it; a last
        chunk of another size could round differently (ResNet-20's rest at batch 1-2 and
        MobileNetV2's at 1-8 differ from batch 256 in the last bits here, a referee's finding)
        and slip past a random check."""
        return self.rest(self.features_at_switch(rows, cols, colours))

    @torch.inference_mode()
    def rest(self, f: torch.Tensor) -> torch.Tensor:
        """The logits from activations at the switch (:meth:`features_at_switch`), the network after
        the switch in full fp32, in equal chunks of :meth:`rest_batch` where that divides N, else whole
        (see :meth:`__call__`)."""
        k = self.rest_batch()
        if len(f) <= k or len(f) % k:
            return self.arch.rest(f, self.n_switch)
        return torch.cat([self.arch.rest(f[i : i + k], self.n_switch) for i in range(0, len(f), k)])

    @torch.inference_mode()
    def prepare_screen(self, dtype=torch.bfloat16, compile: bool = False) -> Incremental:
        """The clean image's pre-activations after the switch for :meth:`screen` (from the current
        clean activation at the switch). ``compile``: the screen's arithmetic through
        ``torch.compile`` (:class:`_Compiled`: its elementwise work fused around the convolutions;
        eager where compiling fails)."""
        if not self.supports_screen():
            raise ValueError(
                f"Incremental.screen: this {self.arch.name} has an activation that is not ReLU / ReLU6: "
                "no delta form (run precision fp32)"
            )
        cls = _DeltaRest if self.arch.name == "CifarResNet" else _DeltaSteps
        self._delta = cls(self.model, self.clean_out, self.n_switch, dtype, compile)
        if compile:
            # compile here, in the caller's thread, for the chunk screen() runs (its last chunk
            # padded to it) at one intra-op thread, as the exhaustive map runs every screen (its
            # worker threads, or the caller under one thread): dynamo guards on the thread count
            from .onepixel import _one_thread  # lazy: onepixel imports this module

            first = self._delta.first
            with _one_thread(first.device):
                self._delta.run.warm(
                    first.expand(self.rest_batch(), *first.shape[1:]).contiguous(
                        memory_format=torch.channels_last
                    ),
                    self._delta,
                )
        return self

    def screen_compiled(self) -> bool:
        """Whether :meth:`screen` runs compiled (after :meth:`prepare_screen` with ``compile``: its
        warm-up compiled and nothing failed since)."""
        run = getattr(self._delta, "run", None)
        return isinstance(run, _Compiled) and run.compiled is not None and run.failed is None

    def supports_screen(self) -> bool:
        """Whether :meth:`screen` can run this network: a CIFAR ResNet, or a MobileNetV2 whose
        activations after the switch are ReLU / ReLU6 (piecewise linear: their delta form is exact
        arithmetic on the clean pre-activation)."""
        if self.arch.name == "CifarResNet":
            return True
        return all(
            isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.ReLU | nn.ReLU6 | nn.Identity)
            for mods, _, _ in self.arch.blocks
            for m in mods
        )

    @torch.inference_mode()
    def screen(self, f: torch.Tensor, dtype=torch.bfloat16) -> torch.Tensor:
        """Screening logits (ours, session s40) from fp32 activations at the switch: the network after
        the switch in *delta form* with ``dtype`` convolutions (:class:`_DeltaRest`): every convolution
        runs on the candidate's difference from the clean image's activation, in ``dtype``, added to
        the clean image's fp32 pre-activation. The error is relative to the change the pixel makes,
        not to the activations: on ResNet-20 about a tenth of plain bf16's (measured: docs/p1.md).
        Not the fp32 answer: a score for :class:`~pixelrobust.onepixel.ExhaustiveSearch` to rank with.
        :meth:`prepare_screen` first (after :meth:`prepare`)."""
        if self._delta is None or self._delta.dtype != dtype:
            raise RuntimeError(
                "Incremental.screen: call prepare_screen(dtype) after prepare(image) first"
            )
        k = self.rest_batch()
        out = []
        for i in range(0, len(f), k):
            part = f[i : i + k]
            if len(part) < k < len(f):  # the last chunk, padded to the others' shape (one graph)
                pad = part[-1:].expand(k - len(part), *part.shape[1:])
                part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
                out.append(self._delta(part)[: len(f) - i])
            else:
                out.append(self._delta(part))
        return torch.cat(out)

    def rest_batch(self) -> int:
        """Candidates per chunk of the network after the switch (ours): the largest power of two
        whose activation at the switch fits in ``REST_CHUNK_BYTES`` (1 MiB, below a 2 MiB L2 per
        core). ResNet-20 at 32 (switch 5, 32 × 16 × 16 fp32): 32; MobileNetV2 at 224 (switch 11,
        64 × 14 × 14): 16. Measured at one thread, 256 candidates, CPU time (session s38): ResNet-20
        149 ms in chunks of 32 against 181 ms whole (16: 153, 64: 153); MobileNetV2, 64 candidates,
        306 ms in chunks of 16 against 359 whole (8: 367, and its logits differ from batch 64's).
        On CUDA: no chunks."""
        if self.clean_out.device.type != "cpu":
            return 1 << 30
        per = self.clean_out.numel() * self.clean_out.element_size()
        return 1 << max(0, int(math.floor(math.log2(max(1, REST_CHUNK_BYTES // per)))))


class _DeltaRest:
    """A CIFAR ResNet from block ``n`` on, in delta form (ours, session s40): for a candidate whose
    activation at the switch is ``x0 + d`` (``x0`` the clean image's), each convolution runs on the
    difference only, in low precision (its batch norm folded into the weights; no bias: the clean
    pre-activation carries it), and is added to the clean image's fp32 pre-activation:
    ``relu(P + conv(d)) - relu(P)`` is ``max(conv(d), -P) - relu(-P)``, two fp32 operations over cached
    ``-P`` and ``relu(-P)``. Rounding then scales with the change ``d``, not with the activation: a
    pixel that barely moves the network gets a screening error near zero. Shortcuts: identity and
    option A (linear, on ``d`` in fp32); option B's 1 × 1 convolution and batch norm in delta form."""

    def __init__(self, model, clean_out: torch.Tensor, n: int, dtype, compile: bool = False):
        net = model.net
        seq = [*net.layer1, *net.layer2, *net.layer3][n - 1 :]
        self.dtype, self.fc = dtype, net.fc
        self.run = _DELTA_REST if compile else _delta_rest
        cl = torch.channels_last
        x0 = clean_out.permute(2, 0, 1)[None].contiguous(memory_format=cl)
        self.first = x0  # the clean activation at the switch

        self.layers = []
        for b in seq:
            p1 = b.bn1(b.conv1(x0))
            h0 = F.relu(p1)
            p2 = b.bn2(b.conv2(h0)) + b.downsample(x0)
            short = b.downsample
            if isinstance(short, nn.Sequential):  # option B: a 1 x 1 convolution and a batch norm
                short = (_folded_weight(short[0], short[1], dtype), short[0].stride)
            elif not isinstance(short, nn.Identity | _pad_type()):
                raise ValueError(f"delta screen: unsupported shortcut {type(short).__name__}")
            self.layers.append(
                (
                    _folded_weight(b.conv1, b.bn1, dtype),
                    b.conv1.stride,
                    (-p1).contiguous(memory_format=cl),
                    F.relu(-p1).contiguous(memory_format=cl),
                    _folded_weight(b.conv2, b.bn2, dtype),
                    (-p2).contiguous(memory_format=cl),
                    F.relu(-p2).contiguous(memory_format=cl),
                    short,
                )
            )
            x0 = F.relu(p2)
        self.last = x0.contiguous(memory_format=cl)

    def state(self) -> tuple:
        return self.first, self.layers, self.last, self.fc, self.dtype

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return self.run(f, *self.state())


def _delta_rest(f, first, layers, last, fc, dtype) -> torch.Tensor:
    """:class:`_DeltaRest`'s arithmetic, a function of its tensors (one compiled graph serves every
    image of a size: :class:`_Compiled`)."""
    d = f - first
    for w1, stride, n1, n1p, w2, n2, n2p, short in layers:
        y = F.conv2d(d.to(dtype), w1, None, stride, 1)
        dh = torch.maximum(y, n1).sub_(n1p)
        y = F.conv2d(dh.to(dtype), w2, None, 1, 1).float()
        if isinstance(short, tuple):
            y.add_(F.conv2d(d.to(dtype), short[0], None, short[1]))
        else:
            y.add_(short(d))
        d = torch.maximum(y, n2).sub_(n2p)
    out = d + last
    return fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)).float()


class _DeltaSteps:
    """A MobileNetV2 from block ``n`` on, in delta form (ours, session s40; see :class:`_DeltaRest`):
    per convolution, the change ``d`` from the clean activation runs through the convolution in low
    precision (batch norm folded into its weights, no bias) and is added to the clean image's fp32
    pre-activation ``P``: after a ReLU6 the change is ``clamp(y, -P, 6 - P) + (P - relu6(P))``, after a
    ReLU ``max(y, -P) - relu(-P)``, after none ``y``; a residual adds the block input's change."""

    def __init__(self, model, clean_out: torch.Tensor, n: int, dtype, compile: bool = False):
        arch = _arch(model)
        self.dtype, self.classifier = dtype, model.net.classifier
        self.run = _DELTA_STEPS if compile else _delta_steps
        cl = torch.channels_last
        x = clean_out.permute(2, 0, 1)[None].contiguous(memory_format=cl)
        self.first = x
        self.steps = []
        block_in = None
        for st in _steps(arch.blocks[n:]):
            if st.block_start:
                block_in = x
            bn = [m for m in st.post if isinstance(m, nn.BatchNorm2d)]
            acts = [m for m in st.post if isinstance(m, nn.ReLU | nn.ReLU6)]
            if len(bn) != 1 or len(acts) > 1 or st.post.index(bn[0]) != 0:
                raise ValueError(
                    "delta screen: a convolution needs one batch norm, then at most one ReLU / ReLU6"
                )
            c = st.conv
            w = _folded_weight(c, bn[0], dtype)
            p = _elementwise(st.post[:1], c(x))  # the clean pre-activation (fp32)
            if st.residual_end:
                if acts or st.after_add is not None or st.shortcut is not None:
                    raise ValueError(
                        "delta screen: a residual block must end linear, with an identity shortcut"
                    )
                p = p + block_in
            act = type(acts[0]) if acts else None
            if act is nn.ReLU6:
                bounds = (-p, 6 - p, p - p.clamp(0, 6))
                x = p.clamp(0, 6)
            elif act is nn.ReLU:
                bounds = (-p, None, -F.relu(-p))
                x = F.relu(p)
            else:
                bounds, x = None, p
            if bounds is not None:
                bounds = tuple(
                    None if b is None else b.contiguous(memory_format=cl) for b in bounds
                )
            self.steps.append(
                (w, c.stride, c.padding, c.groups, st.block_start, st.residual_end, bounds)
            )
            x = x.contiguous(memory_format=cl)
        self.last = x

    def state(self) -> tuple:
        return self.first, self.steps, self.last, self.classifier, self.dtype

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return self.run(f, *self.state())


def _delta_steps(f, first, steps, last, classifier, dtype) -> torch.Tensor:
    """:class:`_DeltaSteps`' arithmetic, a function of its tensors (see :func:`_delta_rest`); the
    head is torchvision's MobileNetV2 after its features: average pooling, then the classifier."""
    d = f - first
    block_d = None
    for w, stride, padding, groups, start, res_end, bounds in steps:
        if start:
            block_d = d
        # y stays in low precision: the fp32 operations below read it as it is (no copy)
        y = F.conv2d(d.to(dtype), w, None, stride, padding, 1, groups)
        if res_end:
            y = block_d + y  # fp32 when the block's input change is
        if bounds is None:
            d = y  # a linear step: the next convolution takes it as it is
        elif bounds[1] is not None:  # ReLU6
            d = torch.clamp(y, bounds[0], bounds[1]).add_(bounds[2])
        else:  # ReLU
            d = torch.maximum(y, bounds[0]).add_(bounds[2])
    x = F.adaptive_avg_pool2d(last + d, (1, 1))
    return classifier(torch.flatten(x, 1)).float()


class _Compiled:
    """``fn(f, *state)`` through ``torch.compile`` (ours, session s41; inductor: on a CPU it needs a C++
    compiler), for the delta screens: their elementwise fp32 work (the tensor-bound clamps, the dtype
    copies) fused into few loops around the low-precision convolutions. Measured on this CPU, one
    thread, 64 candidates (docs/p1.md, "Session s41"): ResNet-20's screen 5.9 ms against 9.2
    eager, MobileNetV2's 75 against 157-169 (its fp32 rest: 226). A screen, not the fp32 answer:
    the compiled arithmetic differs from the eager one in the last bits, and the exhaustive map's
    band measures the error of the screen that ran. The state's tensors are inputs, so one compiled
    graph serves every image of a size (``dynamic=False``: a new input shape compiles anew).

    The first call of each key (input shape, intra-op thread count, grad and inference mode, the
    modules passed: the guards dynamo recompiles on) compiles under a lock (the exhaustive map calls
    the screen from worker threads); if compiling or a compiled call fails, the error is logged once
    and ``fn`` runs eagerly from then on in this process (:attr:`failed` says why); with dynamo
    disabled (``TORCHDYNAMO_DISABLE=1``) it runs eagerly from the start. Dynamo compiles at most
    ``torch._dynamo.config.recompile_limit`` (8) graphs of one function per process; past that it
    runs new keys eagerly itself, with its own warning (many models or image sizes in one process)."""

    def __init__(self, fn):
        self.fn, self.compiled, self.failed = fn, None, None
        self.seen: set = set()
        self.lock = threading.Lock()

    @staticmethod
    def _key(f: torch.Tensor, state) -> tuple:
        return (
            tuple(f.shape),
            f.dtype,
            f.device.type,
            torch.get_num_threads(),
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            tuple(id(m) for m in state if isinstance(m, nn.Module)),
        )

    def warm(self, f: torch.Tensor, delta) -> None:
        """Compile for ``f``'s shape now (a delta screen's call on ``f``), unless done or failed."""
        if self.failed is None and self._key(f, delta.state()) not in self.seen:
            delta(f)

    def __call__(self, f: torch.Tensor, *state):
        if self.failed is None and getattr(torch._dynamo.config, "disable", False):
            self.failed = "dynamo is disabled (TORCHDYNAMO_DISABLE=1)"
            log.info("the delta screen runs eagerly: %s", self.failed)
        if self.failed is None:
            key = self._key(f, state)
            try:
                if key in self.seen:
                    return self.compiled(f, *state)
                with self.lock:
                    if self.failed is None:
                        if self.compiled is None:
                            self.compiled = torch.compile(self.fn, dynamic=False)
                        out = self.compiled(f, *state)
                        self.seen.add(key)
                        return out
            except Exception as e:  # no C++ compiler, an unsupported op: the eager screen
                with self.lock:
                    if self.failed is None:
                        self.failed = f"{type(e).__name__}: {e}"[:500]
                        log.warning(
                            "the delta screen's torch.compile failed (%s); the screen runs eagerly "
                            "(slower, the same maps)",
                            self.failed,
                        )
        return self.fn(f, *state)


_DELTA_REST, _DELTA_STEPS = _Compiled(_delta_rest), _Compiled(_delta_steps)


def _folded_weight(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype) -> torch.Tensor:
    """``conv``'s weight times ``bn``'s eval-mode scale, in ``dtype``, channels-last: the delta form's
    convolution of a change (the shift cancels in a difference, so no bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (
        (conv.weight * scale.view(-1, 1, 1, 1))
        .to(dtype)
        .contiguous(memory_format=torch.channels_last)
    )


def _pad_type():
    from .models import _PadShortcut  # lazy, as in _cifar_resnet

    return _PadShortcut


def cost_fraction(model, side: int, switch: int) -> float:
    """Multiply-accumulates of the convolutions of the incremental path per candidate over the full
    forward pass's (from the geometry: windows for the first ``switch`` blocks, full tensors for
    every other convolution of the network, their sizes from one forward pass of a blank image)."""
    arch = _arch(model)
    if any(m.training for m in model.modules()):
        raise ValueError("cost_fraction runs a forward pass: put the model in eval mode first")
    macs = {}

    def count(m, a, o):
        k = m.kernel_size[0] * m.kernel_size[1]
        macs[m] = m.in_channels // m.groups * m.out_channels * k * o.shape[2] * o.shape[3]

    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    hooks = [m.register_forward_hook(count) for m in convs]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, model.mean.shape[1], side, side, device=model.mean.device))
    finally:
        for hk in hooks:
            hk.remove()
    full = float(sum(macs.values()))
    inc, h = full, 1
    for mods, _, _ in arch.blocks[:switch]:
        for m in mods:
            if isinstance(m, nn.Conv2d):
                k, s = m.kernel_size[0], m.stride[0]
                h = -(-(h + k - 1) // s)
                per = m.in_channels // m.groups * m.out_channels * k * k
                inc += per * h * h - macs[m]
    return inc / full if full else math.nan

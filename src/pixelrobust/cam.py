"""Grad-CAM++ maps (pytorch_grad_cam) for our wrapped models."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from .models import Classifier
from .runtime import model_device

MAX_HEAD_LAYERS = (
    4  # ours: layers with weights a classifier head may have after the last feature map
)

log = logging.getLogger(__name__)


def target_layer(model: Classifier, example: torch.Tensor | None = None) -> torch.nn.Module:
    """The layer whose activations Grad-CAM++ weighs: ``models.<name>.cam_layer`` when given, else found by
    :func:`find_target_layer` (the module that outputs the feature map the classifier head pools), traced on
    ``example`` (images in [0, 1]; default a blank image at the model's input size). The layer found is
    logged with its output shape."""
    net = model.net
    name = getattr(model, "cam_layer", None)
    if name:
        try:
            return net.get_submodule(name)
        except AttributeError:
            layers = [n for n, _ in net.named_modules() if n][-8:]
            raise ValueError(
                f"models.{model.name}.cam_layer is {name!r}, which is not a module of {type(net).__name__}; "
                f"give a dotted name from net.named_modules(), e.g. one of {layers}"
            ) from None
    if example is None or len(example) == 0:
        x = _probe_input(model)
    else:
        x = (example[:1].to(model.mean.device) - model.mean) / model.std
    try:
        layer, shape = _find(net, x)
    except ValueError as e:
        if model.name:
            raise ValueError(str(e).replace("models.<name>.", f"models.{model.name}.")) from None
        raise
    log.info(
        "Grad-CAM++ layer of %s: %s, output %s",
        model.name or type(net).__name__,
        {m: n for n, m in net.named_modules()}[layer],
        "x".join(map(str, shape)),
    )
    return layer


def _probe_input(model: Classifier) -> torch.Tensor:
    side = getattr(model, "input_size", None) or (224 if (model.num_classes or 0) >= 1000 else 32)
    h, w = (side, side) if isinstance(side, int) else tuple(side)
    return torch.zeros(1, model.mean.shape[1], h, w, device=model.mean.device)


def find_target_layer(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The layer Grad-CAM++ should weigh: the module that outputs the feature map the classifier head reads.

    One forward pass of ``x`` (already normalised) is traced: module outputs with forward hooks, every
    torch operation's output shape with a ``TorchFunctionMode``, so functional operations in a
    ``forward`` (``F.relu``, ``x * attention``, ``a + b``, ``x.mean``) are seen too. From the logits the
    autograd graph is walked back to the first tensors shaped N×C×H×W with H·W > 1: the feature map the
    head consumes. Then

    * an output of a pooling operation that keeps H·W > 1 (a VGG's ``avgpool``, an ``AvgPool2d(2)``
      before ``flatten``) is followed back to what it pools;
    * an output of a functional operation (no module returns it) is followed back through its inputs
      of the same shape (``f * sigmoid(attention(f))`` leads to ``f``; a broadcast 1-channel input is
      not followed); two or more such inputs (``relu(h + body(h))`` in a top-level forward) are
      ambiguous and refused;
    * a branch that reaches the logits only as a per-image scalar (a side term added to all logits)
      is not the head's feature map; two different feature maps feeding the head are refused.

    Several modules return the chosen tensor (a block, the Sequential stage holding it, an in-place
    activation); the one returned is the outermost that is an element of a container (``layer3[-1]``
    of a CIFAR ResNet, ``features[-1]`` of MobileNetV2, ``layer4[-1]`` of a torchvision ResNet), else
    the outermost. Refused, with the reason and ``models.<name>.cam_layer`` as the fix: no spatial
    output at all; convolutions that run on 1×1 maps after the last spatial one (a network at too small
    an input, e.g. an ImageNet ResNet-18 on 32×32 images); many layers with weights after it (a vision
    transformer's patch embedding); a 1-channel map.
    """
    return _find(net, x)[0]


class _Shapes(TorchFunctionMode):
    """Records the shape of every tensor a torch operation returns, keyed by its autograd node."""

    def __init__(self):
        super().__init__()
        self.shapes: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t) and t.grad_fn is not None:
                self.shapes.setdefault(t.grad_fn, tuple(t.shape))
        return out


def _is_pool(node) -> bool:
    return "pool" in type(node).__name__.lower()


def _spatial(shape, side: tuple[int, int]) -> bool:
    """N×C×H×W with H·W > 1 and H, W within the input's ``side`` (a channels-last N×H×W×C tensor, as
    ConvNeXt's and Swin's layer norms make, mostly is not: its last side is the channel count)."""
    return (
        shape is not None
        and len(shape) == 4
        and shape[-2] * shape[-1] > 1
        and shape[-2] <= side[0]
        and shape[-1] <= side[1]
    )


def _inputs(node, shapes: dict) -> list:
    """The nearest recorded tensors ``node`` was computed from (walking through unrecorded autograd nodes)."""
    found, seen, stack = [], set(), [n for n, _ in node.next_functions if n is not None]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in shapes:
            found.append(n)
        else:
            stack.extend(m for m, _ in n.next_functions if m is not None)
    return found


def _find(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, tuple]:
    events: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    at_hook: dict = {}  # autograd node of a module's output when it returned (before later in-place ops) -> name
    names = {m: n for n, m in net.named_modules()}

    def record(mod, inp, out):
        events.append((names[mod], mod, out))
        if torch.is_tensor(out) and out.grad_fn is not None:
            at_hook.setdefault(out.grad_fn, names[mod])

    hooks = [m.register_forward_hook(record) for m in net.modules() if m is not net]
    rec = _Shapes()
    was_training = net.training
    try:
        net.eval()
        with torch.enable_grad(), rec:
            logits = net(x.detach().clone().requires_grad_(True))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    shapes = rec.shapes
    kind = type(net).__name__
    side = (int(x.shape[-2]), int(x.shape[-1]))
    if not torch.is_tensor(logits) or logits.grad_fn is None:
        raise ValueError(
            f"{kind} returns no tensor computed from its input; set models.<name>.cam_layer"
        )
    # modules by the autograd node of their output *after* the forward pass (an in-place activation
    # applied later makes a conv's output the activation's), in the order they ran
    by_node: dict = {}
    for i, (n, m, o) in enumerate(events):
        if torch.is_tensor(o) and o.grad_fn is not None:
            by_node.setdefault(o.grad_fn, []).append((i, n, m))
    # walk back from the logits to the first spatial tensors; a path that passed through a per-image
    # scalar is a side term, kept apart
    main, aside, visited, collapse = [], [], set(), []
    stack = [(logits.grad_fn, False)]
    while stack:
        node, through_scalar = stack.pop()
        if node is None or (node, through_scalar) in visited:
            continue
        visited.add((node, through_scalar))
        shape = shapes.get(node)
        if _spatial(shape, side):
            (aside if through_scalar else main).append(node)
            continue
        if (
            shape is not None
            and len(shape) == 4
            and "convolution" in type(node).__name__.lower()
            and any(_spatial(shapes.get(i), side) for i in _inputs(node, shapes))
        ):
            collapse.append(node)  # a convolution that turns a spatial map into a 1x1 one
        scalar = through_scalar or (
            shape is not None and math.prod(shape[1:]) <= 1 and math.prod(logits.shape[1:]) > 1
        )
        stack.extend((n, scalar) for n, _ in node.next_functions if n is not None)
    frontier = list(dict.fromkeys(main or aside))
    if not frontier:
        raise ValueError(
            f"{kind} has no layer with a spatial (N×C×H×W) output for Grad-CAM++; "
            "set models.<name>.cam_layer to the layer to use"
        )
    picks = {}
    for node in frontier:
        node = _resolve(node, shapes, by_node, side, kind)
        picks.setdefault(node, None)
    if len(picks) > 1:
        which = ["/".join(n for _, n, _ in by_node[p]) for p in picks]
        raise ValueError(
            f"{kind}'s head reads {len(picks)} different feature maps ({'; '.join(which)}); Grad-CAM++ here "
            "weighs one: set models.<name>.cam_layer to the one to use"
        )
    node = next(iter(picks))
    shape = shapes[node]
    same = by_node[node]
    containers = {
        n for m, n in names.items() if isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList))
    }
    pick = [(n, m) for _, n, m in same if n.rpartition(".")[0] in containers] or [
        (n, m) for _, n, m in same
    ]
    layer_name, layer = min(pick, key=lambda nm: nm[0].count("."))
    hw = f"{shape[-2]}x{shape[-1]}"
    if collapse:
        collapsing = {at_hook[c] for c in collapse if c in at_hook}
        ones = list(dict.fromkeys(n for n, _, _ in events if n in collapsing))[
            :3
        ]  # in the order they ran
        raise ValueError(
            f"{kind}'s feature maps shrink to 1x1 at this input size ({'x'.join(map(str, x.shape[-2:]))}): convolutions "
            f"({', '.join(ones) or 'in forward'}) run on 1x1 maps after {layer_name}, the last layer with a spatial "
            f"output ({hw}), and Grad-CAM++ of a 1x1 map is constant; set models.<name>.cam_layer: {layer_name} to use "
            f"that {hw} map, or run the model on images of the size it was made for"
        )
    at = max(i for i, _, _ in same)
    after = [
        n
        for n, m, _ in events[at + 1 :]
        if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    if len(after) > MAX_HEAD_LAYERS:
        raise ValueError(
            f"{kind}'s last layer with a spatial (N×C×H×W) output, {layer_name}, is followed "
            f"by {len(after)} layers with weights ({', '.join(after[:3])}, ...): its activations are tokens, not "
            "a feature map, and Grad-CAM++ here is defined for feature maps; set models.<name>.cam_layer to a "
            "layer with a spatial output to use anyway"
        )
    if shape[1] == 1:
        raise ValueError(
            f"{kind}'s feature map before the head, {layer_name}, has 1 channel ({'x'.join(map(str, shape))}): "
            "Grad-CAM++ of one channel is that channel itself; set models.<name>.cam_layer to the layer to use"
        )
    return layer, shape


def _resolve(node, shapes: dict, by_node: dict, side: tuple[int, int], kind: str):
    """The autograd node of a module output that holds the feature map ``node`` (see find_target_layer)."""
    for _ in range(len(shapes) + 1):
        shape = shapes[node]
        if _is_pool(node):
            ins = [n for n in _inputs(node, shapes) if _spatial(shapes.get(n), side)]
            if len(ins) == 1:
                node = ins[0]
                continue
        if node in by_node:
            return node
        same = [n for n in _inputs(node, shapes) if shapes.get(n) == shape]
        if len(same) == 1:
            node = same[0]
            continue
        op = type(node).__name__.replace("Backward0", "").replace("Backward1", "")
        if not same:
            raise ValueError(
                f"{kind}'s head reads a feature map ({'x'.join(map(str, shape))}) that its forward computes "
                f"with {op} outside any module, from no input of that shape; Grad-CAM++ hooks a module: set "
                "models.<name>.cam_layer to the layer to use"
            )
        srcs = []
        for n in same:
            while (
                n not in by_node
                and len([m for m in _inputs(n, shapes) if shapes.get(m) == shape]) == 1
            ):
                n = [m for m in _inputs(n, shapes) if shapes.get(m) == shape][0]
            srcs.append(by_node[n][-1][1] if n in by_node else type(n).__name__)
        raise ValueError(
            f"{kind}'s head reads a feature map ({'x'.join(map(str, shape))}) that its forward computes "
            f"outside any module ({op} of {', '.join(srcs)}); Grad-CAM++ hooks a module, and none outputs "
            f"that map: set models.<name>.cam_layer to one of {', '.join(srcs)}, or compute the map in a module"
        )
    raise ValueError(
        f"{kind}: no module outputs the feature map its head reads; set models.<name>.cam_layer"
    )


def gradcam_pp(
    model: Classifier, images: torch.Tensor, classes: torch.Tensor | list[int], batch_size: int = 64
) -> np.ndarray:
    """Grad-CAM++ maps (N×H×W, each scaled to [0, 1]) of ``classes`` on ``images`` in [0, 1]."""
    # lazy: pytorch-grad-cam takes about 3 s to import; its importers need it only here
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = model_device(model)
    classes = [int(c) for c in classes]
    out = []
    with GradCAMPlusPlus(model=model, target_layers=[target_layer(model, images[:1])]) as cam:
        for s in range(0, len(images), batch_size):
            # the input carries the graph, so frozen (requires_grad=False) models work too
            x = images[s : s + batch_size].to(device).clone().requires_grad_(True)
            targets = [ClassifierOutputTarget(c) for c in classes[s : s + batch_size]]
            out.append(cam(input_tensor=x, targets=targets))
    return (
        np.concatenate(out).astype(np.float32)
        if out
        else np.zeros((0,) + tuple(images.shape[2:]), np.float32)
    )

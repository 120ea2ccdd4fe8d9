"""Benchmark (issue #25): can a narrower bf16 band make the exact ResNet-20 one-pixel map 1.8x the fp32 rate?

    PIXELROBUST_MIRROR=/work/shared/data OMP_NUM_THREADS=1 ./with-venv python bench/onepixel/delta_form.py \
        [--n-images 2] [--rounds 3] [--out bench/out/delta_form.csv]

One thread, batch 256, ResNet-20 on the first n correctly classified CIFAR-10 test images, every candidate of the
exhaustive map (1024 pixels x the 8 RGB-cube corners). Three ways to score a candidate, one row each:

* ``fp32``: the model's forward pass (the reference; the exhaustive map's path);
* ``bf16_folded``: bf16 autocast on the batch-norm-folded copy (``models.low_precision_scorer``, the bf16 DE's);
* ``delta_bf16`` (ours, a probe, not in the library): the clean image's fp32 logits plus the candidate's change,
  propagated through the folded network in bf16 for the linear operations (convolutions and the classifier
  without their biases, the shortcut's slicing and padding, the residual sums, the pooling), with every ReLU
  evaluated in fp32 on the stored clean activations, ``relu(a + Δ) − relu(a)``: bf16 then rounds the change,
  not the activations.

Columns: ``method,n_images,candidates,images_per_cpu_second,rate_vs_fp32,max_abs_logit_error,
median_abs_logit_error,max_log_odds_error``: throughput is the median over ``--rounds`` rounds alternating the
three methods (CPU time, ``time.process_time``), the errors are against fp32 over every candidate of every image
(the log-odds error is that of the true class's ``log(1/p − 1)``, which decides the screen's contender band).
docs/p1.md ("Why 1.8x is out of reach") reads it against the lower bound ``1/r + 1/8`` of the exact map's cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from pixelrobust import data, models
from pixelrobust.io import write_table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import correct_indices, resources  # noqa: E402

CORNERS = torch.tensor(
    [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32
)


class DeltaForm:
    """Logits of ``z0 + dz`` (normalised inputs) as the clean logits plus a change propagated in bf16."""

    def __init__(self, gm: fx.GraphModule, z0: torch.Tensor):
        self.gm, self.nodes, self.clean = gm, list(gm.graph.nodes), {}
        env = {}
        with torch.inference_mode():
            for n in self.nodes:
                if n.op == "placeholder":
                    env[n] = z0
                elif n.op == "output":
                    self.logits = env[n.args[0]].float()
                else:
                    env[n] = self._run(n, env, clean=True)
                self.clean[n] = env.get(n)

    def _run(self, n, env, clean=False):
        args = tuple(env[a] if isinstance(a, fx.Node) else a for a in n.args)
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            if clean or not isinstance(mod, (nn.Conv2d, nn.Linear)):
                return mod(*args)
            w = mod.weight.to(torch.bfloat16)
            if isinstance(mod, nn.Conv2d):
                return F.conv2d(args[0], w, None, mod.stride, mod.padding, mod.dilation, mod.groups)
            return F.linear(args[0], w)
        if n.op == "call_function":
            if n.target in (F.relu, torch.relu) and not clean:
                return (F.relu(self.clean[n.args[0]] + args[0].float()) - self.clean[n]).to(
                    torch.bfloat16
                )
            if n.target in (F.relu, torch.relu, F.pad, F.adaptive_avg_pool2d, torch.flatten) or (
                n.target.__module__ == "_operator"
            ):
                return n.target(*args, **n.kwargs)
            raise NotImplementedError(f"delta form: {n.target}")
        raise NotImplementedError(f"delta form: {n.op}")

    def __call__(self, dz: torch.Tensor) -> torch.Tensor:
        env = {}
        with torch.inference_mode():
            for n in self.nodes:
                if n.op == "placeholder":
                    env[n] = dz.to(torch.bfloat16)
                elif n.op == "output":
                    return self.logits + env[n.args[0]].float()
                else:
                    env[n] = self._run(n, env)
        raise AssertionError("no output node")


def candidates(x0: torch.Tensor, start: int, size: int) -> torch.Tensor:
    h, w = x0.shape[-2:]
    ii = torch.arange(start, min(start + size, h * w * 8))
    pix, col = ii // 8, ii % 8
    x = x0.repeat(len(ii), 1, 1, 1)
    x[torch.arange(len(ii)), :, pix // w, pix % w] = CORNERS[col]
    return x


def log_odds(logits: torch.Tensor, label: int) -> torch.Tensor:
    lse_other = torch.logsumexp(torch.cat([logits[:, :label], logits[:, label + 1 :]], 1), dim=1)
    return lse_other - logits[:, label]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "delta_form.csv"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_dir, weights = resources(REPO / "bench" / "out")
    model = models.build_model(models.resolve_spec("resnet20_cifar10", {}), weights, "cpu")
    folded, line = models.low_precision_scorer(model)
    print(line)
    split = data.load_split(data_dir, "test")
    index = correct_indices(model, split, args.n_images, "cpu")
    errors = {m: ([], []) for m in ("bf16_folded", "delta_bf16")}
    rates = {m: [] for m in ("fp32", "bf16_folded", "delta_bf16")}
    b = args.batch_size
    for i in index.tolist():
        x0 = split.images[i : i + 1].float()
        label = int(split.labels[i])
        z0 = ((x0 - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
        delta = DeltaForm(folded.net, z0)

        def score(method, x, delta=delta, z0=z0):
            with torch.inference_mode():
                if method == "fp32":
                    return model(x).float()
                if method == "bf16_folded":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return folded(x).float()
                z = ((x - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
                return delta(z - z0)

        for start in range(0, x0.shape[-1] * x0.shape[-2] * 8, b):
            x = candidates(x0, start, b)
            ref = score("fp32", x)
            for m, (abs_err, lo_err) in errors.items():
                got = score(m, x)
                abs_err.append((got - ref).abs().amax(1))
                lo_err.append((log_odds(got, label) - log_odds(ref, label)).abs())
        x = candidates(x0, 0, b)
        for _ in range(args.rounds):
            for m in rates:
                score(m, x)  # warm
                t0 = time.process_time()
                for _ in range(4):
                    score(m, x)
                rates[m].append(4 * b / (time.process_time() - t0))
    fp32_rate = float(np.median(rates["fp32"]))
    rows = []
    for m in rates:
        r = float(np.median(rates[m]))
        e = torch.cat(errors[m][0]) if m in errors else torch.zeros(1)
        lo = torch.cat(errors[m][1]) if m in errors else torch.zeros(1)
        rows.append(
            {
                "method": m,
                "n_images": len(index),
                "candidates": len(index) * 8192,
                "images_per_cpu_second": r,
                "rate_vs_fp32": r / fp32_rate,
                "max_abs_logit_error": float(e.max()),
                "median_abs_logit_error": float(e.median()),
                "max_log_odds_error": float(lo.max()),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out)


if __name__ == "__main__":
    main()

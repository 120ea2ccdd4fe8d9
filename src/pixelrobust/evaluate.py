"""Clean accuracy: per-image predictions for a chunk, and their aggregation into a table."""

from __future__ import annotations

import logging
import os

import pandas as pd
import torch

from .data import load_split, num_classes
from .errors import ModelError
from .io import write_table
from .models import build_model

log = logging.getLogger("pixelrobust")

PREDICTION_COLUMNS = ["image_id", "label", "pred", "top1", "top5", "p_true"]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits of ``model`` on ``images`` (in [0, 1]) in batches; returned on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        if not torch.isfinite(logits).all():
            raise FloatingPointError(
                f"model {getattr(model, 'name', '')} returned NaN or infinite logits on images {i}..{i + batch_size}; "
                "check its weights file and normalisation (models.<name>.mean / std)"
            )
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def prediction_table(logits: torch.Tensor, labels: torch.Tensor, ids: list[str]) -> pd.DataFrame:
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    probs = logits.softmax(dim=1)
    return pd.DataFrame(
        {
            "image_id": ids,
            "label": labels.numpy(),
            "pred": topk[:, 0].numpy(),
            "top1": (topk[:, 0] == labels).int().numpy(),
            "top5": (topk == labels[:, None]).any(dim=1).int().numpy(),
            "p_true": probs.gather(1, labels[:, None]).squeeze(1).numpy(),
        }
    )


# ours: the near-chance check's error rates (see chance_threshold)
CHANCE_ALPHA = 1e-3  # a model at chance passes with probability <= this
WORKING_TOP1 = 0.5  # a model at least this accurate fails with probability <= CHANCE_ALPHA


def chance_threshold(
    n: int, n_classes: int, alpha: float = CHANCE_ALPHA, working: float = WORKING_TOP1
) -> int | None:
    """The fewest correct of ``n`` images that shows a model is above chance; None if ``n`` is too few.

    Under chance (top-1 = 1/``n_classes``, a broken model: wrong normalisation, wrong weights,
    labels that do not match) the number correct is Binomial(n, 1/n_classes). The threshold
    ``k`` is the smallest with P(X >= k) <= ``alpha``, so a model at chance passes with probability
    at most ``alpha``. The check applies only when a model with top-1 ``working`` would reach
    ``k`` with probability >= 1 - ``alpha`` (P(Binomial(n, working) < k) <= ``alpha``), so a
    working model fails it with probability at most ``alpha``; for fewer images it says nothing.
    """
    # lazy: scipy.stats takes about 0.5 s to import; the workflow's main process imports evaluate (via prm)
    from scipy.stats import binom

    if n < 1:
        return None
    p0 = 1.0 / n_classes
    ks = range(n + 1)
    k = next((k for k in ks if binom.sf(k - 1, n, p0) <= alpha), None)  # sf(k-1) = P(X >= k)
    if k is None or binom.cdf(k - 1, n, working) > alpha:
        return None
    return k


def check_above_chance(
    name: str, correct, preds, n_classes: int, what: str, spec: dict | None = None
) -> None:
    """Raise a ModelError when a clean accuracy is consistent with chance (see :func:`chance_threshold`)."""
    n = len(correct)
    k = int(sum(int(c) for c in correct))
    need = chance_threshold(n, n_classes)
    if need is None or k >= need:
        return
    preds = [int(p) for p in preds]
    top = max(set(preds), key=preds.count)
    same = (
        f"; {preds.count(top)} of {n} images are predicted as class {top}"
        if preds.count(top) > n / 2
        else ""
    )
    norm = (
        f" (now mean {[round(float(v), 4) for v in spec['mean']]}, std {[round(float(v), 4) for v in spec['std']]})"
        if spec
        else ""
    )
    raise ModelError(
        f"model {name}: clean top-1 on {what} is {k}/{n} = {k / n:.3f}, no better than chance (1/{n_classes}){same}. "
        f"A working model gets at least {need} of {n} right (a model at chance does with probability <= {CHANCE_ALPHA:g}). "
        f"Likely causes: models.{name}.mean / std not on the [0, 1] scale{norm}; weights trained for another dataset or "
        f"architecture (models.{name}.dataset / arch / weights); or labels that do not match the images "
        f"(datasets.imagenet.labels for a folder source)"
    )


def clean_accuracy_chunk(
    *,
    data: str | os.PathLike,
    weights: str | os.PathLike,
    out: dict,
    spec: dict,
    bounds: tuple[int, int],
    batch_size: int,
    device: torch.device | str,
) -> pd.DataFrame:
    """Predictions of one model on test images ``bounds`` (start, stop) of ``data``, written to ``out["csv"]``
    (rule clean_accuracy_chunk)."""
    start, stop = bounds
    split = load_split(data, "test", start, stop)
    model = build_model(spec, weights, device)
    table = prediction_table(
        predict(model, split.images, batch_size, device), split.labels, split.ids
    )
    check_above_chance(
        spec["name"],
        table.top1,
        table.pred,
        spec["num_classes"],
        f"test images {start}:{stop}",
        spec,
    )
    write_table(table, out["csv"], float_format="%.6f")
    log.info("%s images %d:%d top1 %.4f", spec["name"], start, stop, table.top1.mean())
    return table


def clean_accuracy(
    *, chunks: dict[str, list[str]], out: dict, datasets: dict[str, str]
) -> pd.DataFrame:
    """Merge per-chunk predictions (``chunks``: model -> its chunk files) into ``out["csv"]``/``out["md"]``,
    ``model,dataset,n_images,top1,top5`` (fractions in [0, 1]) (rule clean_accuracy)."""
    rows = []
    for model, paths in chunks.items():
        preds = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
        if preds.image_id.duplicated().any():
            raise ValueError(f"clean accuracy of {model}: chunks overlap (duplicate image ids)")
        check_above_chance(
            model,
            preds.top1,
            preds.pred,
            num_classes(datasets[model]),
            f"all {len(preds)} test images",
        )
        rows.append(
            {
                "model": model,
                "dataset": datasets[model],
                "n_images": len(preds),
                "top1": preds.top1.mean(),
                "top5": preds.top5.mean(),
            }
        )
    table = pd.DataFrame(rows, columns=["model", "dataset", "n_images", "top1", "top5"])
    write_table(table, out["csv"], out["md"])
    return table

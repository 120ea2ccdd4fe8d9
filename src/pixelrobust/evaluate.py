"""Clean accuracy: per-image predictions for a chunk, and their aggregation into a table."""

from __future__ import annotations

import logging
import os

import pandas as pd
import torch

from .data import load_split
from .io import write_table
from .models import build_model

log = logging.getLogger("pixelrobust")

PREDICTION_COLUMNS = ["image_id", "label", "pred", "top1", "top5", "p_true"]


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
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


def clean_accuracy_chunk(spec: dict, weights: str | os.PathLike, data_dir: str | os.PathLike, start: int, stop: int,
                         out: str | os.PathLike, batch_size: int = 256, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Predictions of one model on images ``start:stop`` of its dataset's test split, written to ``out``."""
    split = load_split(data_dir, "test", start, stop)
    model = build_model(spec, weights, device)
    table = prediction_table(predict(model, split.images, batch_size, device), split.labels, split.ids)
    write_table(table, out, float_format="%.6f")
    log.info("%s images %d:%d top1 %.4f", spec["name"], start, stop, table.top1.mean())
    return table


def summarise_clean_accuracy(chunks: dict[str, list[str]], datasets: dict[str, str], out_csv, out_md) -> pd.DataFrame:
    """Merge per-chunk predictions into ``model,dataset,n_images,top1,top5`` (fractions in [0, 1])."""
    rows = []
    for model, paths in chunks.items():
        preds = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
        if preds.image_id.duplicated().any():
            raise ValueError(f"clean accuracy of {model}: chunks overlap (duplicate image ids)")
        rows.append({"model": model, "dataset": datasets[model], "n_images": len(preds),
                     "top1": preds.top1.mean(), "top5": preds.top5.mean()})
    table = pd.DataFrame(rows, columns=["model", "dataset", "n_images", "top1", "top5"])
    write_table(table, out_csv, out_md)
    return table

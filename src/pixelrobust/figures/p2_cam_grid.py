"""P2 figure: for example images and each attack, the image, the three maps of the perturbation
(‖δ‖², 1 − SSIM on the constraint's own windows, skimage's sliding 1 − SSIM), the clean Grad-CAM++
and the CAM with the primary map's top-k % outlined."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..io import load_npz
from ..map_compare import change_maps, images_by_id
from ..maps import top_k_mask
from . import style

COLUMNS = [
    "image",
    "‖δ‖² (energy)",
    "1 − SSIM, constraint windows",
    "1 − SSIM, 7×7 sliding",
    "Grad-CAM++ (clean)",
    "CAM + top-k ‖δ‖²",
]


def examples_from_chunks(cam_npzs, data_dir, bounds, examples: int):
    """The first ``examples`` images of the CAM chunks, in chunk order, wherever they are (a chunk may hold
    fewer images than ``examples``, e.g. one with a chunk size of 1): their ids, the clean images, the clean
    CAMs and each attack's adversarial images (attacks: those of the first chunk)."""
    if isinstance(cam_npzs, (str, Path)):
        cam_npzs, bounds = [cam_npzs], [bounds]
    if len(cam_npzs) != len(bounds):
        raise ValueError(
            f"{len(cam_npzs)} CAM chunk files but {len(bounds)} chunk bounds; they must pair up"
        )
    ids, images, cams, adv, attacks = [], [], [], {}, None
    for path, (start, stop) in zip(cam_npzs, bounds):
        if len(ids) >= examples:
            break
        npz = load_npz(path)
        if attacks is None:
            attacks = [k.removeprefix("adv_") for k in npz if k.startswith("adv_")]
        take = [str(i) for i in npz["image_id"]][: examples - len(ids)]
        if not take:
            continue
        ids += take
        images.append(images_by_id(data_dir, start, stop, take, path))
        cams.append(np.asarray(npz["cam_clean"])[: len(take)])
        for a in attacks:
            adv.setdefault(a, []).append(np.asarray(npz[f"adv_{a}"])[: len(take)])
    if not ids:
        return [], torch.zeros(0), np.zeros(0), {a: np.zeros(0) for a in attacks or []}
    return (
        ids,
        torch.cat(images),
        np.concatenate(cams),
        {a: np.concatenate(v) for a, v in adv.items()},
    )


def plot(
    *,
    data,
    cam,
    out: dict,
    bounds,
    examples: int,
    topk_percent: float,
    ball: dict | None = None,
) -> None:
    """Rule ``p2_cam_grid``, to ``out["png"]`` (and ``out["pdf"]``). ``cam``: one CAM chunk file or the list
    of all of them (the rule's), with its test-image ``bounds`` (start, stop) or the list of each chunk's; the first ``examples`` images are taken in chunk
    order. ``ball``: the SSIM ball's window geometry (``size``, ``stride``, ``k1``, ``k2``; default disjoint 8×8)."""
    ball = ball or {}
    geom = {
        "size": ball.get("size", 8),
        "stride": ball.get("stride", 8),
        "k1": ball.get("k1", 0.01),
        "k2": ball.get("k2", 0.03),
    }
    style.apply()
    ids, images, cams, advs = examples_from_chunks(cam, data, bounds, examples)
    attacks = list(advs)
    rows = [(n, a) for n in range(len(ids)) for a in attacks]
    fig, axes = plt.subplots(
        max(len(rows), 1),
        len(COLUMNS),
        figsize=(style.FULL_WIDTH, 1.2 * max(len(rows), 1) + 0.3),
        squeeze=False,
        constrained_layout=True,
    )
    for r, (n, attack) in enumerate(rows):
        x = images[n]
        adv = torch.from_numpy(advs[attack][n])
        maps, ratio = change_maps(x, adv, **geom)
        cam = cams[n]
        top = top_k_mask(maps["energy"], topk_percent, ties="shuffled", at_least_one=True)
        panels = [
            x.permute(1, 2, 0).numpy(),
            maps["energy"],
            maps["window_ssim"],
            maps["sliding_ssim"],
            cam,
            None,
        ]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            if c == 5:
                ax.imshow(x.permute(1, 2, 0).numpy())
                ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
                ax.contour(top.astype(float), levels=[0.5], colors="white", linewidths=0.4)
            elif img.ndim == 3:
                ax.imshow(img)
            else:
                lo, hi = (
                    (0.0, 1.0)
                    if c == 4
                    else (float(np.quantile(img, 0.01)), float(np.quantile(img, 0.99)))
                )
                if (
                    hi <= lo
                ):  # a flat map (the SSIM ball meets its bound in every window): show its full range
                    lo, hi = (
                        float(np.min(img)),
                        float(np.max(img))
                        if np.max(img) > np.min(img)
                        else float(np.min(img)) + 1.0,
                    )
                ax.imshow(
                    img, cmap="magma" if c < 4 else "jet", interpolation="nearest", vmin=lo, vmax=hi
                )
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=6)
        axes[r, 0].set_ylabel(f"{ids[n][:18]}\n{attack}\ngrid ratio {ratio:.2f}", fontsize=5)
    style.save(fig, out["png"], out.get("pdf"))

"""P2 figure: for example images, clean | adversarial | |δ| | SSIM change map | CAM | overlay, per attack."""

from __future__ import annotations

import numpy as np
import torch

from . import style

COLUMNS = ["image", "adversarial", "|δ|", "1 − SSIM", "Grad-CAM++ (clean)", "overlay"]


def plot(cam_npz, data_dir, bounds, examples: int, k_percent: float, png, pdf=None) -> None:
    import matplotlib.pyplot as plt

    from ..io import load_npz
    from ..map_compare import images_by_id, topk_mask
    from ..ssim_study import mean_ssim

    style.apply()
    npz = load_npz(cam_npz)
    ids = [str(i) for i in npz["image_id"]][:examples]
    images = images_by_id(data_dir, *bounds, ids, cam_npz)
    attacks = [k.removeprefix("adv_") for k in npz if k.startswith("adv_")]
    rows = [(n, a) for n in range(len(ids)) for a in attacks]
    fig, axes = plt.subplots(max(len(rows), 1), len(COLUMNS), figsize=(style.FULL_WIDTH, 1.2 * max(len(rows), 1) + 0.3),
                             squeeze=False, constrained_layout=True)
    for r, (n, attack) in enumerate(rows):
        x = images[n]
        adv = torch.from_numpy(npz[f"adv_{attack}"][n])
        _, smap = mean_ssim(x, adv, full=True)
        change = 1 - smap
        cam = npz["cam_clean"][n]
        delta = (adv - x).abs().amax(0).numpy()
        top = topk_mask(change, k_percent)
        panels = [x.permute(1, 2, 0).numpy(), adv.clamp(0, 1).permute(1, 2, 0).numpy(), delta, change, cam, None]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            if c == 5:
                ax.imshow(x.permute(1, 2, 0).numpy())
                ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
                ax.contour(top.astype(float), levels=[0.5], colors="white", linewidths=0.5)
            elif img.ndim == 3:
                ax.imshow(img)
            else:
                ax.imshow(img, cmap="magma" if c < 4 else "jet", vmin=0, vmax=float(np.max(img)) or 1.0)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=6)
        axes[r, 0].set_ylabel(f"{ids[n][:18]}\n{attack}", fontsize=5)
    style.save(fig, png, pdf)

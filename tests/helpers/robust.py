"""Planted map sets of a robust-vs-standard pair (8×8 images): shared by the tests of ``robust_compare``,
its figure (tests/unit/test_figures.py) and its section of SUMMARY.md (tests/unit/test_summary.py)."""

from __future__ import annotations

import numpy as np

from pixelrobust import robust_compare as rc


def rng(seed=0):
    return np.random.default_rng(seed)


H = W = 8


def p1_maps(n, n_vulnerable, *, where="centre", correct=None, seed=0):
    """A planted P1 map set: ``n`` images, the first ``n_vulnerable[i]`` pixels of a fixed order per image."""
    g = rng(seed)
    centre = rc.centre_mask(H, W, 0.25)
    pool = np.flatnonzero(centre.ravel() if where == "centre" else ~centre.ravel())
    vul = np.zeros((n, H, W), bool)
    for i, k in enumerate(n_vulnerable):
        vul[i].ravel()[g.permutation(pool)[:k]] = True
    searched = np.ones((n, H, W), bool)
    if correct is not None:
        searched[~np.asarray(correct)] = False
        vul[~np.asarray(correct)] = False
    drop = np.where(vul, 1.0, g.random((n, H, W)) * 0.5).astype(np.float32)
    return {
        "ids": np.array([str(i) for i in range(n)]),
        "vulnerable": vul,
        "drop": drop,
        "searched": searched,
    }


def synth(ids, maps, seed=0):
    n = len(ids)
    return {
        "image_id": np.array(ids),
        "searched": np.ones((n, H, W), bool),
        **{
            k: maps.get(k, rng(seed + j).random((n, H, W)))
            for j, k in enumerate(("onepixel", "ssim_ball", "gradcam_pp", "input_gradient"))
        },
    }

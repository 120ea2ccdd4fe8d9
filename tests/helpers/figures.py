"""Figures checked by what they draw: counts of what an axes draws (``_drawn``), the per-figure checks
(``check_*``) and ``_redraw``, which draws a figure of a run again from its rule's inputs and checks it.
tests/conftest.py serves them as the fixtures ``drawn``, ``figure_checks`` and ``redraw``."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from helpers import REPO, SCHEMA, mirror_path

# --- figures: checked by what they show --------------------------------------------------------
# A figure passes when each panel draws its input's data, not when its file is large (a 300-dpi PNG of empty,
# labelled axes is over 10 kB) nor when a tile of the PNG has coloured pixels (a legend or a colour bar alone
# colours a tile; tiles do not line up with axes). The matplotlib Figure a figure function builds is checked
# (`capture_figures`, `drawn`, the `check_*` functions, `redraw`); the PNG only for being a picture of it.

PNG_CHROMA = 0.15  # a pixel is coloured when max(R, G, B) - min(R, G, B) exceeds this (0-1 scale)


def _drawn(ax) -> dict:
    """What an axes draws from data, counted by kind; reference lines (axhline, axvline: not in data
    coordinates), the axes background and empty texts do not count. Values are the number of finite
    points, segments, pixels, cells, patches and texts."""
    import numpy as np
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
    from matplotlib.patches import PathPatch, Rectangle

    def finite(a):
        a = np.ma.filled(np.ma.asarray(a, dtype=float), np.nan)
        return int(np.isfinite(a).all(axis=-1).sum()) if a.ndim > 1 else int(np.isfinite(a).sum())

    out = {
        "line_points": 0,
        "markers": 0,
        "segments": 0,
        "polygons": 0,
        "pixels": 0,
        "cells": 0,
        "patches": 0,
        "texts": 0,
    }
    for line in ax.lines:
        if line.get_visible() and line.get_transform().contains_branch(ax.transData):
            out["line_points"] += finite(np.column_stack([line.get_xdata(), line.get_ydata()]))
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        if isinstance(coll, QuadMesh):
            out["cells"] += finite(coll.get_array().ravel())
        elif isinstance(coll, LineCollection):
            out["segments"] += sum(1 for seg in coll.get_segments() if len(seg) and finite(seg))
        elif isinstance(coll, PathCollection):
            off = coll.get_offsets()
            out["markers"] += finite(off) if len(off) else 0
        elif isinstance(coll, PolyCollection):
            out["polygons"] += len(coll.get_paths())
    for im in ax.images:
        if im.get_visible():
            out["pixels"] += finite(np.asarray(im.get_array(), dtype=float).reshape(-1, 1))
    for p in ax.patches:
        if not p.get_visible():
            continue
        box = (
            isinstance(p, Rectangle)
            and np.isfinite([p.get_width(), p.get_height()]).all()
            and p.get_width() * p.get_height() != 0
        )
        if box or (isinstance(p, PathPatch) and len(p.get_path().vertices)):
            out["patches"] += 1
    out["texts"] = sum(1 for t in ax.texts if t.get_visible() and t.get_text().strip())
    return out


# --- a figure of a run, drawn again from the run's own inputs and checked panel by panel ---------
# `redraw(run, name)` calls the figure function of `results/figures/<name>.png` on the files its rule reads
# (workflow/rules/*.smk: the tables and arrays under the run's results/ and resources/), catches the Figure
# instead of saving it, and checks per axes what it draws against those files (values and positions). The
# PNG on disk is then checked only for being a picture: not blank, the Figure's size. The `check_*`
# functions take a Figure and the inputs, so the unit tests (tests/unit/test_figures.py) use them too.


def _panels(fig):
    """The figure's visible data axes (colour bars left out), in creation order."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def _data_lines(ax):
    return [
        ln
        for ln in ax.lines
        if ln.get_visible() and ln.get_transform().contains_branch(ax.transData)
    ]


def _points(ax, kind=None):
    """Sorted (x, y) of the finite markers of an axes' scatter collections (rounded to 6 decimals)."""
    import numpy as np
    from matplotlib.collections import PathCollection

    out = []
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_visible():
            off = np.ma.filled(np.ma.asarray(coll.get_offsets(), dtype=float), np.nan).reshape(
                -1, 2
            )
            out += [
                (round(float(x), 6), round(float(y), 6))
                for x, y in off
                if np.isfinite([x, y]).all()
            ]
    return sorted(out)


def _pairs(xs, ys):
    import numpy as np

    return sorted(
        (round(float(x), 6), round(float(y), 6))
        for x, y in zip(xs, ys)
        if np.isfinite([x, y]).all()
    )


@contextmanager
def _capturing():
    """The Figures the figure functions build while inside, instead of saved files (closed on leaving)."""
    import matplotlib.pyplot as plt

    from pixelrobust.figures import style

    figures, save = [], style.save
    style.save = lambda fig, png, pdf=None: figures.append(fig)
    try:
        yield figures
    finally:
        style.save = save
        for fig in figures:
            plt.close(fig)


def check_region_semantics(fig, claim_images, claims):
    """Per model (a row): left, each score's (control rho, rho) of the primary, attackable images at those
    positions; right, each claim's effect at its segment count's position (x: count index + the claim's dodge)
    with an interval bar per finite effect."""
    import numpy as np

    from pixelrobust.figures.p1_region_semantics import SCORES, SHORT

    models = list(dict.fromkeys([*claims.model, *claim_images.model])) or ["(none)"]
    axes = _panels(fig)
    assert len(axes) == 2 * len(models), f"{len(axes)} panels for {len(models)} models (2 each)"
    for r, model in enumerate(models):
        left, right = axes[2 * r], axes[2 * r + 1]
        assert model in left.get_title() and model in right.get_title()
        d = claim_images[
            (claim_images.model == model)
            & claim_images.primary.astype(bool)
            & claim_images.whole_success.astype(bool)
        ]
        want = sorted(p for s, _ in SCORES for p in _pairs(d[f"rho_{s}_control"], d[f"rho_{s}"]))
        assert _points(left) == want, f"{model}: scatter {_points(left)} != (control, rho) {want}"
        m = claims[claims.model == model]
        counts = sorted(m.n_segments.unique())
        want, n = [], 0
        for c, claim in enumerate(SHORT):
            e = m[m.claim == claim].set_index("n_segments").reindex(counts)
            want += _pairs(np.arange(len(counts)) + (c - 1) * 0.18, e.effect.to_numpy(float))
            n += int(np.isfinite(e.effect.to_numpy(float)).sum())
        assert _points(right) == sorted(want), (
            f"{model}: effects drawn {_points(right)} != {sorted(want)}"
        )
        assert _drawn(right)["segments"] == n, (
            f"{model}: {_drawn(right)['segments']} interval bars for {n} effects"
        )


def check_vulnerability_grid(fig, images, segments, vulnerable, titles):
    """Per picked image (a panel, in order): the image itself where no SLIC boundary is drawn, yellow on every
    boundary pixel, a red ring at each vulnerable pixel's (column, row); panels past the last image empty."""
    import numpy as np
    from skimage.segmentation import find_boundaries

    axes = _panels(fig)
    assert len(axes) >= len(images), f"{len(axes)} panels for {len(images)} images"
    for i, ax in enumerate(axes):
        if i >= len(images):
            assert not ax.images and not ax.collections, (
                f"panel {i}: drawn past the {len(images)} images"
            )
            continue
        shown = np.asarray(ax.images[0].get_array(), dtype=float)
        x = np.asarray(images[i], dtype=float)
        assert shown.shape == x.shape, f"panel {i}: {shown.shape} drawn for an image of {x.shape}"
        yellow = np.all(np.isclose(shown, (1.0, 1.0, 0.0)), axis=-1)
        boundary = find_boundaries(segments[i], mode="inner")
        assert yellow[boundary].all(), f"panel {i}: SLIC boundary pixels not yellow"
        np.testing.assert_allclose(
            shown[~boundary], x[~boundary], err_msg=f"panel {i} does not show its image"
        )
        assert x.std() > 0.01, f"panel {i}: the image is flat"
        ys, xs = np.nonzero(vulnerable[i])
        rings = [c for c in ax.collections if c.get_sizes().size and c.get_sizes()[0] >= 10]
        assert len(rings) == 1, f"panel {i}: {len(rings)} ring collections"
        got = _pairs(*np.asarray(rings[0].get_offsets(), dtype=float).reshape(-1, 2).T)
        assert got == _pairs(xs, ys), (
            f"panel {i}: rings at {got[:5]}..., vulnerable (x, y) {_pairs(xs, ys)[:5]}..."
        )
        assert ax.get_title() == titles[i]


def check_cam_distributions(fig, comparison):
    """Per metric panel: a box per (attack, map) spanning that group's quartiles, at its attack's position;
    pointing_hit: a point per (attack, map) at its hit rate; the grid ratio: a point per (image, attack) at
    log10 of its ratio, at its attack's position."""
    import numpy as np
    from matplotlib.patches import PathPatch

    from pixelrobust.map_compare import METRICS

    data = comparison.astype({"pointing_hit": float})
    order = list(dict.fromkeys(data.attack))
    maps = list(dict.fromkeys(data["map"]))
    axes = _panels(fig)
    names = [*METRICS, "texture_spearman", "grid_ratio"]
    assert len(axes) == len(names)
    for ax, metric in zip(axes, names):
        if metric == "grid_ratio":
            d = data.drop_duplicates(["image_id", "attack"])
            want = _pairs(
                [order.index(a) for a in d.attack], np.log10(d.grid_ratio.to_numpy(float))
            )
            got = sorted(
                (round(x), y) for x, y in _points(ax)
            )  # the strip's jitter moves x by < 0.5
            assert got == sorted((round(x), y) for x, y in want), f"grid ratio: {got} != {want}"
        elif metric == "pointing_hit":
            rate = data.groupby(["attack", "map"]).pointing_hit.mean()
            want = sorted(
                (order.index(a), maps.index(m), round(float(v), 6)) for (a, m), v in rate.items()
            )
            lines = [ln for ln in ax.lines if ln.get_marker() not in ("", "None", None)]
            assert len(lines) == len(maps), (
                f"pointing_hit: {len(lines)} point series for {len(maps)} maps"
            )
            got = sorted(
                (round(float(x)), h, round(float(y), 6))
                for h, ln in enumerate(lines)
                for x, y in zip(ln.get_xdata(), ln.get_ydata())
                if np.isfinite(y)
            )
            assert got == want, f"pointing_hit: (attack, map, rate) {got} != {want}"
        else:
            want = {}
            for (a, _m), g in data.groupby(["attack", "map"]):
                v = g[metric].to_numpy(float)
                v = v[np.isfinite(v)]
                if len(v):
                    want.setdefault(order.index(a), []).append(
                        tuple(float(q) for q in np.round(np.percentile(v, [25, 75]), 4))
                    )
            got = {}
            for p in ax.patches:
                if isinstance(p, PathPatch) and p.get_visible():
                    xy = p.get_path().vertices
                    got.setdefault(round(float(xy[:, 0].mean())), []).append(
                        (round(float(xy[:, 1].min()), 4), round(float(xy[:, 1].max()), 4))
                    )
            assert {k: sorted(v) for k, v in got.items()} == {
                k: sorted(v) for k, v in want.items()
            }, f"{metric}: boxes (attack index: quartiles) {got} != {want}"


def check_synthesis_matrix(fig, table):
    """Per model (a panel): cell (row j, column i) below the diagonal is the Spearman excess of maps (i, j),
    above it (i, j) the IoU excess, in synthesis.MAPS order; a text per finite cell; title names the model."""
    import numpy as np

    from pixelrobust.synthesis import MAPS

    models = list(dict.fromkeys(table.model))
    axes = _panels(fig)
    assert len(axes) == max(len(models), 1)
    pos = {m: i for i, m in enumerate(MAPS)}
    for ax, model in zip(axes, models):
        want = np.full((len(MAPS), len(MAPS)), np.nan)
        for r in table[table.model == model].itertuples():
            i, j = sorted((pos[r.map_a], pos[r.map_b]))
            want[j, i], want[i, j] = r.spearman_excess, r.iou_excess
        (mesh,) = [
            c for c in ax.collections if hasattr(c, "get_array") and c.get_array() is not None
        ]
        got = np.ma.filled(np.ma.asarray(mesh.get_array(), dtype=float), np.nan).reshape(want.shape)
        np.testing.assert_allclose(got, want, err_msg=f"{model}: matrix cells")
        assert _drawn(ax)["texts"] == int(np.isfinite(want).sum()) and model in ax.get_title()


def check_robust_compare(fig, table, maps):
    """Per pair (a row): the mean maps of the pair's npz side by side (each array as drawn), and an effect panel
    with a point per row of finite effect at (effect, position from the top), a bar per finite interval and a
    label naming the row's section and comparison."""
    import numpy as np

    from pixelrobust.figures.robust_compare_figure import MAPS, forest_rows, interval_drawn
    from pixelrobust.robust_compare import pair_name

    pairs = list(dict.fromkeys(zip(table.standard, table.robust)))
    axes = _panels(fig)
    want_maps = [
        (pair_name(s, r), k)
        for s, r in pairs
        for k, _ in MAPS
        if k in maps.get(pair_name(s, r), {})
    ]
    assert len(axes) == len(want_maps) + len(pairs), (
        f"{len(axes)} panels for {len(want_maps)} maps and {len(pairs)} pairs"
    )
    it = iter(axes)
    for s, r in pairs:
        name = pair_name(s, r)
        for key, _ in MAPS:
            if key in maps.get(name, {}):
                np.testing.assert_allclose(
                    next(it).images[0].get_array(), maps[name][key], err_msg=f"{name} {key}"
                )
        ax = next(it)
        rows = forest_rows(table[(table.standard == s) & (table.robust == r)])
        y = np.arange(len(rows))[::-1]
        assert _points(ax) == _pairs(rows.effect, y), f"{name}: effects drawn {_points(ax)}"
        ok = interval_drawn(rows)  # finite bounds on at least MIN_IMAGES images
        assert (
            _drawn(ax)["segments"] == int(ok.sum()) and s in ax.get_title() and r in ax.get_title()
        )
        assert [t.get_text() for t in ax.get_yticklabels()] == [
            f"{a}: {c}" for a, c in zip(rows.section, rows.comparison)
        ]


def _run_config(config_files=None) -> dict:
    """The config a run used: config/config.yaml, then each ``config_files`` (default: tiny.yaml) merged
    over it as Snakemake's --configfile does, with the schema's defaults filled in."""
    from pixelrobust import config as prconfig

    cfg = prconfig.load_yaml(REPO / "config" / "config.yaml")
    for f in config_files or [REPO / "config" / "tiny.yaml"]:
        prconfig._merge(cfg, prconfig.load_yaml(f))
    prconfig.validate(cfg, SCHEMA)
    return cfg


def _chunk_files(folder, pattern="chunk-{}.npz"):
    """A rule's chunk files in chunk order (chunk-0, chunk-1, ..., not chunk-10 before chunk-2)."""
    n = sum(1 for _ in Path(folder).glob(pattern.format("*")))
    files = [Path(folder) / pattern.format(c) for c in range(n)]
    assert n and all(f.is_file() for f in files), (
        f"{folder}: chunk files {pattern} not numbered 0..{n - 1}"
    )
    return files


def _assert_png_is_the_figure(png, fig):
    """The saved PNG is a picture of ``fig``: not blank (ink and some colour), about the Figure's size at the
    style's 300 dpi (0.7-1.2 times each side: a tight bounding box trims margins and may add outside labels;
    the tiny run's figures: 0.80-1.05), and has its PDF twin."""
    import numpy as np
    from PIL import Image

    png = Path(png)
    with Image.open(png) as im:
        assert im.format == "PNG", f"{png} is not a PNG ({im.format})"
        a = np.asarray(im.convert("RGB"), dtype=float) / 255.0
    assert (a.min(axis=2) < 0.9).mean() > 0.001, f"{png} is blank"
    assert ((a.max(axis=2) - a.min(axis=2)) > PNG_CHROMA).any(), f"{png} has no coloured pixel"
    w, h = fig.get_size_inches() * 300
    assert 0.7 * w <= a.shape[1] <= 1.2 * w and 0.7 * h <= a.shape[0] <= 1.2 * h, (
        f"{png}: {a.shape[1]}x{a.shape[0]} px, the Figure is {w:.0f}x{h:.0f} px at 300 dpi"
    )
    head = png.with_suffix(".pdf").read_bytes()
    assert head.startswith(b"%PDF-") and b"/Type /Page" in head, (
        f"{png.with_suffix('.pdf')} is not a PDF with a page"
    )


def _redraw(run, name: str, config_files=None, mirror=None) -> dict:
    """Draw ``results/figures/<name>.png`` of ``run`` again from the inputs its rule reads, check each panel
    against them and the PNG against the Figure. Returns {"panels": number of panels checked, "figure": name}."""
    import numpy as np
    import pandas as pd
    import torch

    from pixelrobust.config import model_specs
    from pixelrobust.data import chunk_bounds, load_split

    run = Path(run)
    res, tables, cfg = run / "results", run / "results" / "tables", _run_config(config_files)
    png = res / "figures" / f"{name}.png"
    assert png.is_file(), f"{png} was not made"
    dataset_of = lambda m: model_specs(cfg)[m]["dataset"]  # noqa: E731
    with _capturing() as figs:
        if name == "p1_region_semantics":
            from pixelrobust.figures import p1_region_semantics

            ci, cl = (
                pd.read_csv(res / "p1" / "onepixel_claim_images.csv"),
                pd.read_csv(tables / "onepixel_claims.csv"),
            )
            p1_region_semantics.plot(
                claim_images=res / "p1" / "onepixel_claim_images.csv",
                claims=tables / "onepixel_claims.csv",
                out={"png": png},
            )
            check_region_semantics(figs[0], ci, cl)
        elif name.startswith("p1_vulnerability_grid_"):
            from pixelrobust.figures import p1_vulnerability_grid
            from pixelrobust.io import load_npz

            model = name.removeprefix("p1_vulnerability_grid_")
            maps = _chunk_files(res / "p1" / "onepixel" / model)
            segs = _chunk_files(res / "p1" / "segments" / model)
            loaded = [(load_npz(m), load_npz(s)) for m, s in zip(maps, segs)]
            starts = (
                np.concatenate([[0], np.cumsum([len(m["ids"]) for m, _ in loaded])[:-1]])
                .astype(int)
                .tolist()
            )
            data_dir = run / "resources" / "data" / dataset_of(model)
            p1_vulnerability_grid.plot(
                data=data_dir,
                maps=[str(m) for m in maps],
                segments=[str(s) for s in segs],
                out={"png": png},
                starts=starts,
            )
            # the pick, from the maps: searched (correctly classified) images, attackable ones first, at most 12,
            # shown in test-set order
            picked = sorted(
                [
                    (-int(m["vulnerable"][i].any()), start + i, m, s, i)
                    for (m, s), start in zip(loaded, starts)
                    for i in range(len(m["ids"]))
                    if m["searched"][i].any()
                ],
                key=lambda t: t[:2],
            )[:12]
            picked.sort(key=lambda t: t[1])
            if not picked:
                assert [t.get_text() for ax in figs[0].axes for t in ax.texts] == [
                    "no correctly classified image was searched"
                ]
            else:
                check_vulnerability_grid(
                    figs[0],
                    [
                        load_split(data_dir, "test", k, k + 1).images[0].permute(1, 2, 0).numpy()
                        for _, k, *_ in picked
                    ],
                    [s["segments"][i] for *_, s, i in picked],
                    [m["vulnerable"][i] for *_, m, _, i in picked],
                    [
                        f"{m['ids'][i]}\n{int(m['vulnerable'][i].sum())} vulnerable"
                        for *_, m, _, i in picked
                    ],
                )
        elif name == "p2_ssim_sweep":
            from pixelrobust.figures import p2_ssim_sweep

            table = pd.read_csv(tables / "ssim_attack.csv")
            p2_ssim_sweep.plot(
                table=tables / "ssim_attack.csv",
                matched=tables / "ssim_matched.csv",
                out={"png": png},
            )
            attacks = [a for a in p2_ssim_sweep.LABELS if a in set(table.attack)]
            assert len(_panels(figs[0])) == len(attacks)
            for ax, attack in zip(_panels(figs[0]), attacks):
                t = table[table.attack == attack]
                lines = _data_lines(ax)
                assert len(lines) == 2 and attack in ax.get_title()
                for ln, col in zip(lines, ("success_rate", "mean_ssim")):
                    assert _pairs(ln.get_xdata(), ln.get_ydata()) == _pairs(t.epsilon, t[col]), (
                        f"{attack}: {col}"
                    )
        elif name == "p2_cam_grid":
            from pixelrobust.data import available_images
            from pixelrobust.figures import p2_cam_grid
            from pixelrobust.io import load_npz
            from pixelrobust.map_compare import change_maps

            ss = cfg["ssim"]
            ds = dataset_of(ss["model"])
            n = available_images(ds, cfg["datasets"][ds], Path(mirror) if mirror else mirror_path())
            n = n if ss["n_images"].get(ds) is None else min(n, ss["n_images"][ds])
            bounds = chunk_bounds(n, ss["chunk_size"])
            cams = [res / "p2" / ss["model"] / "cam" / f"chunk-{c}.npz" for c in range(len(bounds))]
            data_dir = run / "resources" / "data" / ds
            geom = {"size": ss["window"], "stride": ss["stride"], "k1": ss["k1"], "k2": ss["k2"]}
            p2_cam_grid.plot(
                data=data_dir,
                cam=cams,
                out={"png": png},
                bounds=bounds,
                examples=ss["compare"]["examples"],
                topk_percent=ss["compare"]["topk_percent"],
                ball=geom,
            )
            # the first `examples` images of all chunks, in order (each chunk's npz lists the images it kept)
            zs = [load_npz(c) for c in cams]
            kept = [(z, i) for z in zs for i in range(len(z["image_id"]))][
                : ss["compare"]["examples"]
            ]
            attacks = [k.removeprefix("adv_") for k in zs[0] if k.startswith("adv_")]
            split = load_split(data_dir, "test", 0, n)
            where = {str(i): k for k, i in enumerate(split.ids)}
            axes = np.array(_panels(figs[0]))
            assert axes.size == len(p2_cam_grid.COLUMNS) * max(len(kept) * len(attacks), 1), (
                f"{axes.size} panels for {len(kept)} images x {len(attacks)} attacks"
            )
            rows = axes.reshape(-1, len(p2_cam_grid.COLUMNS))
            for row, ((z, i), attack) in zip(rows, [(k, a) for k in kept for a in attacks]):
                x = split.images[where[str(z["image_id"][i])]]
                np.testing.assert_allclose(row[0].images[0].get_array(), x.permute(1, 2, 0).numpy())
                maps, _ = change_maps(
                    x, torch.from_numpy(np.asarray(z[f"adv_{attack}"][i])), **geom
                )
                for c, key in ((1, "energy"), (2, "window_ssim"), (3, "sliding_ssim")):
                    np.testing.assert_allclose(
                        row[c].images[0].get_array(), maps[key], rtol=1e-5, atol=1e-9
                    )
                np.testing.assert_allclose(row[4].images[0].get_array(), z["cam_clean"][i])
                assert len(row[5].images) == 2 and attack in row[0].get_ylabel()
                assert str(z["image_id"][i])[:18] in row[0].get_ylabel()
        elif name == "p2_cam_distributions":
            from pixelrobust.figures import p2_cam_distributions

            comparison = pd.read_csv(tables / "ssim_cam_comparison.csv", dtype={"image_id": str})
            p2_cam_distributions.plot(csv=tables / "ssim_cam_comparison.csv", out={"png": png})
            check_cam_distributions(figs[0], comparison)
        elif name == "p3_gradient_maps":
            from pixelrobust.figures import p3_gradient_maps
            from pixelrobust.io import load_npz

            maps = {
                m: load_npz(res / "p3" / "gradients" / f"{m}.npz")
                for m in cfg["gradients"]["models"]
            }
            p3_gradient_maps.plot(
                npz=[res / "p3" / "gradients" / f"{m}.npz" for m in maps],
                out={"png": png},
                models=list(maps),
            )
            axes = _panels(figs[0])
            assert len(axes) == 2 * len(maps)
            for r, m in enumerate(maps):
                assert axes[2 * r].get_ylabel() == m
                for c, key in enumerate(("dataset_map", "architecture_map")):
                    np.testing.assert_allclose(axes[2 * r + c].images[0].get_array(), maps[m][key])
                    assert np.ptp(maps[m][key]) > 0, f"{m}: {key} is flat"
        elif name.startswith("p3_masked_pgd_"):
            from pixelrobust.figures import p3_masked_pgd

            norm = name.removeprefix("p3_masked_pgd_")
            csv = tables / ("masked_pgd.csv" if norm == "linf" else f"masked_pgd_{norm}.csv")
            table = pd.read_csv(csv)
            p3_masked_pgd.plot(csv=csv, out={"png": png}, norm=norm)
            models = list(dict.fromkeys(table.model))
            axes = _panels(figs[0])
            assert len(axes) == len(models)
            for ax, model in zip(axes, models):
                t = table[table.model == model]
                assert model in ax.get_title()
                lines = _data_lines(ax)
                assert sorted(ln.get_label() for ln in lines) == sorted(set(t["mask"]))
                for ln in lines:
                    u = t[t["mask"] == ln.get_label()]
                    assert _pairs(ln.get_xdata(), ln.get_ydata()) == _pairs(u.k_percent, u.top1), (
                        f"{model} {ln.get_label()}"
                    )
        elif name.startswith("p3_prm_training_"):
            from pixelrobust import prm as prprm
            from pixelrobust.figures import p3_prm_training

            model = name.removeprefix("p3_prm_training_")
            csv = (
                res
                / "p3"
                / "prm"
                / model
                / prprm.variant_name(cfg["prm"]["lattice"], 0)
                / "history.csv"
            )
            history = pd.read_csv(csv)
            p3_prm_training.plot(csv=csv, out={"png": png}, model=model)
            axes = _panels(figs[0])
            assert len(axes) == 3 and model in axes[0].get_title()
            for ax, cols in zip(axes, (["loss"], ["mse", "ce"], ["top1"])):
                raw = _data_lines(ax)[::2]  # raw and smoothed per term
                assert len(raw) == len(cols)
                for ln, c in zip(raw, cols):
                    np.testing.assert_allclose(ln.get_ydata(), history[c])
                    assert np.isfinite(history[c]).any(), f"{model}: {c} has no finite value"
        elif name.startswith("p3_prm_lambda_"):
            from pixelrobust.figures import p3_prm_lambda
            from pixelrobust.io import load_npz

            model = name.removeprefix("p3_prm_lambda_")
            sweep = pd.read_csv(res / "p3" / "prm_sweep" / f"{model}.csv")
            maps = load_npz(res / "p3" / "prm_sweep" / f"{model}.npz")["maps"]
            p3_prm_lambda.plot(
                table=res / "p3" / "prm_sweep" / f"{model}.csv",
                maps=res / "p3" / "prm_sweep" / f"{model}.npz",
                out={"png": png},
                model=model,
            )
            trained = sweep[sweep.prm == "trained"] if "prm" in sweep else sweep
            top, *map_axes = _panels(figs[0])
            ys = [tuple(np.round(ln.get_ydata(), 6)) for ln in _data_lines(top)]
            for col in ("top1", "iou", "lattice_share"):
                assert tuple(np.round(trained[col].to_numpy(float), 6)) in ys, (
                    f"{model}: no curve of {col}"
                )
            assert len(map_axes) == len(trained)
            for ax, m, lam in zip(map_axes, maps, trained["lambda"]):
                np.testing.assert_allclose(ax.images[0].get_array(), m)
                assert ax.get_title() == f"λ={lam:g}"
        elif name == "p3_defense":
            from pixelrobust.figures import p3_defense

            table = pd.read_csv(tables / "defense.csv")
            p3_defense.plot(csv=tables / "defense.csv", out={"png": png})
            axes = _panels(figs[0])
            keys = list(dict.fromkeys(zip(table.protocol, table.model)))
            assert len(axes) == len(keys), f"{len(axes)} heatmaps for {len(keys)} (protocol, model)"
            order = p3_defense.pivot(
                table, "top1"
            )  # the figure's row (defence) and column (attack) order only
            for protocol, model in keys:
                t = table[(table.protocol == protocol) & (table.model == model)]
                want = t.pivot(index="defense", columns="attack", values="top1")
                (key,) = [k for k in order if k[0] == protocol and k[2] == model]
                (ax,) = [
                    a
                    for a in axes
                    if a.get_title().startswith(f"{protocol} ·") and f"\n{model}," in a.get_title()
                ]
                got = np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)
                want = want.loc[order[key].index, order[key].columns].to_numpy(float)
                np.testing.assert_allclose(got, want, err_msg=f"{protocol} {model}")
                assert _drawn(ax)["texts"] == int(np.isfinite(want).sum()), (
                    f"{protocol} {model}: a text per cell"
                )
        elif name == "synthesis_maps":
            from pixelrobust.figures import synthesis_maps
            from pixelrobust.figures.synthesis_maps import COLUMNS, grid_view
            from pixelrobust.io import load_npz

            npzs = {m: str(res / "synthesis" / f"{m}.npz") for m in cfg["synthesis"]["models"]}
            synthesis_maps.plot(maps=npzs, out={"png": png}, examples=cfg["synthesis"]["examples"])
            rows = [
                (m, load_npz(p), n)
                for m, p in npzs.items()
                for n in range(min(cfg["synthesis"]["examples"], len(load_npz(p)["image_id"])))
            ]
            axes = np.array(_panels(figs[0])).reshape(-1, len(COLUMNS))
            assert len(axes) == max(len(rows), 1)
            for row, (m, z, n) in zip(axes, rows):
                img = np.clip(z["image"][n].transpose(1, 2, 0), 0, 1)
                np.testing.assert_allclose(row[0].images[0].get_array(), img)
                assert img.std() > 0.01 and m in row[0].get_ylabel()
                for ax, key in zip(row[1:], COLUMNS[1:]):
                    want = (
                        grid_view(z[key][n], z["searched"][n]) if key == "onepixel" else z[key][n]
                    )
                    np.testing.assert_allclose(ax.images[0].get_array(), want, err_msg=f"{m} {key}")
        elif name == "synthesis_matrix":
            from pixelrobust.figures import synthesis_matrix

            synthesis_matrix.plot(table=tables / "synthesis.csv", out={"png": png})
            check_synthesis_matrix(figs[0], pd.read_csv(tables / "synthesis.csv"))
        elif name == "robust_compare":
            from pixelrobust.figures import robust_compare_figure
            from pixelrobust.io import load_npz

            table = pd.read_csv(tables / "robust_compare.csv")
            files = {
                f"{p['standard']}__{p['robust']}": res
                / "robust_compare"
                / f"{p['standard']}__{p['robust']}.npz"
                for p in cfg["robust_compare"]["pairs"]
            }
            maps = {pair: load_npz(f) for pair, f in files.items()}
            robust_compare_figure.plot(
                table=tables / "robust_compare.csv", maps=list(files.values()), out={"png": png}
            )
            check_robust_compare(figs[0], table, maps)
        else:
            raise AssertionError(
                f"no redraw check for figure {name}; add one to tests/helpers/figures.py"
            )
        assert len(figs) == 1, f"{name}: {len(figs)} figures drawn"
        _assert_png_is_the_figure(png, figs[0])
        return {"figure": name, "panels": len(_panels(figs[0]))}

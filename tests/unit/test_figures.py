"""Figures, checked by what they show: the Figure each figure function builds (its axes and the data
they draw, compared with the input), and the PNG read-back check the workflow test applies to every
figure of the tiny run (conftest: ``capture_figures``, ``drawn``, ``png_panels``, ``assert_png_shows``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.robust import p1_maps, synth
from pixelrobust import robust_compare as rc


def panels(fig):
    """The figure's visible data axes (colour bars left out)."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def assert_every_panel_drawn(fig, drawn):
    """Every panel draws finite data and says what it is: a title or an axis label, its own or, in a grid
    of images, its column's title (on the first row)."""
    axes = panels(fig)

    def column(ax):
        spec = ax.get_subplotspec()
        return None if spec is None else (spec.get_gridspec(), spec.colspan)

    titled = {column(ax) for ax in axes if ax.get_title()}
    for i, ax in enumerate(axes):
        counts = drawn(ax)
        assert sum(counts.values()) > 0, f"panel {i} ({ax.get_title()!r}) draws nothing: {counts}"
        assert ax.get_title() or ax.get_ylabel() or ax.get_xlabel() or column(ax) in titled, (
            f"panel {i} has no title or label"
        )


def data_lines(ax):
    """Lines in data coordinates (reference lines such as axhline are not)."""
    return [ln for ln in ax.lines if ln.get_transform().contains_branch(ax.transData)]


# --- the PNG check: a picture of the Figure, not blank ---------------------------------------------


def _two_panels(path, draw_right: bool, height: float = 2.2):
    import matplotlib.pyplot as plt

    from pixelrobust.figures import style

    style.apply()
    fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH, height))
    for ax, name in zip(axes, ("left", "right")):
        (
            ax.set_title(name),
            ax.set_xlabel("x"),
            ax.set_ylabel("y"),
            ax.set_xlim(0, 1),
            ax.set_ylim(0, 1),
        )
    axes[0].plot([0.1, 0.5, 0.9], [0.2, 0.8, 0.4], marker="o")
    if draw_right:
        axes[1].plot([0.1, 0.9], [0.9, 0.1], marker="s", color=style.PALETTE[3])
    fig.savefig(path), fig.savefig(path.with_suffix(".pdf"))
    return fig


def test_png_check_passes_the_figure_and_rejects_blank_resized_or_pdf_less_files(
    tmp_path, figure_checks
):
    from PIL import Image

    png = tmp_path / "f.png"
    fig = _two_panels(png, True)
    figure_checks.png_is_the_figure(png, fig)
    Image.new("RGB", Image.open(png).size, "white").save(png)  # the right size, nothing drawn
    with pytest.raises(AssertionError, match="blank"):
        figure_checks.png_is_the_figure(png, fig)
    _two_panels(png, True, height=6.0)  # another figure's picture: 2.7 times as tall
    with pytest.raises(AssertionError, match="px at 300 dpi"):
        figure_checks.png_is_the_figure(png, fig)
    _two_panels(png, True)
    (tmp_path / "f.pdf").write_bytes(b"not a pdf")
    with pytest.raises(AssertionError, match="not a PDF"):
        figure_checks.png_is_the_figure(png, fig)


# --- the figure functions: the Figure holds the input's data --------------------------------------


def test_masked_pgd_draws_a_curve_per_mask_with_the_table_values(capture_figures, drawn):
    from pixelrobust.figures import p3_masked_pgd

    rng = np.random.default_rng(0)
    rows = [
        (m, mask, k, n, float(rng.uniform()))
        for m, n in (("a", 16), ("b", 2))
        for mask in ("top", "bottom", "random")
        for k in (25, 5, 100)
    ]
    table = pd.DataFrame(rows, columns=["model", "mask", "k_percent", "n_images", "top1"])
    p3_masked_pgd.draw(table, "unused.png", title="L∞")
    (fig,) = capture_figures
    axes = panels(fig)
    assert len(axes) == 2
    assert_every_panel_drawn(fig, drawn)
    for ax, model in zip(axes, ("a", "b")):
        assert model in ax.get_title()
        lines = data_lines(ax)
        assert [ln.get_label() for ln in lines] == ["top", "bottom", "random"]
        for ln in lines:
            want = table[(table.model == model) & (table["mask"] == ln.get_label())].sort_values(
                "k_percent"
            )
            np.testing.assert_allclose(ln.get_xdata(), want.k_percent)
            np.testing.assert_allclose(ln.get_ydata(), want.top1)


def test_prm_training_draws_every_loss_term(capture_figures, drawn):
    from pixelrobust.figures import p3_prm_training

    steps = np.arange(1, 21)
    history = pd.DataFrame(
        {
            "step": steps,
            "loss": 2.0 / steps,
            "mse": 1.0 / steps,
            "ce": 1.0 / steps + 0.1,
            "top1": np.linspace(0.1, 0.9, 20),
        }
    )
    p3_prm_training.draw(history, "m", "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)
    assert len(axes) == 3 and "m" in axes[0].get_title()
    for ax, cols in zip(axes, (["loss"], ["mse", "ce"], ["top1"])):
        lines = data_lines(ax)
        assert len(lines) == 2 * len(cols)  # raw and smoothed per term
        raw = lines[::2]
        for ln, c in zip(raw, cols):
            np.testing.assert_allclose(ln.get_ydata(), history[c])


def test_prm_lambda_draws_the_sweep_and_a_map_per_lambda(capture_figures, drawn):
    from pixelrobust.figures import p3_prm_lambda

    lambdas = [0.0, 0.5, 1.0]
    base = {
        "lambda": lambdas,
        "top1": [0.9, 0.6, 0.3],
        "iou": [0.1, 0.5, 1.0],
        "lattice_share": [0.2, 0.6, 1.0],
        "chance_share": 0.25,
        "chance_iou": 1 / 7,
        "clean_top1": 0.92,
    }
    sweep = pd.concat(
        [pd.DataFrame({**base, "prm": p}) for p in ("trained", "untrained")], ignore_index=True
    )
    maps = np.random.default_rng(1).uniform(size=(3, 8, 8))
    p3_prm_lambda.draw(sweep, maps, "m", "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    top, *map_axes = panels(fig)
    ys = [tuple(np.round(ln.get_ydata(), 6)) for ln in data_lines(top)]
    assert (
        (0.9, 0.6, 0.3) in ys and (0.1, 0.5, 1.0) in ys and len(ys) == 4
    )  # top-1, IoU, share, untrained IoU
    assert len(map_axes) == 3
    for ax, m, lam in zip(map_axes, maps, lambdas):
        np.testing.assert_allclose(ax.images[0].get_array(), m)
        assert f"{lam:g}" in ax.get_title()


def test_gradient_maps_show_both_maps_of_every_model(capture_figures, drawn):
    from pixelrobust.figures import p3_gradient_maps

    rng = np.random.default_rng(2)
    maps = {
        m: {
            "dataset_map": rng.uniform(size=(6, 6)),
            "architecture_map": rng.uniform(size=(6, 6)),
            "split": "test",
            "n_images": 4,
        }
        for m in ("a", "b")
    }
    p3_gradient_maps.draw(maps, "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)
    assert len(axes) == 4
    for r, m in enumerate(maps):
        for c, key in enumerate(("dataset_map", "architecture_map")):
            np.testing.assert_allclose(axes[2 * r + c].images[0].get_array(), maps[m][key])
        assert axes[2 * r].get_ylabel() == m


def test_defense_heatmap_shows_each_cell(capture_figures, drawn):
    from pixelrobust.figures import p3_defense

    rows = []
    for protocol in ("graybox", "adaptive"):
        for i, defense in enumerate(("none", "randomization")):
            for j, attack in enumerate(("clean", "pgd")):
                top1 = 0.9 - 0.4 * j + 0.05 * i + (0.02 if protocol == "adaptive" else 0)
                eff = np.nan if defense == "none" else 0.05
                rows.append(
                    {
                        "protocol": protocol,
                        "dataset": "cifar10",
                        "model": "m",
                        "defense": defense,
                        "attack": attack,
                        "top1": top1,
                        "effect": eff,
                        "effect_low": eff - 0.01,
                        "effect_high": eff + 0.01,
                        "n_images": 2,
                    }
                )
    table = pd.DataFrame(rows)
    p3_defense.draw(table, "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)
    assert len(axes) == 2
    for ax, protocol in zip(axes, ("graybox", "adaptive")):
        t = table[table.protocol == protocol]
        want = t.pivot(index="defense", columns="attack", values="top1").loc[
            ["none", "randomization"], ["clean", "pgd"]
        ]
        np.testing.assert_allclose(ax.images[0].get_array(), want.to_numpy())
        assert drawn(ax)["texts"] == 4 and protocol in ax.get_title()
        assert any(
            "+0.05*" in t.get_text() for t in ax.texts
        )  # the effect, starred: its interval excludes 0


def test_ssim_sweep_draws_success_and_ssim_per_attack(capture_figures, drawn):
    from pixelrobust.figures import p2_ssim_sweep

    eps = {"ssim_ball": [0.001, 0.01], "pgd_linf": [1 / 255, 4 / 255], "pgd_l2": [0.1, 0.5]}
    table = pd.DataFrame(
        [
            (a, e, 0.3 + i * 0.5, 0.99 - i * 0.1, 2)
            for a, es in eps.items()
            for i, e in enumerate(es)
        ],
        columns=["attack", "epsilon", "success_rate", "mean_ssim", "n_images"],
    )
    matched = pd.DataFrame(
        {
            "attack": ["pgd_linf", "pgd_l2"],
            "epsilon": [1 / 255, 0.1],
            "ssim_epsilon": [0.001, 0.001],
        }
    )
    p2_ssim_sweep.draw(table, matched, "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)
    assert len(axes) == 3
    for ax, attack in zip(axes, eps):
        t = table[table.attack == attack]
        lines = data_lines(ax)
        assert len(lines) == 2 and attack in ax.get_title()
        np.testing.assert_allclose(lines[0].get_ydata(), t.success_rate)
        np.testing.assert_allclose(lines[1].get_ydata(), t.mean_ssim)


def test_cam_distributions_draw_every_metric(capture_figures, drawn, figure_checks):
    from pixelrobust.figures import p2_cam_distributions
    from pixelrobust.map_compare import MAPS, METRICS

    rng = np.random.default_rng(3)
    rows = []
    for image in ("i0", "i1", "i2"):
        for attack in ("ssim_ball", "pgd_linf"):
            ratio = float(rng.uniform(0.5, 2))
            for m in MAPS:
                rows.append(
                    {
                        "image_id": image,
                        "attack": attack,
                        "map": m,
                        **{k: float(rng.uniform()) for k in METRICS},
                        "pointing_hit": bool(rng.uniform() > 0.3),
                        "texture_spearman": float(rng.uniform(-1, 1)),
                        "grid_ratio": ratio,
                    }
                )
    p2_cam_distributions.draw(pd.DataFrame(rows), "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)
    titles = [m if m != "pointing_hit" else "pointing_hit (rate)" for m in METRICS]
    assert [ax.get_title() for ax in axes] == [*titles, "texture_spearman", "grid ratio (log10)"]
    for metric, ax in zip([*METRICS, "texture_spearman"], axes[:-1]):
        if metric != "pointing_hit":
            assert drawn(ax)["patches"] == 2 * len(MAPS)  # a box per attack and map
    assert drawn(axes[-1])["markers"] == 3 * 2  # one point per image and attack
    # each box at its attack's position spans its own metric's quartiles; pointing_hit: each (attack, map) point
    # at that pair's hit rate; the grid ratio per image at its attack
    figure_checks.check_cam_distributions(fig, pd.DataFrame(rows))


def test_region_semantics_plots_each_finite_image_and_claim(capture_figures, drawn, figure_checks):
    from pixelrobust.figures import p1_region_semantics

    images = pd.DataFrame(
        {
            "model": ["a"] * 4,
            "primary": [True, True, True, False],
            "whole_success": [True, True, False, True],
            "rho_occlusion": [0.5, np.nan, 0.1, 0.2],
            "rho_occlusion_control": [0.1, 0.2, 0.0, 0.3],
            "rho_cam": [0.4, -0.2, 0.3, 0.1],
            "rho_cam_control": [0.0, 0.1, 0.2, 0.3],
        }
    )
    claims = pd.DataFrame(
        [
            {
                "model": "a",
                "claim": c,
                "n_segments": n,
                "effect": 0.1 * (i + 1),
                "ci_low": 0.0,
                "ci_high": 0.5,
                "primary": n == 16,
            }
            for i, c in enumerate(p1_region_semantics.SHORT)
            for n in (8, 16)
        ]
    )
    p1_region_semantics.draw(images, claims, "unused.png")
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    left, right = panels(fig)
    # primary, attackable images with a finite rho and control: occlusion image 0 only, CAM images 0 and 1
    assert drawn(left)["markers"] == 1 + 2
    assert drawn(right)["markers"] == len(claims) and drawn(right)["segments"] == len(claims)
    # at their positions: x the control's rho, y the image's rho; the claims at (segment count, effect)
    assert figure_checks.points(left) == sorted([(0.1, 0.5), (0.0, 0.4), (0.1, -0.2)])
    figure_checks.check_region_semantics(fig, images, claims)


def test_region_semantics_without_attackable_images_leaves_the_scatter_empty(
    capture_figures, drawn
):
    """The honest empty panel the tiny run produces: the diagonal only, no point."""
    from pixelrobust.figures import p1_region_semantics

    images = pd.DataFrame(
        {
            "model": ["a"],
            "primary": [True],
            "whole_success": [False],
            "rho_occlusion": [np.nan],
            "rho_occlusion_control": [np.nan],
            "rho_cam": [np.nan],
            "rho_cam_control": [np.nan],
        }
    )
    claims = pd.DataFrame(
        {
            "model": ["a"],
            "claim": [next(iter(p1_region_semantics.SHORT))],
            "n_segments": [16],
            "effect": [0.0],
            "ci_low": [-0.5],
            "ci_high": [0.5],
            "primary": [True],
        }
    )
    p1_region_semantics.draw(images, claims, "unused.png")
    left, right = panels(capture_figures[0])
    assert drawn(left)["markers"] == 0 and drawn(right)["markers"] == 1


def test_vulnerability_grid_rings_every_vulnerable_pixel(capture_figures, drawn, figure_checks):
    from pixelrobust.figures import p1_vulnerability_grid

    rng = np.random.default_rng(4)
    n = 3
    images = rng.uniform(size=(n, 8, 8, 3))
    segments = np.repeat(np.arange(4).reshape(2, 2), 4, 0).repeat(4, 1)[None].repeat(n, 0)
    vulnerable = rng.uniform(size=(n, 8, 8)) > 0.8
    searched = np.ones((n, 8, 8), bool)
    p1_vulnerability_grid.draw(
        images, segments, vulnerable, searched, [f"img {i}" for i in range(n)], "unused.png"
    )
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = panels(fig)[:n]
    for i, ax in enumerate(axes):
        assert ax.images[0].get_array().shape == (8, 8, 3) and ax.get_title() == f"img {i}"
        assert drawn(ax)["markers"] == vulnerable[i].sum()
    # each ring at its pixel's (column, row), the image itself off the region boundaries, yellow on them
    figure_checks.check_vulnerability_grid(
        fig, images, segments, vulnerable, [f"img {i}" for i in range(n)]
    )
    ys, xs = np.nonzero(vulnerable[0])
    assert figure_checks.points(axes[0]) == sorted(zip(xs.astype(float), ys.astype(float)))


def test_synthesis_matrix_fills_both_triangles(tmp_path, capture_figures, drawn, figure_checks):
    from pixelrobust.figures import synthesis_matrix
    from pixelrobust.synthesis import PAIRS

    rows = [
        {
            "model": "m",
            "map_a": a,
            "map_b": b,
            "spearman_excess": 0.01 * (i + 1),
            "iou_excess": -0.01 * (i + 1),
            "spearman_excess_ci_low": 0.0,
            "spearman_excess_ci_high": 0.1,
            "iou_excess_ci_low": -0.1,
            "iou_excess_ci_high": 0.05,
            "n_images": 5,
            "topk_percent": 10,
        }
        for i, (a, b) in enumerate(PAIRS)
    ]
    csv = tmp_path / "synthesis.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    synthesis_matrix.plot(table=csv, out={"png": "unused.png"})
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    (ax,) = panels(fig)
    assert drawn(ax)["cells"] == 2 * len(PAIRS) and drawn(ax)["texts"] == 2 * len(PAIRS)
    # Spearman (positive here) below the diagonal, IoU (negative) above it, each pair in its cell
    figure_checks.check_synthesis_matrix(fig, pd.DataFrame(rows))
    from pixelrobust.synthesis import MAPS

    cells = np.ma.filled(np.ma.asarray(ax.collections[0].get_array(), dtype=float), np.nan).reshape(
        len(MAPS), len(MAPS)
    )
    assert (cells[np.tril_indices(len(MAPS), -1)] > 0).all() and (
        cells[np.triu_indices(len(MAPS), 1)] < 0
    ).all()


def test_synthesis_maps_show_the_image_and_its_four_maps(tmp_path, capture_figures, drawn):
    from pixelrobust.figures import synthesis_maps
    from pixelrobust.synthesis import MAPS

    rng = np.random.default_rng(5)
    arrays = {m: rng.uniform(size=(2, 8, 8)) for m in MAPS}
    searched = np.zeros((2, 8, 8), bool)
    searched[:, ::2, ::2] = True  # a 4x4 grid searched
    path = tmp_path / "m.npz"
    np.savez(
        path,
        **arrays,
        searched=searched,
        image_id=np.array(["x0", "x1"]),
        image=rng.uniform(size=(2, 3, 8, 8)),
    )
    synthesis_maps.plot(maps={"m": str(path)}, out={"png": "unused.png"}, examples=2)
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = np.array(panels(fig)).reshape(2, 5)
    for n in range(2):
        assert axes[n, 0].images[0].get_array().shape == (8, 8, 3)
        assert axes[n, 1].images[0].get_array().shape == (4, 4)  # one-pixel: the searched grid only
        for c, m in enumerate(MAPS[1:], start=2):
            np.testing.assert_allclose(axes[n, c].images[0].get_array(), arrays[m][n])


def test_cam_grid_shows_the_image_its_change_maps_and_cam(mirror, tmp_path, capture_figures, drawn):
    import torch

    from pixelrobust import data
    from pixelrobust.figures import p2_cam_grid

    data.prepare_dataset(
        dataset="cifar10", settings={}, out={"data": tmp_path / "cifar10"}, mirror=mirror
    )
    split = data.load_split(tmp_path / "cifar10", "test", 0, 4)
    ids = [split.ids[2], split.ids[0]]  # the npz's order, not the split's
    x = split.images[[2, 0]]
    gen = torch.Generator().manual_seed(0)
    advs = {
        a: (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        for a in ("ssim_ball", "pgd_linf")
    }
    cams = np.random.default_rng(6).uniform(size=(2, 32, 32))
    npz = tmp_path / "cam.npz"
    np.savez(
        npz,
        image_id=np.array(ids),
        cam_clean=cams,
        **{f"adv_{a}": v.numpy() for a, v in advs.items()},
    )
    p2_cam_grid.plot(
        data=tmp_path / "cifar10",
        cam=npz,
        out={"png": "unused.png"},
        bounds=(0, 4),
        examples=2,
        topk_percent=10,
    )
    (fig,) = capture_figures
    assert_every_panel_drawn(fig, drawn)
    axes = np.array(panels(fig)).reshape(4, 6)  # rows: image x attack
    for r, (n, attack) in enumerate([(n, a) for n in range(2) for a in advs]):
        row = axes[r]
        np.testing.assert_allclose(row[0].images[0].get_array(), x[n].permute(1, 2, 0).numpy())
        energy = ((advs[attack][n].double() - x[n].double()) ** 2).sum(0).numpy()
        np.testing.assert_allclose(row[1].images[0].get_array(), energy, rtol=1e-6)
        np.testing.assert_allclose(row[4].images[0].get_array(), cams[n])
        assert len(row[5].images) == 2  # the image under its CAM
        assert attack in row[0].get_ylabel() and ids[n][:18] in row[0].get_ylabel()


def test_cam_grid_takes_its_examples_from_every_chunk(mirror, tmp_path, capture_figures):
    """With one image per SSIM chunk (tiny: chunk_size 1) the grid still shows ``examples`` images: the
    first ones of all chunks, in chunk order (rule p2_cam_grid passes every chunk and its bounds)."""
    import torch

    from pixelrobust import data
    from pixelrobust.figures import p2_cam_grid

    data.prepare_dataset(
        dataset="cifar10", settings={}, out={"data": tmp_path / "cifar10"}, mirror=mirror
    )
    split = data.load_split(tmp_path / "cifar10", "test", 0, 3)
    bounds = [(0, 1), (1, 2), (2, 3)]
    chunks = []
    for c, (start, _) in enumerate(bounds):
        x = split.images[start : start + 1]
        npz = tmp_path / f"chunk-{c}.npz"
        np.savez(
            npz,
            image_id=np.array([split.ids[start]]),
            cam_clean=np.full((1, 32, 32), 0.1 * (c + 1)),
            adv_ssim_ball=(
                x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(c))
            )
            .clamp(0, 1)
            .numpy(),
        )
        chunks.append(npz)
    args = {
        "data": tmp_path / "cifar10",
        "cam": chunks,
        "out": {"png": "unused.png"},
        "topk_percent": 10,
    }
    p2_cam_grid.plot(bounds=bounds, examples=2, **args)
    rows = np.array(panels(capture_figures[-1])).reshape(-1, len(p2_cam_grid.COLUMNS))
    assert len(rows) == 2  # two examples x one attack, from chunks 0 and 1
    for n, row in enumerate(rows):
        np.testing.assert_allclose(
            row[0].images[0].get_array(), split.images[n].permute(1, 2, 0).numpy()
        )
        np.testing.assert_allclose(row[4].images[0].get_array(), np.full((32, 32), 0.1 * (n + 1)))
        assert split.ids[n][:18] in row[0].get_ylabel()
    p2_cam_grid.plot(bounds=bounds, examples=5, **args)  # more examples than images: all 3
    assert len(panels(capture_figures[-1])) == 3 * len(p2_cam_grid.COLUMNS)
    with pytest.raises(ValueError, match="3 CAM chunk files but 2 chunk bounds"):
        p2_cam_grid.plot(bounds=bounds[:2], examples=2, **args)


def test_prm_lambda_wraps_its_maps_after_seven_lambdas(capture_figures, drawn):
    """Nine λ: the maps wrap onto a second row (seven per row); each map is still its λ's."""
    from pixelrobust.figures import p3_prm_lambda

    lambdas = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
    sweep = pd.DataFrame(
        {
            "lambda": lambdas,
            "top1": np.linspace(0.9, 0.2, 9),
            "iou": np.linspace(0.1, 0.9, 9),
            "lattice_share": np.linspace(0.2, 1, 9),
            "chance_share": 0.25,
            "chance_iou": 1 / 7,
            "clean_top1": 0.92,
            "prm": "trained",
        }
    )
    maps = np.random.default_rng(7).uniform(size=(9, 8, 8))
    p3_prm_lambda.draw(sweep, maps, "m", "unused.png")
    top, *map_axes = panels(capture_figures[0])
    assert len(map_axes) == 9
    rows = [ax.get_subplotspec().rowspan.start for ax in map_axes]
    assert rows == [1] * 7 + [2] * 2
    for ax, m, lam in zip(map_axes, maps, lambdas):
        np.testing.assert_allclose(ax.images[0].get_array(), m)
        assert ax.get_title() == f"λ={lam:g}"


def test_every_figure_module_is_redrawn_by_the_workflow_test():
    """helpers.figures._redraw (used by test_workflow.py on the tiny run) has a branch for every figure function."""
    import inspect
    import pkgutil

    from helpers import figures as figure_helpers
    from pixelrobust import figures

    source = inspect.getsource(figure_helpers._redraw)
    modules = [m.name for m in pkgutil.iter_modules(figures.__path__) if m.name != "style"]
    assert len(modules) >= 12
    assert [m for m in modules if f"{m}.plot(" not in source] == []


# ---- the robust-vs-standard figure (figures.robust_compare_figure; planted maps: helpers.robust) ------------


def test_figure_draws_the_mean_maps_and_every_effect(capture_figures, figure_checks):
    from pixelrobust.figures import robust_compare_figure as fig_rc

    n = 12
    std, rob = p1_maps(n, [4] * n, seed=1), p1_maps(n, [2] * 6 + [0] * 6, seed=2)
    ids = [str(i) for i in range(n)]
    za, zb = synth(ids, {}, seed=1), synth(ids, {}, seed=30)
    table, maps = rc.compare_pair(
        "s",
        "r",
        "cifar10",
        p1=(std, rob),
        synthesis=(za, zb),
        k_percent=10,
        border=0.25,
        max_k=25,
        n_boot=200,
        seed=0,
    )
    fig_rc.draw(table, {"s__r": maps}, "unused.png")
    (fig,) = capture_figures
    figure_checks.check_robust_compare(fig, table, {"s__r": maps})
    # four map panels and one effect panel; the P1 maps are the vulnerable shares (robust: 6 images x 2 of 12)
    assert len(figure_checks.panels(fig)) == 5
    assert figure_checks.panels(fig)[1].images[0].get_array().sum() == pytest.approx(12 / 12)
    assert len(fig_rc.forest_rows(table)) == int(np.isfinite(table.effect).sum()) >= 8


def test_figure_without_pairs_says_so(capture_figures):
    from pixelrobust.figures import robust_compare_figure as fig_rc

    fig_rc.draw(pd.DataFrame(columns=rc.TABLE_COLUMNS), {}, "unused.png")
    (fig,) = capture_figures
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == [
        "no robust-vs-standard pair configured"
    ]


def test_figure_draws_only_differences_and_intervals_from_ten_images():
    from pixelrobust.figures import robust_compare_figure as fig_rc

    t = pd.DataFrame(
        [
            {
                "statistic": "share, standard minus robust",
                "effect": 0.2,
                "ci_low": 0.1,
                "ci_high": 0.3,
                "n_images": 20,
            },
            {
                "statistic": "Spearman's rho of the two mean maps",
                "effect": 0.3,
                "ci_low": 0.1,
                "ci_high": 0.5,
                "n_images": 20,
            },
            {
                "statistic": "IoU, same image minus other images'",
                "effect": 0.1,
                "ci_low": 0.0,
                "ci_high": 0.2,
                "n_images": 2,
            },
            {
                "statistic": "x minus y",
                "effect": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "n_images": 20,
            },
        ]
    )
    rows = fig_rc.forest_rows(t)
    assert list(rows.effect) == [0.2, 0.1]
    assert list(fig_rc.interval_drawn(rows)) == [True, False]

"""The shared map helpers (pixelrobust.maps): top-k masks and their two tie rules, IoU, its chance level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelrobust.maps import TIES, chance_iou, iou, iou_matrix, n_selected, top_k_mask


def test_n_selected_rounds_k_percent_of_the_pixels():
    assert n_selected(400, 10) == 40 and n_selected(400, 0) == 0 and n_selected(400, 100) == 400
    # Python's round: halves go to the even neighbour (2.5 -> 2, 3.5 -> 4)
    assert n_selected(10, 25) == 2 and n_selected(10, 35) == 4
    for bad in (-1, 100.5):
        with pytest.raises(ValueError, match=r"k_percent must be in \[0, 100\]"):
            n_selected(10, bad)


def test_both_tie_rules_take_the_largest_values_first():
    m = np.array([[0.5, 3.0, 1.0], [2.0, 0.0, 4.0]])
    for ties in TIES:
        assert np.flatnonzero(top_k_mask(m, 50, ties=ties)).tolist() == [1, 3, 5]  # 4, 3, 2
        assert top_k_mask(m, 50, ties=ties).shape == m.shape
        assert not top_k_mask(m, 0, ties=ties).any() and top_k_mask(m, 100, ties=ties).all()


def test_pixel_order_ties_go_to_the_earlier_pixel_and_shuffled_ties_spread():
    flat = np.ones((20, 20))
    first = top_k_mask(flat, 10, ties="pixel_order")
    assert np.flatnonzero(first).tolist() == list(range(40))  # the first two rows
    spread = top_k_mask(flat, 10, ties="shuffled")
    rows = np.nonzero(spread)[0]
    assert spread.sum() == 40 and rows.max() >= 15 and rows.min() <= 4  # not the first rows
    # the two rules differ only on ties: a strictly larger value is taken first by both
    m = flat.copy()
    m[19, 19] = 2.0
    for ties in TIES:
        assert top_k_mask(m, 10, ties=ties)[19, 19]
    # a tie between the 40th and 41st value: pixel order takes the earlier one
    step = np.zeros(400)
    step[:30] = 2.0
    step[30:60] = 1.0  # 10 of these 30 tied entries make up the top 40
    chosen = np.flatnonzero(top_k_mask(step, 10, ties="pixel_order"))
    assert chosen.tolist() == list(range(40))
    chosen = np.flatnonzero(top_k_mask(step, 10, ties="shuffled"))
    assert set(range(30)) <= set(chosen) and len(chosen) == 40 and chosen.max() >= 40


def test_shuffled_ties_are_the_same_for_every_map_of_one_size():
    flat = np.ones((20, 20))
    first = top_k_mask(flat, 10, ties="shuffled")
    for other in (flat, 2 * flat, np.zeros((20, 20)), flat.astype(np.float32)):
        assert (top_k_mask(other, 10, ties="shuffled") == first).all()


def test_at_least_one_keeps_the_largest_entry_when_k_rounds_to_none():
    m = np.arange(10.0)
    for ties in TIES:
        assert not top_k_mask(m, 4, ties=ties).any()  # 4 % of 10 entries rounds to 0
        assert np.flatnonzero(top_k_mask(m, 4, ties=ties, at_least_one=True)).tolist() == [9]
        assert np.flatnonzero(top_k_mask(m, 20, ties=ties, at_least_one=True)).tolist() == [8, 9]


def test_top_k_mask_refuses_nan_and_unknown_tie_rules():
    with pytest.raises(ValueError, match="NaN"):
        top_k_mask(np.array([1.0, np.nan]), 50, ties="shuffled")
    with pytest.raises(ValueError, match="ties must be one of"):
        top_k_mask(np.ones(4), 50, ties="random")


def test_iou_on_constructed_masks():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    a[:, :2] = True  # left half
    b[:2, :] = True  # top half
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert iou(a.numpy(), b) == pytest.approx(4 / 12)  # arrays and tensors alike
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0  # two empty masks
    with pytest.raises(ValueError, match="differ in shape"):
        iou(a, torch.zeros(3, 3, dtype=torch.bool))


def test_iou_matrix_from_counts():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    # {0,1} vs {1,2}: 1 shared of 3; {0,1} vs {}: 0 of 2; vs all: 2 of 4; two empty sets: 1 by convention
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 0, 0.5], [0, 1, 0]])


def test_chance_iou_matches_random_sets():
    assert chance_iou(0.25, 0.25) == pytest.approx(1 / 7)  # q / (2 - q)
    assert chance_iou(0.5, 1.0) == pytest.approx(0.5)  # a full mask: the IoU is the other's share
    rng = np.random.default_rng(1)
    n, k = 1024, 10
    ious = []
    for _ in range(2000):
        ma, mb = np.zeros(n, bool), np.zeros(n, bool)
        ma[rng.choice(n, n * k // 100, replace=False)] = True
        mb[rng.choice(n, n * k // 100, replace=False)] = True
        ious.append((ma & mb).sum() / (ma | mb).sum())
    assert np.mean(ious) == pytest.approx(chance_iou(k / 100, k / 100), rel=0.05)

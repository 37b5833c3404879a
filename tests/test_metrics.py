import math

import numpy as np
import pytest
from scipy import ndimage

from workshop_lib.metrics import aupro, auroc, compute_metrics, f1_optimal_threshold


def test_auroc_hand_computed():
    # Pairs (anomalous, normal): (0.8 > 0.1), (0.8 > 0.4), (0.35 < 0.4), (0.35 > 0.1) -> 3 of 4.
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert math.isnan(auroc([0, 0], [0.1, 0.2]))


def test_f1_optimal_threshold_hand_computed():
    # At t=0.35: predictions 0.35, 0.4, 0.8 positive -> TP 2, FP 1, FN 0: F1 = 0.8 (the best).
    threshold, f1 = f1_optimal_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert (threshold, f1) == (pytest.approx(0.35), pytest.approx(0.8))


def reference_aupro(masks, maps, limit=0.3, steps=4000):
    """Slow textbook version: sweep thresholds, average region overlaps, integrate PRO(FPR) up to ``limit``."""
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask)
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    normal = ~masks
    curve = []
    for t in np.linspace(maps.max() + 1e-9, maps.min() - 1e-9, steps):
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([pred[i][region].mean() for i, region in regions])
        curve.append((fpr, pro))
    fpr, pro = np.array(curve).T
    keep = fpr <= limit
    fpr_cut, pro_cut = np.r_[fpr[keep], limit], np.r_[pro[keep], np.interp(limit, fpr, pro)]
    return np.trapezoid(pro_cut, fpr_cut) / limit


def test_aupro_matches_threshold_sweep():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 24, 24), bool)
    masks[0, 2:6, 2:10] = True
    masks[0, 15:20, 15:18] = True  # two regions of different sizes in one image
    masks[1, 8:16, 8:16] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    assert aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=2e-3)


def test_aupro_extremes():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, (~masks).astype(float)) == pytest.approx(0.0)
    assert math.isnan(aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))))


def test_compute_metrics_keys_and_anomaly_subset():
    masks = np.zeros((4, 8, 8), bool)
    masks[2, 1:3, 1:3] = masks[3, 4:6, 4:6] = True
    maps = masks * 1.0 + 0.01
    metrics = compute_metrics(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1]), maps, masks)
    assert metrics["instance_auroc"] == 1.0
    assert metrics["full_pixel_auroc"] == 1.0 and metrics["anomaly_pixel_auroc"] == 1.0
    assert metrics["full_pro"] == pytest.approx(1.0)
    assert metrics["pixel_threshold"] == pytest.approx(1.01) and metrics["image_threshold"] == pytest.approx(0.8)

"""Detection and segmentation metrics, on raw (un-normalised) scores.

- image AUROC ("instance_auroc" in patchcore-inspection's results.csv);
- full pixel AUROC over all test pixels, and anomaly pixel AUROC over the images that contain a defect only;
- AUPRO: area under the per-region-overlap curve up to a false-positive rate of 0.3, divided by 0.3
  (Bergmann et al., MVTec AD, IJCV 2021);
- F1-optimal thresholds for pixels and images, from ``precision_recall_curve``.

Thresholds are in the model's raw score units, not the per-class min-max normalised space upstream uses,
so a threshold chosen here can be applied to new images. They are still chosen on the test set: treat them as
an upper bound and pick deployment thresholds on held-out data.
"""

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

PRO_FPR_LIMIT = 0.3


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (AUROC is undefined then)."""
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores).ravel()))


def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``scores >= threshold`` against ``labels``."""
    labels = np.asarray(labels).ravel().astype(bool)
    if not labels.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores).ravel())
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=(precision + recall) > 0)[:-1]
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT,
          valid: np.ndarray | None = None) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit], over the ``valid`` pixels (default: all).

    Exact, in one sort: each defect region's pixels carry weight 1 / (region size * number of regions), each
    normal pixel 1 / (number of normal pixels); sweeping the threshold down the sorted scores, the running
    sums are the PRO and the FPR.
    """
    valid = np.ones(np.shape(masks), bool) if valid is None else np.asarray(valid, bool)
    masks = np.asarray(masks).astype(bool) & valid
    maps = np.asarray(maps, dtype=np.float64)
    if not masks.any() or masks[valid].all():
        return float("nan")
    weights = np.zeros(masks.shape, dtype=np.float64)
    regions_total = 0
    labelled = []
    for i, mask in enumerate(masks):
        regions, count = ndimage.label(mask)
        labelled.append((i, regions, count))
        regions_total += count
    for i, regions, count in labelled:
        if count:
            sizes = np.bincount(regions.ravel())
            region_weight = np.where(regions > 0, 1.0 / sizes[regions], 0.0)
            weights[i] = region_weight / regions_total
    normal = ~masks & valid
    fpr_weights = normal / normal.sum()
    order = np.argsort(-maps.ravel(), kind="stable")
    scores_sorted = maps.ravel()[order]
    pro = np.cumsum(weights.ravel()[order])
    fpr = np.cumsum(fpr_weights.ravel()[order])
    # Only the last point of a run of equal scores is a reachable threshold.
    keep = np.r_[scores_sorted[1:] != scores_sorted[:-1], True]
    fpr, pro = np.r_[0.0, fpr[keep]], np.r_[0.0, pro[keep]]
    end = np.searchsorted(fpr, fpr_limit, side="right")
    fpr_cut, pro_cut = fpr[:end], pro[:end]
    if end < len(fpr):
        pro_at_limit = np.interp(fpr_limit, fpr[end - 1: end + 1], pro[end - 1: end + 1])
        fpr_cut, pro_cut = np.r_[fpr_cut, fpr_limit], np.r_[pro_cut, pro_at_limit]
    return float(np.trapezoid(pro_cut, fpr_cut) / fpr_limit)


def compute_metrics(image_scores: np.ndarray, labels: np.ndarray, maps: np.ndarray, masks: np.ndarray,
                    valid: np.ndarray | None = None) -> dict:
    """All metrics of one category; column names follow patchcore-inspection's results.csv. Pixel metrics count the
    ``valid`` pixels only (default: all; a letterbox's bars are not part of the image)."""
    labels = np.asarray(labels).astype(bool)
    masks = np.asarray(masks).astype(bool)
    valid = np.ones(masks.shape, bool) if valid is None else np.asarray(valid, bool)
    has_defect = masks.reshape(len(masks), -1).any(axis=1)
    image_threshold, image_f1 = f1_optimal_threshold(labels, image_scores)
    pixel_threshold, pixel_f1 = f1_optimal_threshold(masks[valid], maps[valid])
    defect_valid = valid[has_defect]
    return {
        "instance_auroc": auroc(labels, image_scores),
        "full_pixel_auroc": auroc(masks[valid], maps[valid]),
        "full_pro": aupro(masks, maps, valid=valid),
        "anomaly_pixel_auroc": auroc(masks[has_defect][defect_valid], maps[has_defect][defect_valid]),
        "anomaly_pro": aupro(masks[has_defect], maps[has_defect], valid=defect_valid),
        "image_threshold": image_threshold,
        "image_f1": image_f1,
        "pixel_threshold": pixel_threshold,
        "pixel_f1": pixel_f1,
    }

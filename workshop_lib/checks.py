"""Small checks a student calls to see whether a task's answer is right; each prints ✓ or ✗ and returns a bool."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .data.source import run_name
from .metrics import f1_optimal_threshold
from .predictions import Predictions, per_image_table


def report(ok: bool, success: str, failure: str) -> bool:
    print(("✓ " + success) if ok else ("✗ " + failure))
    return ok


def check_results_table(results: pd.DataFrame, categories: Sequence[str], dataset: str = "mvtec") -> bool:
    """Task 2: a results.csv table with one row per category, a Mean row and AUROCs in [0, 1]."""
    expected = {run_name(dataset, c) for c in categories} | {"Mean"}
    values = results[["instance_auroc", "full_pixel_auroc"]].to_numpy()
    ok = expected <= set(results.index) and bool(np.all((values >= 0) & (values <= 1)))
    return report(ok, "results table has every category and the Mean row",
                  f"expected rows {sorted(expected)}, got {list(results.index)}")


def check_pixel_threshold(predictions: Predictions, threshold: float) -> bool:
    """Task 4: the F1-optimal pixel threshold (on raw anomaly-map values)."""
    expected, _ = f1_optimal_threshold(predictions.masks, predictions.anomaly_maps)
    return report(bool(np.isclose(threshold, expected, rtol=1e-4)), f"pixel threshold {threshold:.4g} is F1-optimal",
                  f"{threshold:.4g} is not the F1-optimal pixel threshold; use precision_recall_curve on all pixels")


def check_image_threshold(predictions: Predictions, threshold: float) -> bool:
    """Task 4: the F1-optimal image threshold."""
    expected, _ = f1_optimal_threshold(predictions.labels, predictions.image_scores)
    return report(bool(np.isclose(threshold, expected, rtol=1e-4)), f"image threshold {threshold:.4g} is F1-optimal",
                  f"{threshold:.4g} is not the F1-optimal image threshold")


def check_extreme_category(results: pd.DataFrame, metric: str, answer: str, worst: bool = True,
                           dataset: str = "mvtec") -> bool:
    """Tasks 5/6: the category (or its results row) with the lowest (worst) or highest (best) value of ``metric``."""
    table = results.drop(index="Mean", errors="ignore")[metric]
    expected = table.idxmin() if worst else table.idxmax()
    which = "worst" if worst else "best"
    answers = (expected, expected.removeprefix(run_name(dataset, "")))
    return report(answer in answers, f"{answer} is the {which} by {metric}",
                  f"{answer} is not the {which} category by {metric}")


# Per-image columns of ``per_image_table`` a task may sort by, and whether a larger value is worse.
LARGER_IS_WORSE = {"image_error": True, "pixel_auroc": False}


def check_extreme_examples(predictions: Predictions, indices: Sequence[int], column: str = "image_error",
                           worst: bool = True) -> bool:
    """Tasks 5/6: ``indices`` are the N worst or best test images by ``column``, each column in its own direction
    (a larger image_error is worse, a larger per-image pixel_auroc is better)."""
    if column not in LARGER_IS_WORSE:
        return report(False, "", f"sort by one of {', '.join(LARGER_IS_WORSE)}, not {column!r}")
    table = per_image_table(predictions).dropna(subset=[column])
    descending = LARGER_IS_WORSE[column] == worst
    ordered = table.sort_values(column, ascending=not descending).index[: len(indices)]
    ok = sorted(map(int, indices)) == sorted(map(int, ordered))
    which = "worst" if worst else "best"
    direction = "largest" if descending else "smallest"
    return report(ok, f"these are the {len(indices)} {which} examples by {column} (the {direction} values)",
                  f"expected the {which} examples {list(map(int, ordered))} (the {direction} {column}), "
                  f"got {list(map(int, indices))}")

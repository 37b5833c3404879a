import numpy as np
import pandas as pd

from workshop_lib import checks
from workshop_lib.metrics import f1_optimal_threshold
from workshop_lib.predictions import Predictions, per_image_table


def predictions():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 8, 8), bool)
    masks[3:, 2:5, 2:5] = True
    maps = rng.random(masks.shape).astype(np.float32) + masks
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.8], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    return Predictions("tile", scores, maps, labels, masks, np.array([f"{i}.png" for i in range(6)]),
                       np.array(["good"] * 3 + ["crack"] * 3), f1_optimal_threshold(labels, scores)[0],
                       f1_optimal_threshold(masks, maps)[0])


def test_threshold_checks(capsys):
    pred = predictions()
    assert checks.check_pixel_threshold(pred, pred.pixel_threshold)
    assert not checks.check_pixel_threshold(pred, pred.pixel_threshold * 0.5)
    # Image threshold by hand: at 0.3, TP 3 and FP 1 (the 0.5 normal image): F1 = 6/7, better than 0.8 at 0.8.
    assert checks.check_image_threshold(pred, 0.3)
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and out.count("✗") == 1


def test_category_and_example_checks():
    results = pd.DataFrame({"instance_auroc": [0.9, 0.7, 0.8]}, index=["mvtec_a", "mvtec_b", "Mean"])
    assert checks.check_extreme_category(results, "instance_auroc", "mvtec_b", worst=True)
    assert checks.check_extreme_category(results, "instance_auroc", "a", worst=False)
    assert not checks.check_extreme_category(results, "instance_auroc", "mvtec_a", worst=True)
    pred = predictions()
    table = per_image_table(pred)
    # With the threshold 0.3: false alarm 1 (0.2 above) and borderline defect 4 (at it) are the two worst.
    assert list(table.sort_values("image_error", ascending=False).index[:2]) == [1, 4]
    assert checks.check_extreme_examples(pred, [1, 4], worst=True)
    assert not checks.check_extreme_examples(pred, [0, 3], worst=True)
    assert np.isnan(table.loc[0, "pixel_auroc"]) and table.loc[3, "pixel_auroc"] > 0.5


def test_example_checks_judge_each_metric_in_its_own_direction():
    pred = predictions()
    pred.anomaly_maps[4] = np.random.default_rng(1).random((8, 8))  # image 4's map no longer finds its defect
    table = per_image_table(pred).dropna(subset=["pixel_auroc"])
    assert table["pixel_auroc"].nunique() > 1
    worst_pixel = list(table.sort_values("pixel_auroc").index[:1])  # the lowest per-image pixel AUROC is the worst
    best_pixel = list(table.sort_values("pixel_auroc", ascending=False).index[:1])
    assert checks.check_extreme_examples(pred, worst_pixel, "pixel_auroc", worst=True)
    assert not checks.check_extreme_examples(pred, best_pixel, "pixel_auroc", worst=True)
    assert checks.check_extreme_examples(pred, best_pixel, "pixel_auroc", worst=False)
    assert not checks.check_extreme_examples(pred, [1], "defect_type")

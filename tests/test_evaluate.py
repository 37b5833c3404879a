import numpy as np
import pytest

from workshop_lib.predictions import Predictions, read_results_csv, write_results_csv
from workshop_lib.runs import create_run_folder


def make_predictions(n=4, size=8):
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), bool)
    masks[n // 2:, 2:4, 2:4] = True
    return Predictions(
        category="tile", image_scores=rng.random(n).astype(np.float32),
        anomaly_maps=rng.random((n, size, size)).astype(np.float32), labels=np.array([0] * (n // 2) + [1] * (n // 2)),
        masks=masks, paths=np.array([f"/d/{i}.png" for i in range(n)]),
        defect_types=np.array(["good"] * (n // 2) + ["crack"] * (n // 2)), image_threshold=0.5, pixel_threshold=0.25,
    )


def test_predictions_round_trip(tmp_path):
    original = make_predictions()
    path = original.save(tmp_path / "p" / "mvtec_tile.npz")
    loaded = Predictions.load(path)
    assert loaded.category == "tile" and loaded.pixel_threshold == 0.25
    np.testing.assert_array_equal(loaded.anomaly_maps, original.anomaly_maps)
    np.testing.assert_array_equal(loaded.masks, original.masks)
    assert list(loaded.paths) == list(original.paths)
    assert [p.name for p in path.parent.iterdir()] == ["mvtec_tile.npz"]  # no temp file left


def test_normalized_scores_and_thresholds_move_together():
    pred = make_predictions()
    norm = pred.normalized()
    assert norm.image_scores.min() == pytest.approx(0) and norm.image_scores.max() == pytest.approx(1)
    # The same images stay above the threshold after normalising.
    np.testing.assert_array_equal(norm.image_scores >= norm.image_threshold, pred.image_scores >= pred.image_threshold)


def test_results_csv_format(tmp_path):
    rows = {"mvtec_a": dict.fromkeys(["instance_auroc", "full_pixel_auroc", "full_pro", "anomaly_pixel_auroc",
                                      "anomaly_pro"], 0.5),
            "mvtec_b": dict.fromkeys(["instance_auroc", "full_pixel_auroc", "full_pro", "anomaly_pixel_auroc",
                                      "anomaly_pro"], 1.0)}
    path = write_results_csv(rows, tmp_path / "results.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "Row Names,instance_auroc,full_pixel_auroc,full_pro,anomaly_pixel_auroc,anomaly_pro"
    assert lines[-1].startswith("Mean,0.750000")
    assert read_results_csv(path).loc["mvtec_b", "instance_auroc"] == 1.0


def test_run_folders_never_overwrite(tmp_path):
    first = create_run_folder(tmp_path, "project", "group")
    second = create_run_folder(tmp_path, "project", "group")
    third = create_run_folder(tmp_path, "project", "group")
    assert [first.name, second.name, third.name] == ["group", "group_0", "group_1"]


def test_atomic_writes_get_normal_permissions(tmp_path):
    """Files written through a temporary file keep the usual umask-based mode, not tempfile's 0600, so the
    container user and other users can read results, notebooks and models."""
    import os

    from workshop_lib.io import atomic_dir, atomic_file, default_mode

    with atomic_file(tmp_path / "a.csv") as staging:
        staging.write_text("x")
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "f").write_text("y")
    assert os.stat(tmp_path / "a.csv").st_mode & 0o777 == default_mode()
    assert os.stat(tmp_path / "model").st_mode & 0o777 == default_mode(directory=True)

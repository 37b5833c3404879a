"""From the workshop to the line: thresholds from good images at a false-alarm rate, with their uncertainty, beside
the test-set F1-optimal ones; scoring a folder of new images into a CSV and overlays; calibrating on good images."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import beta

from workshop_lib.cli import main, run
from workshop_lib.models import load_model
from workshop_lib.predictions import Predictions
from workshop_lib.thresholds import decision_quality, normal_threshold

TRAIN = ["patchcore", "train", "--log_project", "p", "--log_group", "g", "--save_model", "-b", "efficientnet_lite0",
         "-p", "0.1", "--resize", "64", "--imagesize", "64", "-d", "washer"]


def test_threshold_from_normal_scores_and_its_uncertainty():
    scores = np.arange(1, 100, dtype=float)  # 99 normal scores
    result = normal_threshold(scores, 0.05)
    assert result["k"] == 5 and (scores >= result["threshold"]).sum() == 4  # the 5th largest is let through
    assert result["expected_rate"] == pytest.approx(5 / 100)
    assert result["expected_rate_low"] == pytest.approx(beta.ppf(0.05, 5, 95))
    few = normal_threshold(np.arange(20.0), 0.01)  # 20 images cannot promise 1 %
    assert few["k"] == 1 and few["threshold"] > 19 and few["expected_rate_high"] > 0.13
    with pytest.raises(ValueError, match="false_alarm_rate"):
        normal_threshold(scores, 1.5)


def test_decision_quality_counts():
    quality = decision_quality(np.array([0, 0, 1, 1]), np.array([0.1, 0.9, 0.8, 0.2]), 0.5)
    assert quality == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "false_alarm_rate": 0.5}


@pytest.fixture(scope="module")
def held_out_run(synthetic_root, tmp_path_factory):
    """PatchCore trained with 20 % of train/good held out for its thresholds."""
    folder = tmp_path_factory.mktemp("line")
    return main([*TRAIN[:2], str(folder), *TRAIN[2:], "--holdout", "0.2", "--data_path", str(synthetic_root)])


@pytest.mark.slow
def test_holdout_sets_thresholds_saved_with_the_model_and_reported_beside_the_f1_optimum(held_out_run):
    run_folder = held_out_run["output"]
    document = json.loads((run_folder / "models" / "mvtec_washer" / "config.json").read_text())
    assert document["thresholds"]["image"]["n"] == 6  # 20 % of 30 training images
    assert load_model(run_folder / "models" / "mvtec_washer").thresholds_ == document["thresholds"]
    predictions = Predictions.load(run_folder / "predictions" / "mvtec_washer.npz")
    assert np.isfinite(predictions.normal_image_threshold) and np.isfinite(predictions.normal_pixel_threshold)
    report = predictions.threshold_report()
    assert list(report.index) == ["F1-optimal on the test set", "from normal images"]
    assert report.loc["F1-optimal on the test set", "image f1"] >= report.loc["from normal images", "image f1"]
    assert 0 <= report.loc["from normal images", "image false_alarm_rate"] <= 1


@pytest.mark.slow
def test_validation_good_is_used_for_thresholds(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "washer", root / "washer")
    (root / "washer" / "validation" / "good").mkdir(parents=True)
    for image in sorted((root / "washer" / "train" / "good").iterdir())[:4]:
        shutil.move(image, root / "washer" / "validation" / "good" / image.name)
    trained = main([*TRAIN[:2], str(tmp_path), *TRAIN[2:], "--data_path", str(root)])
    document = json.loads((trained["output"] / "models" / "mvtec_washer" / "config.json").read_text())
    assert document["thresholds"]["image"]["n"] == 4


@pytest.mark.slow
def test_predict_scores_a_folder_skips_bad_files_and_draws_overlays(held_out_run, synthetic_root, tmp_path, capsys):
    model = held_out_run["output"] / "models" / "mvtec_washer"
    images = tmp_path / "incoming"
    images.mkdir()
    shutil.copy(synthetic_root / "washer" / "test" / "scratch" / "001.png", images / "001.png")
    blatant = np.array(Image.open(synthetic_root / "washer" / "test" / "good" / "001.png").convert("RGB"))
    blatant[40:80, 40:80] = (255, 255, 0)  # a defect no threshold can miss
    Image.fromarray(blatant).save(images / "000.png")
    Image.open(synthetic_root / "washer" / "test" / "good" / "000.png").convert("RGB").save(images / "good.JPG")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    output = tmp_path / "decisions.csv"
    assert run(["predict", str(model), str(images), "--output", str(output), "--overlays", str(tmp_path / "ov")]) == 0
    table = pd.read_csv(output, keep_default_na=False)
    assert list(table.columns) == ["path", "score", "decision", "calibrated_score", "error"]
    assert len(table) == 4 and table.set_index("path").loc[str(images / "broken.png"), "error"].startswith("Cannot")
    scored = table[table["error"] == ""]
    assert set(scored["decision"]) <= {"anomalous", "normal"} and len(scored) == 3
    assert "skipped" in capsys.readouterr().out
    overlay = np.asarray(Image.open(tmp_path / "ov" / "000.png"))
    assert overlay.shape[:2] == (128, 128)  # the original image's size, not the network's 64 px
    assert ((overlay == (255, 0, 0)).all(axis=-1)).any()  # the region above the pixel threshold is outlined
    assert run(["predict", str(model), str(images), "--output", str(output)]) == 2  # never overwritten unasked


@pytest.mark.slow
def test_calibrate_sets_thresholds_from_good_images(synthetic_root, tmp_path):
    trained = main([*TRAIN[:2], str(tmp_path), *TRAIN[2:], "--data_path", str(synthetic_root)])
    model_path = trained["output"] / "models" / "mvtec_washer"
    assert load_model(model_path).thresholds_ is None
    thresholds = main(["calibrate", str(model_path), str(synthetic_root / "washer" / "test" / "good"),
                       "--false_alarm_rate", "0.1"])
    assert thresholds["image"]["n"] == 10 and load_model(model_path).thresholds_ == json.loads(
        json.dumps(thresholds))

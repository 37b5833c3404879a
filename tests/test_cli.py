import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from workshop_lib.cli import main
from workshop_lib.errors import UsageError
from workshop_lib.predictions import Predictions

# End to end with real ImageNet features (the bundled EfficientNet-Lite0), at CI size.
TRAIN = ["patchcore", "train", "--log_project", "proj", "--log_group", "run", "--save_patchcore_model",
         "-b", "efficientnet_lite0", "--weights", "imagenet", "-p", "0.1", "--resize", "64", "--imagesize", "64",
         "-d", "washer", "-d", "tile"]


@pytest.mark.slow
def test_train_then_evaluate_end_to_end(synthetic_root, tmp_path):
    trained = main([*TRAIN[:2], str(tmp_path / "results"), *TRAIN[2:], "--data_path", str(synthetic_root),
                    "--save_segmentation_images"])
    run = tmp_path / "results" / "proj" / "run"
    assert trained["output"] == run
    assert sorted(p.name for p in (run / "models").iterdir()) == ["mvtec_tile", "mvtec_washer"]
    table = pd.read_csv(run / "results.csv", index_col="Row Names")
    assert list(table.index) == ["mvtec_washer", "mvtec_tile", "Mean"]
    assert table.loc["Mean", "instance_auroc"] == pytest.approx(table.iloc[:2]["instance_auroc"].mean(), abs=1e-6)
    assert len(list((run / "segmentation_images" / "mvtec_tile").glob("*.png"))) >= 5
    predictions = Predictions.load(run / "predictions" / "mvtec_washer.npz")
    assert predictions.anomaly_maps.shape[1:] == (64, 64) and len(predictions) == 25
    assert table.loc["Mean", "instance_auroc"] > 0.6 and table.loc["Mean", "full_pixel_auroc"] > 0.7

    trained_files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    evaluated = main(["patchcore", "evaluate", str(tmp_path / "eval"),  # at the models' own 64 px, no size flags
                      "--model_path", str(run / "models" / "mvtec_washer"),
                      "--model_path", str(run / "models" / "mvtec_tile"), "-d", "washer", "-d", "tile",
                      "--data_path", str(synthetic_root)])
    assert evaluated["output"] == tmp_path / "eval" / "evaluated" / "group"  # a run folder of its own
    again = pd.read_csv(evaluated["output"] / "results.csv", index_col="Row Names")
    pd.testing.assert_frame_equal(again, table)  # loading a saved model reproduces the training-time numbers
    # evaluating into the training run's own folder makes a new run folder there and changes no file of the run
    inside = main(["patchcore", "evaluate", str(run), "--model_path", str(run / "models" / "mvtec_tile"), "-d",
                   "tile", "--data_path", str(synthetic_root)])
    assert inside["output"] == run / "evaluated" / "group"
    assert {p: p.read_bytes() for p in trained_files} == trained_files
    assert evaluated["results"]["mvtec_tile"]["instance_auroc"] == pytest.approx(
        table.loc["mvtec_tile", "instance_auroc"], abs=1e-6)
    # A second training run with the same names goes to a new folder instead of overwriting.
    second = main([*TRAIN[:2], str(tmp_path / "results"), *TRAIN[2:-2], "--data_path", str(synthetic_root)])
    assert second["output"].name == "run_0"


def test_usage_errors_raise_instead_of_exiting(synthetic_root, tmp_path):
    with pytest.raises(UsageError, match="required: --data_path"):
        main(["patchcore", "train", str(tmp_path), "-d", "tile"])
    with pytest.raises(UsageError, match="one model path per category"):
        main(["patchcore", "evaluate", str(tmp_path), "--model_path", "a", "--model_path", "b",
              "-d", "x", "-d", "y", "-d", "z", "--data_path", str(synthetic_root)])


def test_duplicate_categories_are_refused(synthetic_root, tmp_path):
    with pytest.raises(UsageError, match="twice"):
        main([*TRAIN[:2], str(tmp_path), *TRAIN[2:], "-d", "tile", "--data_path", str(synthetic_root)])
    assert not (tmp_path / "proj").exists()


def test_module_entry_point_exit_codes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run([sys.executable, "-m", "workshop_lib", "patchcore", "train"], capture_output=True,
                         text=True, cwd=REPO, env=env)
    assert bad.returncode == 2 and "usage:" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "workshop_lib", "patchcore", "train", str(tmp_path),
                              "-d", "bottle", "--data_path", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, cwd=REPO, env=env)
    assert missing.returncode == 1 and "folder not found" in missing.stderr and "Traceback" not in missing.stderr


def test_data_synthetic_command(tmp_path):
    root = main(["data", "synthetic", str(tmp_path / "syn"), "--n_train", "2", "--n_test_good", "1",
                 "--n_test_defect", "1", "--image_size", "32"])
    assert (root / "washer" / "train" / "good" / "001.png").is_file()


@pytest.mark.slow
def test_domain_shift_layout_gets_one_result_row_per_domain(tmp_path):
    """AeBAD-S: one model per category, evaluated per domain; results.csv's Mean is the mean over the domains."""
    root = main(["data", "synthetic", str(tmp_path / "aebad"), "--layout", "aebad", "--n_train", "6",
                 "--n_test_good", "2", "--n_test_defect", "1", "--image_size", "64"])
    trained = main([*TRAIN[:2], str(tmp_path / "results"), *TRAIN[2:-4], "-d", "washer", "--dataset", "aebad_s",
                    "--data_path", str(root)])
    domains = ["background", "illumination", "same", "view"]
    table = pd.read_csv(trained["output"] / "results.csv", index_col="Row Names")
    assert list(table.index) == [f"aebad_s_washer_{d}" for d in domains] + ["Mean"]
    assert table.loc["Mean", "instance_auroc"] == pytest.approx(table.iloc[:4]["instance_auroc"].mean(), abs=1e-6)
    for domain in domains:
        predictions = Predictions.load(trained["output"] / "predictions" / f"aebad_s_washer_{domain}.npz")
        assert len(predictions) == 2 + sum(predictions.labels) and sum(predictions.labels) >= 1

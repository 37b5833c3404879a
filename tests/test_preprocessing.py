"""Preprocessing: centre crop, whole frame or letterbox on non-square frames; masks in every common export; maps
placed back onto the original image; pixel metrics on the real pixels only; saved models keep their preprocessing."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workshop_lib.cli import main
from workshop_lib.data import load_dataset, make_synthetic_dataset
from workshop_lib.data.transforms import Preprocessing
from workshop_lib.errors import DatasetError
from workshop_lib.evaluation import evaluate
from workshop_lib.metrics import aupro, auroc
from workshop_lib.models import PatchCore
from workshop_lib.models.base import AnomalyModel, ModelOutput
from workshop_lib.predictions import Predictions

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
HEIGHT, WIDTH = 60, 150  # a wide frame, as line cameras give


def wide_category(root: Path, category: str = "strip") -> Path:
    """Wide images whose defects sit at the left and right ends: a centre crop of the height loses them."""
    rng = np.random.default_rng(0)
    base = root / category
    for split, name in (("train", "good"), ("test", "good")):
        for i in range(3):
            (base / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(100, 140, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
                base / split / name / f"{i:03d}.png")
    boxes = {"000": (20, 5, 36, 15), "001": (22, 132, 40, 146), "002": (25, 70, 35, 80)}  # top, left, bottom, right
    for stem, (top, left, bottom, right) in boxes.items():
        image = rng.integers(100, 140, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[top:bottom, left:right] = 250
        (base / "test" / "scratch").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(base / "test" / "scratch" / f"{stem}.png")
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[top:bottom, left:right] = 255
        (base / "ground_truth" / "scratch").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(base / "ground_truth" / "scratch" / f"{stem}_mask.png")
    return root


class MaskAsMap(AnomalyModel):
    """A stand-in whose anomaly map is the image's brightness: the drawn defects, where they are."""

    method = ""

    def fit(self, dataset, progress=True):
        self.start_fit(dataset)
        self.fitted_ = True
        return self

    def predict(self, images):
        maps = images.mean(dim=1).numpy()
        return ModelOutput(maps.reshape(len(maps), -1).max(axis=1), maps)


def test_placement_and_valid_box_of_each_crop():
    original = (HEIGHT, WIDTH)
    pad = Preprocessing(64, 64, "pad")
    assert pad.placement(original).scaled == (26, 64) and pad.valid_box(original) == (19, 0, 26, 64)
    assert Preprocessing(64, 64, "none").valid_box(original) == (0, 0, 64, 64)
    center = Preprocessing(64, 64, "center")
    assert center.placement(original).scaled == (64, 160) and center.valid_box(original) == (0, 0, 64, 64)
    assert Preprocessing(64, (32, 80), "none").size == (32, 80)
    with pytest.raises(ValueError, match="--resize"):
        Preprocessing(32, 64, "center")
    with pytest.raises(ValueError, match="--crop"):
        Preprocessing(64, 64, "stretch")


@pytest.mark.parametrize("export", ["0/255", "0/1", "bool", "palette"])
def test_masks_of_every_common_export_mark_the_same_pixels(tmp_path, export):
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 4:12] = 1
    image = {"0/255": Image.fromarray(mask * 255), "0/1": Image.fromarray(mask),
             "bool": Image.fromarray(mask.astype(bool)), "palette": Image.fromarray(mask * 3).convert("P")}[export]
    transformed = Preprocessing(32, 32).mask_transform()(image.convert("L"))
    assert torch.equal(transformed[0].bool(), torch.from_numpy(mask.astype(bool)))


def test_a_defect_image_with_an_empty_mask_is_refused(tmp_path):
    root = wide_category(tmp_path)
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(root / "strip" / "ground_truth" / "scratch" /
                                                             "000_mask.png")
    with pytest.raises(DatasetError, match="000_mask.png of the defect image .* is empty"):
        load_dataset(root, "strip", "test", resize=64, imagesize=64, crop="none")


def test_centre_crop_losses_are_reported_and_whole_frames_keep_every_defect(tmp_path):
    root = wide_category(tmp_path)
    with pytest.warns(UserWarning, match=r"cuts away 412 of 512 defect pixels .* 2 of 3 defect regions"):
        load_dataset(root, "strip", "test", resize=64, imagesize=64, crop="center")
    for crop in ("none", "pad"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no crop warning: nothing is cut away
            test = load_dataset(root, "strip", "test", resize=64, imagesize=64, crop=crop)
        defects = [test[i] for i, label in enumerate(test.labels) if label]
        assert all(item["mask"].any() for item in defects), crop


@pytest.mark.parametrize("crop", ["center", "none", "pad"])
def test_maps_go_back_onto_the_original_image(tmp_path, crop):
    root = wide_category(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_dataset(root, "strip", "test", resize=64, imagesize=64, crop=crop)
    predictions, _ = evaluate(MaskAsMap().fit(test), test, progress=False)
    assert predictions.geometry() == Preprocessing(64, 64, crop)
    for i in np.flatnonzero(predictions.labels):
        original_mask = np.asarray(Image.open(test.records[i].mask_path)) > 0
        placed = predictions.map_on_original(i)
        assert placed.shape == (HEIGHT, WIDTH)
        seen = np.isfinite(placed)
        found = np.nan_to_num(placed) > (np.nanmax(placed) + np.nanmin(placed)) / 2
        overlap = (found & original_mask).sum() / max(1, (original_mask & seen).sum())
        if crop == "center":
            assert not seen[:, :5].any() and seen[:, 50:100].all()  # the centre 60 x 56 of a 60 x 150 frame
        else:
            assert seen.all()
        assert (original_mask & seen).sum() == 0 or overlap > 0.8, (crop, i, overlap)


def test_pixel_metrics_of_a_letterbox_count_the_real_pixels_only(tmp_path):
    root = wide_category(tmp_path)
    test = load_dataset(root, "strip", "test", resize=64, imagesize=64, crop="pad")
    predictions, metrics = evaluate(MaskAsMap().fit(test), test, progress=False)
    assert predictions.valid is not None and predictions.valid.sum() == len(test) * 26 * 64
    valid = predictions.valid
    by_hand = auroc(predictions.masks[valid], predictions.anomaly_maps[valid])
    assert metrics["full_pixel_auroc"] == pytest.approx(by_hand)
    assert metrics["full_pro"] == pytest.approx(aupro(predictions.masks, predictions.anomaly_maps, valid=valid))
    # a map that puts high scores on the padding changes nothing
    padded = predictions.anomaly_maps.copy()
    padded[~valid] = 1e6
    assert auroc(predictions.masks[valid], padded[valid]) == metrics["full_pixel_auroc"]
    saved = Predictions.load(predictions.save(tmp_path / "p.npz"))
    assert np.array_equal(saved.valid, valid) and saved.geometry() == predictions.geometry()


def test_non_square_inputs_train_and_score(tmp_path):
    root = wide_category(tmp_path)
    train = load_dataset(root, "strip", "train", imagesize=(32, 80), crop="pad")
    test = load_dataset(root, "strip", "test", imagesize=(32, 80), crop="pad")
    model = PatchCore("resnet18", weights=None, pretrain_embed_dimension=64, target_embed_dimension=32).fit(
        train, progress=False)
    predictions, _ = evaluate(model, test, progress=False)
    assert predictions.anomaly_maps.shape == (len(test), 32, 80)
    assert model.preprocessing_ == Preprocessing(256, (32, 80), "pad")


@pytest.mark.slow
def test_saved_models_are_evaluated_with_their_own_preprocessing(synthetic_root, tmp_path):
    train = ["patchcore", "train", str(tmp_path), "--log_project", "p", "--log_group", "g", "--save_model", "-b",
             "efficientnet_lite0", "-p", "0.1", "--resize", "64", "--imagesize", "64", "-d", "washer", "--data_path",
             str(synthetic_root)]
    trained = main(train)
    model_path = trained["output"] / "models" / "mvtec_washer"
    assert json.loads((model_path / "config.json").read_text())["preprocessing"] == {
        "resize": 64, "imagesize": 64, "crop": "center"}
    evaluate_args = ["patchcore", "evaluate", str(tmp_path), "--model_path", str(model_path), "-d", "washer",
                     "--data_path", str(synthetic_root)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the method's 256/224 default would warn
        again = main(evaluate_args)
    assert again["results"]["mvtec_washer"] == pytest.approx(trained["results"]["mvtec_washer"], nan_ok=True)
    with pytest.warns(UserWarning, match="was trained on images preprocessed as 'shorter side 64 px"):
        main([*evaluate_args, "--resize", "96", "--imagesize", "96"])


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not here (a user's clone has none)")
@pytest.mark.parametrize("crop", ["none", "pad"])
def test_real_defects_survive_whole_frame_preprocessing(crop):
    root = REALDATA / "mpdd_metal_plate"
    preprocessing = Preprocessing(224, (160, 224), crop)  # a non-square input of a square frame
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = load_dataset(root, "metal_plate", "test", resize=224, imagesize=(160, 224), crop=crop)
    for i in [i for i, label in enumerate(test.labels) if label][:20]:
        item = test[i]
        original = np.asarray(Image.open(test.records[i].mask_path).convert("L")) > 0
        placed = preprocessing.to_original(item["mask"][0].numpy(), original.shape) > 0.5
        assert item["mask"].any()
        intersection, union = (placed & original).sum(), (placed | original).sum()
        assert intersection / union > 0.7, (test.records[i].path, intersection / union)


def test_wide_synthetic_frames_lose_defects_to_a_centre_crop_only(tmp_path):
    root = make_synthetic_dataset(tmp_path / "wide", categories=("tile",), n_train=2, n_test_good=1, n_test_defect=3,
                                  image_size=32, width_factor=3)
    assert Image.open(root / "tile" / "train" / "good" / "000.png").size == (96, 32)
    with pytest.warns(UserWarning, match="defect images are lost entirely"):
        load_dataset(root, "tile", "test", resize=32, imagesize=32)
    for crop in ("none", "pad"):
        test = load_dataset(root, "tile", "test", resize=32, imagesize=(32, 96), crop=crop)
        assert all(test[i]["mask"].any() for i, label in enumerate(test.labels) if label)

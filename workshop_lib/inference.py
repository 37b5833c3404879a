"""Scoring new images with a saved model, as on the line: files or folders in, one row per image out (its score, the
decision at the model's threshold from normal images, the calibrated score where the model has one), and on request
an overlay per image: the original picture with the anomalous region outlined. A file that cannot be read is
reported by name in its row and skipped; it never stops the batch.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage.segmentation import find_boundaries

from .data import AnomalyDataset, SampleRecord
from .data.layouts import GOOD, list_images
from .data.transforms import Preprocessing, to_rgb
from .errors import DatasetError, UsageError
from .evaluation import predict_dataset, set_thresholds
from .io import atomic_file
from .models.base import AnomalyModel

OUTLINE_COLOR = (255, 0, 0)
COLUMNS = ("path", "score", "decision", "calibrated_score", "error")


def image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as the images in them (sorted, any case of any suffix Pillow reads)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise UsageError(f"{item} is neither an image file nor a folder of images.")
    if not paths:
        raise UsageError(f"No images in {', '.join(map(str, inputs))}.")
    return paths


def model_preprocessing(model: AnomalyModel) -> Preprocessing:
    """The preprocessing the model was trained with (its method's default for models saved without one)."""
    return model.preprocessing_ or Preprocessing(*model.default_sizes)


def readable_images(paths: Sequence[Path], preprocessing: Preprocessing) -> tuple[AnomalyDataset, dict[int, str]]:
    """The images that decode, as a dataset, and for the others (keyed by position in ``paths``) why not."""
    records, errors = [], {}
    for index, path in enumerate(paths):
        record = SampleRecord(path, None, 0, GOOD)
        try:
            AnomalyDataset([record], "", preprocessing.resize, preprocessing.imagesize, preprocessing.crop)[0]
        except DatasetError as error:
            errors[index] = str(error)
        else:
            records.append(record)
    for index, message in errors.items():
        print(f"skipped {paths[index]}: {message}")
    return AnomalyDataset(records, "", preprocessing.resize, preprocessing.imagesize, preprocessing.crop), errors


def save_overlay(path: Path, anomaly_map: np.ndarray, threshold: float, preprocessing: Preprocessing,
                 output: Path) -> Path:
    """``output/<stem>.png``: the original image with the region where the map reaches ``threshold`` outlined."""
    with Image.open(path) as image:
        picture = np.array(to_rgb(image))
    placed = preprocessing.to_original(anomaly_map, picture.shape[:2])
    outline = find_boundaries(np.nan_to_num(placed, nan=-np.inf) >= threshold, mode="thick")
    picture[outline] = OUTLINE_COLOR
    target = output / f"{path.stem}.png"
    with atomic_file(target) as staging, open(staging, "wb") as stream:
        Image.fromarray(picture).save(stream, format="PNG")
    return target


def predict_images(model: AnomalyModel, inputs: Sequence[str | Path], batch_size: int | None = None,
                   overlays: str | Path | None = None, threshold: float | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """One row per image (``COLUMNS``): score, decision (``anomalous``/``normal`` at ``threshold``, default the
    model's threshold from normal images; empty when it has none), calibrated score, and the error of an image that
    could not be read. With ``overlays``, a PNG per image with the region above the pixel threshold outlined."""
    model.check_fitted()
    paths = image_paths(inputs)
    preprocessing = model_preprocessing(model)
    thresholds = getattr(model, "thresholds_", None) or {}
    image_threshold = threshold if threshold is not None else thresholds.get("image", {}).get("threshold")
    if image_threshold is None:
        print("This model has no threshold from normal images, so there is no decision column: train it with "
              "--holdout, or run `python -m workshop_lib calibrate <model> <folder of good images>` first.")
    pixel_threshold = thresholds.get("pixel", {}).get("threshold")
    if overlays is not None and pixel_threshold is None:
        raise UsageError("Overlays outline the region above the model's pixel threshold, and this model has none: "
                         "calibrate it on good images first (python -m workshop_lib calibrate ...).")
    images, errors = readable_images(paths, preprocessing)
    predictions = predict_dataset(model, images, batch_size or model.batch_size, progress) if len(images) else None
    rows, scored = [], iter(range(len(images)))
    for index, path in enumerate(paths):
        row = {"path": str(path), "score": np.nan, "decision": "", "calibrated_score": np.nan,
               "error": errors.get(index, "")}
        if index not in errors:
            position = next(scored)
            row["score"] = float(predictions.image_scores[position])
            if predictions.calibrated_scores is not None:
                row["calibrated_score"] = float(predictions.calibrated_scores[position])
            if image_threshold is not None:
                row["decision"] = "anomalous" if row["score"] >= image_threshold else "normal"
            if overlays is not None:
                save_overlay(path, predictions.anomaly_maps[position], pixel_threshold, preprocessing, Path(overlays))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def calibrate(model: AnomalyModel, inputs: Sequence[str | Path], false_alarm_rate: float = 0.01,
              batch_size: int | None = None, progress: bool = True) -> dict[str, dict]:
    """Set the model's thresholds from good images (files or folders) at ``false_alarm_rate``
    (``evaluation.set_thresholds``); unreadable files are skipped with a line."""
    images, _ = readable_images(image_paths(inputs), model_preprocessing(model))
    return set_thresholds(model, images, false_alarm_rate, batch_size=batch_size or model.batch_size,
                          progress=progress)

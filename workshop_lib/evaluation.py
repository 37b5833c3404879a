"""Run a fitted model over a test set: dataset -> model -> Predictions -> metrics."""

import json
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .models.base import AnomalyModel
from .predictions import Predictions
from .thresholds import normal_threshold


def predict_dataset(model: AnomalyModel, dataset: Dataset, batch_size: int = 8, progress: bool = True) -> Predictions:
    """Run a fitted model over a test dataset (a warning when the dataset is not preprocessed as the model's
    training images were: a model trained at 64 px scores nonsense at 256 px)."""
    geometry = getattr(dataset, "preprocessing", None)
    trained = getattr(model, "preprocessing_", None)
    if trained is not None and geometry is not None and trained != geometry:
        warnings.warn(f"{type(model).__name__} was trained on images preprocessed as '{trained.describe()}' "
                      f"(crop={trained.crop}); these are '{geometry.describe()}' (crop={geometry.crop}). Scores and "
                      "maps are not comparable with the model's training: load the test set with the model's "
                      "preprocessing (model.preprocessing_; the CLI's evaluate does so unless --resize/--imagesize/"
                      "--crop are given).", UserWarning, stacklevel=2)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    scores, maps, labels, masks, valid, paths, defects = [], [], [], [], [], [], []
    for batch in tqdm(loader, desc=f"Scoring {getattr(dataset, 'category', '')}".strip(), disable=not progress):
        output = model.predict(batch["image"])
        scores.append(output.image_scores)
        maps.append(output.anomaly_maps)
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
        valid.append(batch["valid"][:, 0].numpy())
        paths.extend(batch["path"])
        defects.extend(batch["defect_type"])
    image_scores = np.concatenate(scores)
    valid = np.concatenate(valid)
    return Predictions(
        category=getattr(dataset, "category", ""),
        image_scores=image_scores,
        anomaly_maps=np.concatenate(maps),
        labels=np.concatenate(labels).astype(np.int64),
        masks=np.concatenate(masks),
        paths=np.asarray(paths),
        defect_types=np.asarray(defects),
        calibrated_scores=model.calibrated_scores(image_scores),
        valid=None if valid.all() else valid,
        preprocessing=json.dumps(geometry.as_dict()) if geometry is not None else "",
    )


def evaluate(model: AnomalyModel, dataset: Dataset, batch_size: int = 8,
             progress: bool = True) -> tuple[Predictions, dict]:
    """Predictions on ``dataset`` (with their F1-optimal thresholds filled in) and the metrics dict."""
    with torch.no_grad():
        predictions = predict_dataset(model, dataset, batch_size, progress)
    metrics = predictions.metrics()
    predictions.image_threshold = metrics["image_threshold"]
    predictions.pixel_threshold = metrics["pixel_threshold"]
    thresholds = getattr(model, "thresholds_", None)
    if thresholds:
        predictions.normal_image_threshold = thresholds["image"]["threshold"]
        predictions.normal_pixel_threshold = thresholds["pixel"]["threshold"]
    return predictions, metrics


def set_thresholds(model: AnomalyModel, normal_images: Dataset, false_alarm_rate: float = 0.01,
                   pixel_false_alarm_rate: float | None = None, batch_size: int = 8,
                   progress: bool = True) -> dict[str, dict]:
    """Choose the model's image and pixel thresholds from normal images it did not train on (held-out train/good,
    validation/good, or a folder of good parts), at ``false_alarm_rate`` of images (and of pixels,
    ``pixel_false_alarm_rate``, default the same); saved with the model as ``thresholds_``. Pixels of one image are
    correlated, so the pixel threshold's interval is optimistic."""
    with torch.no_grad():
        normal = predict_dataset(model, normal_images, batch_size, progress)
    valid = np.ones(normal.anomaly_maps.shape, bool) if normal.valid is None else normal.valid
    pixel_rate = pixel_false_alarm_rate or false_alarm_rate
    model.thresholds_ = {"image": normal_threshold(normal.image_scores, false_alarm_rate),
                         "pixel": normal_threshold(normal.anomaly_maps[valid], pixel_rate)}
    return model.thresholds_

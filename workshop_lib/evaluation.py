"""Run a fitted model over a test set: dataset -> model -> Predictions -> metrics."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .models.base import AnomalyModel
from .predictions import Predictions


def predict_dataset(model: AnomalyModel, dataset: Dataset, batch_size: int = 8, progress: bool = True) -> Predictions:
    """Run a fitted model over a test dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    scores, maps, labels, masks, paths, defects = [], [], [], [], [], []
    for batch in tqdm(loader, desc=f"Scoring {getattr(dataset, 'category', '')}".strip(), disable=not progress):
        output = model.predict(batch["image"])
        scores.append(output.image_scores)
        maps.append(output.anomaly_maps)
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
        paths.extend(batch["path"])
        defects.extend(batch["defect_type"])
    image_scores = np.concatenate(scores)
    return Predictions(
        category=getattr(dataset, "category", ""),
        image_scores=image_scores,
        anomaly_maps=np.concatenate(maps),
        labels=np.concatenate(labels).astype(np.int64),
        masks=np.concatenate(masks),
        paths=np.asarray(paths),
        defect_types=np.asarray(defects),
        calibrated_scores=model.calibrated_scores(image_scores),
    )


def evaluate(model: AnomalyModel, dataset: Dataset, batch_size: int = 8,
             progress: bool = True) -> tuple[Predictions, dict]:
    """Predictions on ``dataset`` (with their F1-optimal thresholds filled in) and the metrics dict."""
    with torch.no_grad():
        predictions = predict_dataset(model, dataset, batch_size, progress)
    metrics = predictions.metrics()
    predictions.image_threshold = metrics["image_threshold"]
    predictions.pixel_threshold = metrics["pixel_threshold"]
    return predictions, metrics

"""What a model said about a test set, and the files that keep it: ``Predictions`` (one ``.npz`` per test set) and
``results.csv``. Plots and checks read these and never recompute a score.

Output layout, as in patchcore-inspection: ``<results>/<project>/<group>/`` holds ``results.csv`` (one row per
category plus ``Mean``), ``models/<dataset>_<category>/`` and ``predictions/<dataset>_<category>.npz``.
"""

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .data.transforms import Preprocessing
from .io import atomic_file
from .metrics import auroc, compute_metrics
from .thresholds import decision_quality

RESULT_COLUMNS = ("instance_auroc", "full_pixel_auroc", "full_pro", "anomaly_pixel_auroc", "anomaly_pro")


@dataclass
class Predictions:
    """Everything a model said about a test set, with the ground truth beside it.

    ``image_threshold`` and ``pixel_threshold`` are the F1-optimal thresholds in raw score units
    (see metrics.py).
    """

    category: str
    image_scores: np.ndarray  # (N,) float32
    anomaly_maps: np.ndarray  # (N, H, W) float32
    labels: np.ndarray  # (N,) int, 1 = anomalous
    masks: np.ndarray  # (N, H, W) bool
    paths: np.ndarray  # (N,) str
    defect_types: np.ndarray  # (N,) str
    image_threshold: float = float("nan")
    pixel_threshold: float = float("nan")
    calibrated_scores: np.ndarray | None = None  # (N,) in [0, 1], for models with a calibration (RD4AD)
    valid: np.ndarray | None = None  # (N, H, W) bool: the pixels that come from the image (None: all of them)
    normal_image_threshold: float = float("nan")  # from held-out normal images (thresholds.py); NaN: none chosen
    normal_pixel_threshold: float = float("nan")
    preprocessing: str = ""  # JSON of the data.transforms.Preprocessing that made the maps' geometry

    def __len__(self) -> int:
        return len(self.image_scores)

    def save(self, path: str | Path) -> Path:
        """One compressed .npz (no pickles), written atomically."""
        arrays = {k: np.asarray(v) for k, v in asdict(self).items() if v is not None}
        with atomic_file(path) as staging:
            np.savez_compressed(staging, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        with np.load(path, allow_pickle=False) as data:
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}  # optional fields may be absent
        for name in ("category", "image_threshold", "pixel_threshold", "preprocessing", "normal_image_threshold",
                     "normal_pixel_threshold"):
            if name in values:
                values[name] = values[name].item()
        return cls(**values)

    def metrics(self) -> dict:
        return compute_metrics(self.image_scores, self.labels, self.anomaly_maps, self.masks, self.valid)

    def threshold_report(self) -> pd.DataFrame:
        """Precision, recall, F1 and false-alarm rate of images and pixels at the test-set F1-optimal thresholds and
        at the thresholds from held-out normal images: the optimistic and the honest choice side by side."""
        valid = np.ones(self.masks.shape, bool) if self.valid is None else self.valid
        rows = {}
        for name, image_threshold, pixel_threshold in (
                ("F1-optimal on the test set", self.image_threshold, self.pixel_threshold),
                ("from normal images", self.normal_image_threshold, self.normal_pixel_threshold)):
            image = decision_quality(self.labels, self.image_scores, image_threshold)
            pixel = decision_quality(self.masks[valid], self.anomaly_maps[valid], pixel_threshold)
            rows[name] = {"image threshold": image_threshold, **{f"image {k}": v for k, v in image.items()},
                          "pixel threshold": pixel_threshold, **{f"pixel {k}": v for k, v in pixel.items()}}
        return pd.DataFrame(rows).T

    def geometry(self) -> Preprocessing | None:
        """How the images were brought to the maps' size (None for predictions of earlier versions)."""
        return Preprocessing.from_dict(json.loads(self.preprocessing)) if self.preprocessing else None

    def map_on_original(self, index: int) -> np.ndarray:
        """Image ``index``'s anomaly map at the pixels of its original file (the crop or letterbox undone), to overlay
        on the original image; NaN where the network never looked (outside a centre crop)."""
        geometry = self.geometry()
        if geometry is None:
            raise ValueError("These predictions do not record their preprocessing (made by an earlier version): "
                             "evaluate the model again.")
        with Image.open(self.paths[index]) as image:
            original = (image.height, image.width)
        return geometry.to_original(self.anomaly_maps[index], original)

    def normalized(self) -> "Predictions":
        """Scores min-max normalised over this test set, as upstream's results (for comparison plots only)."""
        def scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
            return (values - low) / (high - low + 1e-12)

        image_low, image_high = float(self.image_scores.min()), float(self.image_scores.max())
        map_low, map_high = float(self.anomaly_maps.min()), float(self.anomaly_maps.max())
        return replace(
            self,
            image_scores=scale(self.image_scores, image_low, image_high),
            anomaly_maps=scale(self.anomaly_maps, map_low, map_high),
            image_threshold=float(scale(np.float64(self.image_threshold), image_low, image_high)),
            pixel_threshold=float(scale(np.float64(self.pixel_threshold), map_low, map_high)),
        )


def write_results_csv(rows: dict[str, dict], path: str | Path,
                      columns: Sequence[str] = RESULT_COLUMNS) -> Path:
    """``results.csv`` as upstream: header ``Row Names,<columns>``, one row per run name, then ``Mean``."""
    with atomic_file(path) as staging, open(staging, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["Row Names", *columns])
        for name, metrics in rows.items():
            writer.writerow([name, *(f"{metrics[c]:.6f}" for c in columns)])
        means = [np.nanmean([metrics[c] for metrics in rows.values()]) for c in columns]
        writer.writerow(["Mean", *(f"{m:.6f}" for m in means)])
    return Path(path)


def read_results_csv(path: str | Path) -> pd.DataFrame:
    """results.csv as a pandas DataFrame indexed by row name (``Mean`` included)."""
    return pd.read_csv(path, index_col="Row Names")


def compare_runs(runs: dict[str, str | Path], metrics: Sequence[str]) -> pd.DataFrame:
    """Several runs' results.csv side by side: one row per results row (categories, Mean), columns
    ``"<run name> <metric>"``."""
    table = pd.concat({name: read_results_csv(Path(run) / "results.csv")[list(metrics)] for name, run in runs.items()},
                      axis=1)
    table.columns = [f"{name} {metric}" for name, metric in table.columns]
    return table


def per_image_table(predictions: Predictions) -> pd.DataFrame:
    """One row per test image: score, label, margin to the image threshold (positive = wrong side) and, for
    defective images, the pixel AUROC of its own map. Sort it to find the worst or best examples."""
    signs = np.where(predictions.labels == 1, -1.0, 1.0)
    return pd.DataFrame({
        "path": predictions.paths,
        "defect_type": predictions.defect_types,
        "label": predictions.labels,
        "image_score": predictions.image_scores,
        "image_error": signs * (predictions.image_scores - predictions.image_threshold),
        "pixel_auroc": [auroc(m, a) if m.any() else np.nan
                        for m, a in zip(predictions.masks, predictions.anomaly_maps, strict=True)],
    })

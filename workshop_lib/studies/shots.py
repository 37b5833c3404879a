"""ResAD's multi-shot study (xcyao00/ResAD ``main.py``/``validate.py``): one model trained on the seen classes,
each unseen class scored with its first k normal references for every k, and a per-class method (PatchCore) fitted
on the same k images for comparison. Also the official code's cross-dataset settings."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch.utils.data import Subset

from ..data import load_dataset
from ..data.references import reference_images
from ..evaluation import evaluate
from ..io import atomic_file
from ..models.base import AnomalyModel
from ..models.resad import ResAD
from ..plotting import save_example_grids
from ..predictions import RESULT_COLUMNS, write_results_csv

# Cross-dataset settings of xcyao00/ResAD (classes.py, main.py): (layout of the training data, of the test data).
SETTINGS: dict[str, tuple[str | None, str | None]] = {
    "custom": (None, None),  # --dataset / --test_dataset, e.g. seen and unseen categories of one folder
    "mvtec_to_visa": ("mvtec", "visa"),
    "visa_to_mvtec": ("visa", "mvtec"),
    "mvtec_to_btad": ("mvtec", "btad"),
    "mvtec_to_mvtec3d": ("mvtec", "mvtec3d"),
    "mvtec_to_mpdd": ("mvtec", "mpdd"),
}
STUDY_FILE = "multishot.csv"


def metric_row(metrics: dict, **labels: Any) -> dict:
    return {**labels, **{column: metrics[column] for column in RESULT_COLUMNS}}


def prepare_references(model: ResAD, data_path: str | Path, category: str, shots: int, layout: str, resize: int,
                       imagesize: int, reference_dir: str | Path | None, cache: Path | None, name: str) -> None:
    """``shots`` references of a class in the model: read from ``cache`` when a file with as many shots of the
    same images is there, else extracted (and written to ``cache``)."""
    images = reference_images(data_path, category, shots, layout, resize, imagesize, model.seed, reference_dir)
    paths = [str(r.path) for r in images.records]
    cached = cache / f"{name}_{category}.safetensors" if cache is not None else None
    if cached is not None and cached.is_file():
        model.load_references(cached)
        if model.reference_paths_[category] == paths:
            return
    model.add_references(category, images)
    if cached is not None:
        model.save_references(category, cached)


def evaluate_shots(model: ResAD, data_path: str | Path, categories: Sequence[str],
                   shots: Sequence[int] = (2, 4, 6, 8), layout: str = "mvtec", dataset_name: str | None = None,
                   resize: int = 224, imagesize: int = 224, batch_size: int = 8,
                   reference_dir: str | Path | None = None, output: str | Path | None = None,
                   save_segmentation_images: bool = False, progress: bool = True) -> pd.DataFrame:
    """One trained model, each unseen class scored with its first k references for every k in ``shots``: one row
    per (class, shots) with image AUROC, pixel AUROC and AUPRO. References are extracted once per class (the
    largest k) and, with ``output``, kept in ``<output>/references/``; predictions go to
    ``<output>/predictions/<dataset>_<category>_<k>shot.npz``."""
    name = dataset_name or layout
    seen = sorted(set(categories) & set(model.seen_classes_))
    if seen:
        raise ValueError(f"{seen} were training (seen) classes of this model; ResAD is evaluated on unseen ones.")
    output = Path(output) if output is not None else None
    rows = []
    for category in categories:
        test = load_dataset(data_path, category, "test", layout, resize, imagesize)
        prepare_references(model, data_path, category, max(shots), layout, resize, imagesize, reference_dir,
                           output / "references" if output is not None else None, name)
        for k in sorted(shots):
            predictions, metrics = evaluate(model.use_references(category, k), test, batch_size,
                                                         progress)
            run_name = f"{name}_{category}_{k}shot"
            if output is not None:
                predictions.save(output / "predictions" / f"{run_name}.npz")
                if save_segmentation_images:
                    save_example_grids(predictions, output / "segmentation_images" / run_name)
            rows.append(metric_row(metrics, method="ResAD", test_dataset=name, category=category, shots=k))
            if progress:
                print(f"{run_name}: image AUROC {metrics['instance_auroc']:.3f}, "
                      f"pixel AUROC {metrics['full_pixel_auroc']:.3f}, AUPRO {metrics['full_pro']:.3f}")
    return pd.DataFrame(rows)


def evaluate_few_shot_baseline(make_model: Callable[[], AnomalyModel], data_path: str | Path,
                               categories: Sequence[str], shots: Sequence[int] = (2, 4, 6, 8),
                               layout: str = "mvtec", dataset_name: str | None = None, resize: int = 224,
                               imagesize: int = 224, batch_size: int = 8, seed: int = 0,
                               reference_dir: str | Path | None = None, method: str = "PatchCore",
                               progress: bool = True) -> pd.DataFrame:
    """A per-class method (e.g. PatchCore) fitted on the same k reference images ResAD gets, for every k: rows in
    the format of ``evaluate_shots``, for one table."""
    rows = []
    for category in categories:
        test = load_dataset(data_path, category, "test", layout, resize, imagesize)
        references = reference_images(data_path, category, max(shots), layout, resize, imagesize, seed,
                                      reference_dir)
        for k in sorted(shots):
            model = make_model()
            model.fit(Subset(references, range(k)), progress=False)
            _, metrics = evaluate(model, test, batch_size, progress)
            rows.append(metric_row(metrics, method=method, test_dataset=dataset_name or layout, category=category,
                                   shots=k))
    return pd.DataFrame(rows)


def write_study(table: pd.DataFrame, output: str | Path) -> dict[str, Path]:
    """``multishot.csv`` (one row per class and shots) and ``results.csv`` in the CLI's format (row names
    ``<dataset>_<category>_<k>shot``, then Mean), both written atomically."""
    output = Path(output)
    with atomic_file(output / STUDY_FILE) as staging:
        table.to_csv(staging, index=False)
    rows = {f"{r.test_dataset}_{r.category}_{r.shots}shot": r._asdict() for r in table.itertuples(index=False)}
    return {"multishot_csv": output / STUDY_FILE,
            "results_csv": write_results_csv(rows, output / "results.csv")}

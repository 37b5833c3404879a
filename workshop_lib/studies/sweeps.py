"""Parameter sweeps: one model per (value, category), fitted and evaluated, one tidy row each (task 7's image
size)."""

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from ..data.source import DataSource
from ..evaluation import evaluate
from ..io import atomic_file
from ..models.base import AnomalyModel
from ..runs import fit_timed


def sweep(values: Sequence, make_model: Callable[[object], AnomalyModel], data_path: str | Path,
          categories: Sequence[str], sizes: Callable[[object], tuple[int, int]], parameter: str,
          output_csv: str | Path | None = None, dataset: str = "mvtec", crop: str = "center") -> pd.DataFrame:
    """Fit and evaluate one model per (value, category); one tidy row each with metrics and fit seconds.

    ``sizes(value)`` gives (resize, imagesize) for a value: an image-size sweep changes them, others keep them.
    """
    rows = []
    for value in values:
        resize, imagesize = sizes(value)
        for category in categories:
            source = DataSource(data_path, dataset, resize, imagesize, crop)
            model = make_model(value)
            fit_seconds = fit_timed(model, source.load(category, "train"))
            _, metrics = evaluate(model, source.load(category, "test"))
            rows.append({parameter: value, "category": category, "fit_seconds": fit_seconds, **metrics})
            print(f"{parameter}={value} {category}: image AUROC {metrics['instance_auroc']:.3f}, "
                  f"pixel AUROC {metrics['full_pixel_auroc']:.3f}, fit {fit_seconds:.1f} s")
    table = pd.DataFrame(rows)
    if output_csv is not None:
        with atomic_file(output_csv) as staging:
            table.to_csv(staging, index=False)
    return table


def sweep_image_size(image_sizes: Sequence[int], make_model: Callable[[int], AnomalyModel], data_path: str | Path,
                     categories: Sequence[str], resize_ratio: float = 256 / 224, output_csv: str | Path | None = None,
                     dataset: str = "mvtec", crop: str = "center") -> pd.DataFrame:
    """Task 7: metrics vs image size; each size resizes by ``resize_ratio`` then centre-crops, as 256/224 (or, with
    ``crop`` none/pad, resizes the whole frame to the size)."""
    return sweep(image_sizes, make_model, data_path, categories,
                 lambda size: (round(size * resize_ratio), size), "image_size", output_csv, dataset, crop)


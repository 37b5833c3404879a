"""Runs that notebooks share: reuse a finished training run or make it, and parameter sweeps (image size)."""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from .cli import commandline_args, main
from .data import load_dataset
from .evaluate import evaluate
from .io import atomic_file
from .models.base import AnomalyModel


def find_or_train_run(train_args: list[str], results_path: str | Path, project: str, group: str,
                      categories: Sequence[str], dataset: str = "mvtec") -> Path:
    """The run folder ``<results>/<project>/<group>`` with a model and predictions for every category.

    When an earlier task (or the instructor's pre-trained run) already made it, it is reused; otherwise
    ``train_args`` (an argv for ``python -m workshop_lib``, e.g. from ``utils.get_train_args``) trains it now.
    """
    run = Path(results_path) / project / group
    names = [f"{dataset}_{category}" for category in categories]
    if all((run / "models" / n).is_dir() and (run / "predictions" / f"{n}.npz").is_file() for n in names):
        print(f"Reusing the finished run {run}")
        return run
    print(f"No finished run in {run}: training it now.")
    with commandline_args(*train_args):
        return main()["output"]


def sweep(values: Sequence, make_model: Callable[[object], AnomalyModel], data_path: str | Path,
          categories: Sequence[str], sizes: Callable[[object], tuple[int, int]], parameter: str,
          output_csv: str | Path | None = None, dataset: str = "mvtec") -> pd.DataFrame:
    """Fit and evaluate one model per (value, category); one tidy row each with metrics and fit seconds.

    ``sizes(value)`` gives (resize, imagesize) for a value: an image-size sweep changes them, others keep them.
    """
    rows = []
    for value in values:
        resize, imagesize = sizes(value)
        for category in categories:
            train = load_dataset(data_path, category, "train", dataset, resize, imagesize)
            test = load_dataset(data_path, category, "test", dataset, resize, imagesize)
            model = make_model(value)
            started = time.perf_counter()
            model.fit(train)
            fit_seconds = time.perf_counter() - started
            _, metrics = evaluate(model, test)
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
                     dataset: str = "mvtec") -> pd.DataFrame:
    """Task 7: metrics vs image size; each size resizes by ``resize_ratio`` then centre-crops, as 256/224."""
    return sweep(image_sizes, make_model, data_path, categories,
                 lambda size: (round(size * resize_ratio), size), "image_size", output_csv, dataset)


"""Runs: fitting a model per category and evaluating it, written once for the CLI, the notebooks and the studies.

A run folder is ``<results>/<project>/<group>/`` (patchcore-inspection's layout) with ``results.csv``,
``fit_seconds.json``, ``models/<layout>_<category>/`` and ``predictions/<row>.npz``; a row is a category, or a
category's domain (``<layout>_<category>_<domain>``) for layouts with domain shifts (AeBAD), so results.csv's Mean
is the mean over domains as in the MMR paper.
"""

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from torch.utils.data import Dataset

from .data import AnomalyDataset, split_by_domain
from .data.source import DataSource
from .evaluation import evaluate
from .io import atomic_file
from .models.base import AnomalyModel
from .plotting import save_example_grids
from .predictions import Predictions, write_results_csv
from .seeding import seed_everything

FIT_SECONDS_FILE = "fit_seconds.json"


@contextmanager
def new_run_folder(results_path: str | Path, project: str, group: str) -> Iterator[Path]:
    """``create_run_folder``, removed again when the body fails before it wrote anything there: a failed start
    leaves no empty run folder that a notebook would take for a run."""
    folder = create_run_folder(results_path, project, group)
    try:
        yield folder
    except BaseException:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def create_run_folder(results_path: str | Path, project: str, group: str) -> Path:
    """``<results>/<project>/<group>``, or ``<group>_0``, ``<group>_1``... if it exists: never overwrite a run."""
    base = Path(results_path) / project
    base.mkdir(parents=True, exist_ok=True)
    candidate, counter = base / group, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate = base / f"{group}_{counter}"
            counter += 1


def fit_timed(model: AnomalyModel, dataset: Dataset) -> float:
    """Fit ``model`` on ``dataset``; returns the seconds it took."""
    started = time.perf_counter()
    model.fit(dataset)
    return time.perf_counter() - started


def evaluate_by_domain(model: AnomalyModel, test: AnomalyDataset, batch_size: int = 8,
                       progress: bool = True) -> dict[str, tuple[Predictions, dict]]:
    """Predictions and metrics per test domain (``""`` for layouts without domains)."""
    return {domain: evaluate(model, part, batch_size, progress) for domain, part in split_by_domain(test).items()}


def compare_models(models: dict[str, Callable[[], AnomalyModel]], train: Dataset,
                   test: AnomalyDataset) -> pd.DataFrame:
    """Fit each named model on ``train`` and evaluate it on ``test``: one row per name with the metrics and the fit
    seconds (the notebooks' comparisons: random vs ImageNet weights, one method vs another)."""
    rows = {}
    for name, make_model in models.items():
        model = make_model()
        fit_seconds = fit_timed(model, train)
        rows[name] = {**evaluate(model, test)[1], "fit_seconds": fit_seconds}
    return pd.DataFrame(rows).T


def row_name(run_name: str, domain: str) -> str:
    return f"{run_name}_{domain}" if domain else run_name


def evaluate_category(model: AnomalyModel, test: AnomalyDataset, run_name: str, output: Path | None,
                      batch_size: int = 8, save_segmentation_images: bool = False,
                      progress: bool = True) -> dict[str, dict]:
    """Evaluate one category's test set (per domain where the layout has domains); with ``output``, write
    ``predictions/<row>.npz`` (and the example grids); prints the AUROCs; returns {result row name: metrics}."""
    results = {}
    for domain, (predictions, metrics) in evaluate_by_domain(model, test, batch_size, progress).items():
        name = row_name(run_name, domain)
        if output is not None:
            predictions.save(output / "predictions" / f"{name}.npz")
            if save_segmentation_images:
                save_example_grids(predictions, output / "segmentation_images" / name)
        results[name] = metrics
        print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "auroc" in k))
    return results


def load_splits(source: DataSource, categories: Sequence[str]) -> dict[str, tuple[AnomalyDataset, AnomalyDataset]]:
    """(train, test) of every category, each image and mask checked: a bad file or category fails here, before
    the first model trains, not after hours of training."""
    return {category: (source.load(category, "train"), source.load(category, "test")) for category in categories}


def train_categories(make_model: Callable[[], AnomalyModel], source: DataSource, categories: Sequence[str],
                     results_path: str | Path, project: str, group: str, seed: int = 0, save_models: bool = False,
                     overwrite: bool = False, save_predictions: bool = True, save_segmentation_images: bool = False,
                     batch_size: int | None = None) -> dict:
    """One model per category: seed, fit (timed), save (optionally), evaluate, in a new run folder
    ``<results_path>/<project>/<group>[_N]``. Every split is checked before the first fit; results.csv and
    fit_seconds.json are rewritten after each category, so a later failure keeps the finished ones.
    ``batch_size`` of the evaluation defaults to the model's own."""
    splits = load_splits(source, categories)
    results, timings = {}, {}
    with new_run_folder(results_path, project, group) as output:
        print(f"Results go to {output}")
        for category, (train, test) in splits.items():
            seed_everything(seed)
            model = make_model()
            run_name = source.run_name(category)
            timings[run_name] = round(fit_timed(model, train), 3)
            if save_models:
                model.save(output / "models" / run_name, overwrite=overwrite)
            results.update(evaluate_category(model, test, run_name, output if save_predictions else None,
                                             batch_size or model.batch_size, save_segmentation_images))
            write_results_csv(results, output / "results.csv")
            with atomic_file(output / FIT_SECONDS_FILE) as staging:
                staging.write_text(json.dumps(timings, indent=2))
    return {"output": output, "results": results, "fit_seconds": timings}

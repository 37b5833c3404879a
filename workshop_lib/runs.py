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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from .data import AnomalyDataset, split_by_domain
from .data.layouts import has_validation
from .data.source import DataSource
from .errors import UsageError
from .evaluation import evaluate, set_thresholds
from .io import atomic_file
from .models.base import AnomalyModel
from .plotting import save_example_grids
from .predictions import Predictions, write_results_csv
from .seeding import seed_everything
from .thresholds import describe

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


@dataclass
class Splits:
    """A category's images for one run: what the model fits on, the normal images its thresholds come from (none
    without a validation/good folder or --holdout), and the test set."""

    train: AnomalyDataset
    normal: AnomalyDataset | None
    test: AnomalyDataset


def hold_out(train: AnomalyDataset, fraction: float, seed: int) -> tuple[AnomalyDataset, AnomalyDataset]:
    """(fit on, threshold on): ``fraction`` of the training images, drawn with ``seed``, kept out of fitting."""
    if not 0 < fraction < 1:
        raise UsageError(f"--holdout must be a fraction in (0, 1), e.g. 0.2, got {fraction}")
    held = round(len(train) * fraction)
    if held < 1 or held >= len(train):
        raise UsageError(f"--holdout {fraction} of {len(train)} training images of '{train.category}' keeps {held} "
                         "for thresholds: that leaves nothing to fit on or nothing to hold out; change --holdout.")
    order = np.random.default_rng(seed).permutation(len(train))
    records = [train.records[i] for i in order]
    return AnomalyDataset.like(train, records[held:]), AnomalyDataset.like(train, records[:held])


def load_splits(source: DataSource, categories: Sequence[str], holdout: float = 0.0,
                seed: int = 0) -> dict[str, Splits]:
    """The splits of every category, each image and mask checked: a bad file or category fails here, before the
    first model trains, not after hours of training. Thresholds come from ``validation/good`` where a category
    has it (MVTec LOCO, MVTec 3D), else from ``holdout`` of the training images."""
    splits = {}
    for category in categories:
        train, test = source.load(category, "train"), source.load(category, "test")
        if has_validation(source.root, category, source.layout):
            normal = source.load(category, "validation")
        elif holdout:
            train, normal = hold_out(train, holdout, seed)
        else:
            normal = None
        splits[category] = Splits(train, normal, test)
    return splits


def train_categories(make_model: Callable[[], AnomalyModel], source: DataSource, categories: Sequence[str],
                     results_path: str | Path, project: str, group: str, seed: int = 0, save_models: bool = False,
                     overwrite: bool = False, save_predictions: bool = True, save_segmentation_images: bool = False,
                     batch_size: int | None = None, holdout: float = 0.0, false_alarm_rate: float = 0.01) -> dict:
    """One model per category: seed, fit (timed), thresholds from normal images when there are some (``holdout``,
    validation/good) at ``false_alarm_rate``, save (optionally), evaluate, in a new run folder
    ``<results_path>/<project>/<group>[_N]``. Every split is checked before the first fit; results.csv and
    fit_seconds.json are rewritten after each category, so a later failure keeps the finished ones.
    ``batch_size`` of the evaluation defaults to the model's own."""
    splits = load_splits(source, categories, holdout, seed)
    results, timings = {}, {}
    with new_run_folder(results_path, project, group) as output:
        print(f"Results go to {output}")
        for category, split in splits.items():
            seed_everything(seed)
            model = make_model()
            run_name = source.run_name(category)
            timings[run_name] = round(fit_timed(model, split.train), 3)
            batch = batch_size or model.batch_size
            if split.normal is not None:
                thresholds = set_thresholds(model, split.normal, false_alarm_rate, batch_size=batch)
                print(f"{run_name}: {describe(thresholds['image'])}")
            if save_models:
                model.save(output / "models" / run_name, overwrite=overwrite)
            results.update(evaluate_category(model, split.test, run_name, output if save_predictions else None,
                                             batch, save_segmentation_images))
            write_results_csv(results, output / "results.csv")
            with atomic_file(output / FIT_SECONDS_FILE) as staging:
                staging.write_text(json.dumps(timings, indent=2))
    return {"output": output, "results": results, "fit_seconds": timings}

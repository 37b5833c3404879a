"""What the task notebooks share: the first workshop's command-line builders (``get_train_args``,
``get_evaluate_args``), finding (or training) task 1's PatchCore run, and one call that sets a notebook up with the
dataset, its categories, that run and the figures folder.

Notebooks run in the workshop folder (``work/``, mounted at ``/work``), so that folder is the current directory here.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cli import commandline_args, main
from .data import list_categories, resolve_data_root
from .data.source import run_name
from .predictions import Predictions, read_results_csv

TASK1_PROJECT, TASK1_GROUP = "step1", "0000"  # the original's experiments/step1/0000


def default_data_path() -> str:
    """MVTec AD in ``work/data/mvtec_anomaly_detection`` when present, else the synthetic dataset (made once)."""
    return str(resolve_data_root(Path.cwd())[0])


def get_train_args(
    exp_name: str,
    dst_folders: tuple[str, str],  # (results folder, project sub-folder)
    categories: Sequence[str],
    backbone: str = "wideresnet50",
    patchsize: int = 3,
    image_size: int = 224,  # final centre-crop size
    resize: int = 256,  # shorter side after the first resize (>= image_size)
    sampler_percentage: float = 0.001,
    target_embed_dimension: int | None = 1024,  # None: no final projection
    anomaly_scorer_num_nn: int = 1,
    data_path: str | None = None,
    weights: str = "imagenet",
    device: str = "auto",
    dataset: str = "mvtec",
    layers: Sequence[str] | None = None,
    crop: str = "center",  # center (upstream), none (whole frame) or pad (letterbox)
) -> list[str]:
    """argv for ``trainer``: models land in ``<dst_folders[0]>/<dst_folders[1]>/<exp_name>/models/<dataset>_<cat>``."""
    args = ["command", "patchcore", "train", "--seed", "0", "--save_patchcore_model",
            "--log_group", exp_name, "--log_project", dst_folders[1], dst_folders[0],
            "-b", backbone, "--pretrain_embed_dimension", "1024",
            "--target_embed_dimension", str(target_embed_dimension),
            "--anomaly_scorer_num_nn", str(anomaly_scorer_num_nn), "--patchsize", str(patchsize),
            "--weights", str(weights), "--device", device,
            "-p", str(sampler_percentage), "--sampler", "approx_greedy_coreset",
            "--resize", str(resize), "--imagesize", str(image_size), "--crop", crop]
    for layer in layers or ():  # default: the backbone's PatchCore layers (layer2 + layer3 for ResNets)
        args += ["-le", layer]
    for category in categories:
        args += ["-d", category]
    return args + ["--dataset", dataset, "--data_path", data_path or default_data_path()]


def get_evaluate_args(
    results_dst_folder: str,
    model_paths: Sequence[str],
    categories: Sequence[str],
    resize: int = 256,
    image_size: int = 224,
    data_path: str | None = None,
    device: str = "auto",
    dataset: str = "mvtec",
) -> list[str]:
    """argv for ``evaluator``: results.csv and predictions/ go to a new run folder
    ``<results_dst_folder>/evaluated/<group>[_N]`` (``evaluator()["output"]``); the models' own preprocessing is
    used unless ``resize``/``image_size`` say otherwise."""
    args = ["command", "patchcore", "evaluate", "--seed", "0", results_dst_folder, "--device", device]
    for path in model_paths:
        args += ["--patch_core_paths", str(path)]
    args += ["--resize", str(resize), "--imagesize", str(image_size)]
    for category in categories:
        args += ["-d", category]
    return args + ["--dataset", dataset, "--data_path", data_path or default_data_path()]


def is_finished(run: Path, names: Sequence[str]) -> bool:
    """A run folder with results.csv, and a model and predictions for every one of ``names``."""
    return (run / "results.csv").is_file() and all(
        (run / "models" / n).is_dir() and (run / "predictions" / f"{n}.npz").is_file() for n in names)


def latest_finished_run(results_path: str | Path, project: str, group: str, names: Sequence[str]) -> Path | None:
    """The newest finished run among ``<group>`` and ``<group>_0``, ``<group>_1``... (a student's task-1 run lands in
    ``0000_0`` when the instructor's pre-trained ``0000`` is there), by the time its results.csv was written."""
    base = Path(results_path) / project
    candidates = [base / group, *sorted(base.glob(f"{group}_*"))] if base.is_dir() else []
    finished = [run for run in candidates if is_finished(run, names)]
    return max(finished, key=lambda run: (run / "results.csv").stat().st_mtime_ns, default=None)


def find_or_train_run(train_args: list[str], results_path: str | Path, project: str, group: str,
                      categories: Sequence[str], dataset: str = "mvtec", latest: bool = True) -> Path:
    """A finished run with a model and predictions for every category: with ``latest``, the newest of
    ``<group>``, ``<group>_N`` (``latest_finished_run``), else exactly ``<results>/<project>/<group>``; says which
    one it uses. When there is none, ``train_args`` (an argv for ``python -m workshop_lib``, e.g. from
    ``get_train_args``) trains it now."""
    names = [run_name(dataset, category) for category in categories]
    run = Path(results_path) / project / group
    found = latest_finished_run(results_path, project, group, names) if latest else (
        run if is_finished(run, names) else None)
    if found is not None:
        print(f"Using the finished run {found}" + (f" (the newest of {group}, {group}_N: pass run_group="
                                                    f"'{found.name}' or another to choose)" if latest else ""))
        return found
    print(f"No finished run in {run}: training it now.")
    with commandline_args(*train_args):
        return main()["output"]


@dataclass
class Setup:
    """What a notebook works on: the dataset, its categories and the figures folder."""

    data_path: str
    dataset: str
    categories: list[str]
    figures: Path

    def run_name(self, category: str) -> str:
        return run_name(self.dataset, category)


def setup(output_dir: str | Path, data_path: str | None = None, categories: Sequence[str] | None = None,
          dataset: str = "mvtec", count: int | None = 3) -> Setup:
    """The dataset (``default_data_path()`` when None), its categories (default: the first ``count``, all with
    None) and ``<output_dir>/figures``; prints what it chose."""
    data_path = data_path or default_data_path()
    categories = list(categories or list_categories(data_path, dataset)[:count])
    figures = Path(output_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    print("dataset:", data_path, "| categories:", categories)
    return Setup(data_path, dataset, categories, figures)


@dataclass
class TaskRun(Setup):
    """Notebooks 02-06: the setup plus task 1's PatchCore run."""

    run: Path

    def model_path(self, category: str) -> Path:
        return self.run / "models" / self.run_name(category)

    def predictions_path(self, category: str) -> Path:
        return self.run / "predictions" / f"{self.run_name(category)}.npz"

    def predictions(self, category: str) -> Predictions:
        return Predictions.load(self.predictions_path(category))

    def results(self) -> pd.DataFrame:
        return read_results_csv(self.run / "results.csv")


def patchcore_task(output_dir: str | Path, data_path: str | None = None, categories: Sequence[str] | None = None,
                   dataset: str = "mvtec", backbone: str = "wideresnet50", weights: str = "imagenet",
                   image_size: int = 224, resize: int = 256, sampler_percentage: float = 0.01,
                   device: str = "auto", crop: str = "center", run_group: str | None = None) -> TaskRun:
    """``setup`` plus task 1's PatchCore run: the newest finished one of ``<output_dir>/step1/0000[_N]`` (the
    student's own, or the instructor's pre-trained ``0000``), or exactly ``run_group``; trained now if there is
    none."""
    base = setup(output_dir, data_path, categories, dataset)
    train_args = get_train_args(TASK1_GROUP, (str(output_dir), TASK1_PROJECT), base.categories, backbone=backbone,
                                image_size=image_size, resize=resize, sampler_percentage=sampler_percentage,
                                weights=weights, device=device, data_path=base.data_path, dataset=dataset,
                                crop=crop)
    run = find_or_train_run(train_args, output_dir, TASK1_PROJECT, run_group or TASK1_GROUP, base.categories,
                            dataset, latest=run_group is None)
    return TaskRun(base.data_path, dataset, base.categories, base.figures, run)

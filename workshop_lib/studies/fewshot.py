"""Few-shot decay study: how a method's accuracy falls as its training images are taken away.

The protocol of the ETH study on MMR (``01011001010/ETH-Data-Science-Lab: MMR_fewer_shot``, ``dataPreparation.sh``):
keep a percentage ("tier") of the train images of every train sub-folder (each AeBAD domain; MVTec's single
``train/good``), for several seeds, train on that subset and evaluate on the unchanged test set, per domain.
It works for any model of the library. Differences from the original, on purpose:

- sampling is seeded: the kept files of a folder are ``numpy.random.default_rng([seed, round(tier * 1000),
  crc32(folder path under train/)]).choice(...)`` over the folder's images sorted by name, so a subset can be
  rebuilt anywhere (the original used unseeded ``random.sample``);
- the original deletes ``ceil((1 - tier/100) * n)`` files per folder; so does this, but at least one image is
  always kept and only image files are counted.

A study folder::

    study.json                                   configuration (data, layout, method, tiers, seeds, sizes)
    subsets/<tier>_percent_<seed>_seed/<category>/
        train/good[/<folder>]/<file>             symlinks to the kept train images (copies where no symlinks)
        test, ground_truth                       symlinks to the original folders
        fewshot_manifest.json                    tier, seed, shots per folder, kept files
    results/<category>/<tier>_percent_<seed>_seed.json   one row per evaluated domain, written atomically
    slurm/                                       runs.txt, the job-array script, the two-halves scripts

A run whose result file exists is never run again, so an interrupted study continues where it stopped.
Command line: ``python -m workshop_lib fewshot prepare|run|run-one|slurm|collect`` (see docs/fewshot.md).
"""

import inspect
import json
import math
import shlex
import shutil
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.layouts import GOOD, list_images, require_dir
from ..data.source import DataSource
from ..errors import DatasetError
from ..io import atomic_dir, atomic_file
from ..models.base import REGISTRY, AnomalyModel
from ..runs import evaluate_by_domain, fit_timed
from ..seeding import seed_everything
from .jobs import run_locally, write_job_scripts

DEFAULT_TIERS = (1, 3, 5, 10, 15, 25, 35, 45, 55, 70, 85, 100)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
METRICS = ("instance_auroc", "full_pixel_auroc", "full_pro")
COLUMNS = ("method", "category", "tier", "seed", "shots", "domain", *METRICS, "fit_seconds")
MANIFEST = "fewshot_manifest.json"
SAMPLING = "numpy default_rng([seed, round(tier * 1000), crc32(folder)]).choice(n, shots, replace=False)"
TRAIN_LAYOUT = "<category>/train/good/*.png or <category>/train/good/<folder>/*.png"
ModelFactory = Callable[[int], AnomalyModel]


# -- subsets --------------------------------------------------------------------------------------------------
def subset_name(tier: float, seed: int) -> str:
    """``<tier>_percent_<seed>_seed``, the original's folder name (its log parser reads it back)."""
    return f"{tier:g}_percent_{seed}_seed"


def shots_for(n_files: int, tier: float) -> int:
    """Images kept of ``n_files`` at ``tier`` percent: the original deletes ``ceil((1 - tier/100) * n)``; at
    least one is kept. In exact fractions: in floats 70 % of 10 would keep 6 (ceil(3.0000000000000004) = 4)."""
    deleted = math.ceil((1 - Fraction(str(tier)) / 100) * n_files)
    return max(1, n_files - deleted)


def train_folders(category_dir: Path) -> list[Path]:
    """The folders sampled separately: ``train/good`` if it holds images, else each sub-folder that does."""
    good = require_dir(category_dir / "train" / GOOD, f"'train/good' of {category_dir.name}", TRAIN_LAYOUT)
    if list_images(good):
        return [good]
    folders = [d for d in sorted(good.iterdir()) if d.is_dir() and list_images(d)]
    if not folders:
        raise DatasetError(f"No train images in {good} or its sub-folders. Expected the layout {TRAIN_LAYOUT}.")
    return folders


def sample_folder(files: Sequence[Path], tier: float, seed: int, folder: str) -> list[Path]:
    """The kept files of one folder, deterministic by (seed, tier, folder); see SAMPLING."""
    rng = np.random.default_rng([seed, round(tier * 1000), zlib.crc32(folder.encode())])
    chosen = np.sort(rng.choice(len(files), size=shots_for(len(files), tier), replace=False))
    return [files[i] for i in chosen]


def link(source: Path, target: Path) -> None:
    """A symlink to ``source``; a copy where the file system refuses symlinks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(source, target_is_directory=source.is_dir())
    except OSError:
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def prepare_subset(category_dir: str | Path, target: str | Path, tier: float, seed: int) -> Path:
    """Build the subset of one category at ``target`` (a category folder) and return ``target``.

    Kept train images are linked per train sub-folder, ``test`` and ``ground_truth`` are linked unchanged, and
    ``fewshot_manifest.json`` records tier, seed, shots per folder and the files. An identical existing subset
    is kept; a different one is refused. Built in a temporary folder renamed at the end.
    """
    category_dir, target = Path(category_dir).resolve(), Path(target)
    kept = {str(f.relative_to(category_dir / "train")): f for f in train_folders(category_dir)}
    kept = {key: sample_folder(list_images(folder), tier, seed, key) for key, folder in kept.items()}
    manifest = {"tier": tier, "seed": seed, "source": str(category_dir), "sampling": SAMPLING,
                "shots": {key: len(files) for key, files in kept.items()},
                "total_shots": sum(len(files) for files in kept.values()),
                "files": {key: [f.name for f in files] for key, files in kept.items()}}
    manifest_path = target / MANIFEST
    if manifest_path.is_file():
        if json.loads(manifest_path.read_text()) == manifest:
            return target
        raise FileExistsError(f"{target} holds another subset ({manifest_path} differs: other data or tier). "
                              "Delete that folder or use another study folder.")
    with atomic_dir(target) as staging:
        for key, files in kept.items():
            for file in files:
                link(file, staging / "train" / key / file.name)
        for name in ("test", "ground_truth"):
            if (category_dir / name).exists():
                link(category_dir / name, staging / name)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return target


# -- the study ------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """One method over tiers x seeds of one dataset. ``folder`` is where everything goes (not saved in
    study.json, so a study folder can be moved); ``label`` names the method in the tables (default: method)."""

    folder: Path
    data_root: str
    categories: list[str]
    layout: str = "mvtec"
    method: str = "patchcore"
    model_kwargs: dict = field(default_factory=dict)
    tiers: list[float] = field(default_factory=lambda: list(DEFAULT_TIERS))
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    resize: int = 256
    imagesize: int = 224
    crop: str = "center"
    label: str = ""

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.data_root = str(Path(self.data_root).resolve())
        self.categories, self.tiers, self.seeds = list(self.categories), list(self.tiers), list(self.seeds)

    def config(self) -> dict:
        """What study.json holds, as JSON reads it back (tuples become lists)."""
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k != "folder"}))

    def save(self) -> Path:
        """Write study.json; a different study already in the folder is refused (its results would mix)."""
        path = self.folder / "study.json"
        if path.is_file():
            if json.loads(path.read_text()) != self.config():
                raise FileExistsError(f"{path} describes another study; use another folder or delete it.")
            return path
        with atomic_file(path) as staging:
            staging.write_text(json.dumps(self.config(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Study":
        path = Path(folder) / "study.json"
        if not path.is_file():
            raise FileNotFoundError(f"No study in {folder} (no study.json); create it with `prepare` first.")
        return cls(folder=Path(folder), **json.loads(path.read_text()))

    def specs(self) -> dict[str, tuple[str, float, int]]:
        """Run name ``<category>/<tier>_percent_<seed>_seed`` -> (category, tier, seed), in run order."""
        return {f"{c}/{subset_name(t, s)}": (c, t, s) for c in self.categories for t in self.tiers
                for s in self.seeds}

    def subset_root(self, tier: float, seed: int) -> Path:
        return self.folder / "subsets" / subset_name(tier, seed)

    def result_path(self, run: str) -> Path:
        return self.folder / "results" / f"{run}.json"

    def pending(self) -> list[str]:
        return [run for run in self.specs() if not self.result_path(run).is_file()]


def prepare_subsets(study: Study) -> list[Path]:
    """Every subset of the study (idempotent)."""
    return [prepare_subset(Path(study.data_root) / c, study.subset_root(t, s) / c, t, s)
            for c, t, s in tqdm(list(study.specs().values()), desc="subsets")]


def build_model(method: str, model_kwargs: dict, seed: int) -> AnomalyModel:
    """``REGISTRY[method](**model_kwargs)`` with the run's seed as the model's seed (as the original's RNG_SEED)."""
    if method not in REGISTRY:
        raise ValueError(f"Unknown method {method!r}; choose from {sorted(REGISTRY)}")
    model_cls = REGISTRY[method]
    takes_seed = "seed" in inspect.signature(model_cls.__init__).parameters
    return model_cls(**{**model_kwargs, "seed": seed} if takes_seed else model_kwargs)


def run_one(study: Study, run: str, make_model: ModelFactory | None = None) -> Path:
    """Train and evaluate one run and write its rows atomically (one per test domain); a finished run is skipped."""
    result = study.result_path(run)
    if result.is_file():
        return result
    specs = study.specs()
    if run not in specs:
        raise ValueError(f"{run!r} is not a run of the study in {study.folder}; runs look like {next(iter(specs))}")
    category, tier, seed = specs[run]
    subset = prepare_subset(Path(study.data_root) / category, study.subset_root(tier, seed) / category, tier, seed)
    seed_everything(seed)
    model = make_model(seed) if make_model is not None else build_model(study.method, study.model_kwargs, seed)
    source = DataSource(subset.parent, study.layout, study.resize, study.imagesize, study.crop)
    train = source.load(category, "train")
    fit_seconds = fit_timed(model, train)
    rows = [{"method": study.label or study.method, "category": category, "tier": tier, "seed": seed,
             "shots": len(train), "domain": domain or category, **{m: metrics[m] for m in METRICS},
             "fit_seconds": fit_seconds}
            for domain, (_, metrics) in evaluate_by_domain(model, source.load(category, "test")).items()]
    with atomic_file(result) as staging:
        staging.write_text(json.dumps(rows, indent=2))
    return result


def run_study(study: Study, make_model: ModelFactory | None = None, workers: int = 1) -> pd.DataFrame:
    """Every pending run, in this process (``workers=1``) or in ``workers`` local processes; then all rows.

    A factory ``make_model(seed)`` works in this process only; processes (and Slurm) build the model from the
    study's ``method`` and ``model_kwargs``.
    """
    study.save()
    pending = study.pending()
    if workers > 1:
        if make_model is not None:
            raise ValueError("make_model cannot be sent to other processes: give the Study a method and "
                             "model_kwargs instead, or run with workers=1.")
        command = [sys.executable, "-m", "workshop_lib", "fewshot", "run-one", str(study.folder)]
        failed = run_locally(command, pending, study.folder / "logs", workers, "few-shot runs")
        if failed:
            raise RuntimeError(f"{len(failed)} run(s) failed; see {', '.join(map(str, failed))}. "
                               "Run the study again to retry them (finished runs are kept).")
    else:
        for run in tqdm(pending, desc="few-shot runs"):
            run_one(study, run, make_model)
    return collect(study.folder)


# -- Slurm -----------------------------------------------------------------------------------------------------
def write_slurm_scripts(study: Study, halves: bool = False, time_limit: str = "70:00:00",
                        sbatch_options: Sequence[str] = (), python: str = sys.executable) -> list[Path]:
    """Scripts for the pending runs, in ``<study>/slurm/`` (``studies.jobs.write_job_scripts``): a job array with one
    task per run, or with ``halves=True`` the original's two jobs. Re-writing after an interruption covers only what
    is left."""
    study.save()
    runs = study.pending()
    if not runs:
        print(f"Nothing to run: every run of {study.folder} has its result.")
        return []
    command = f"{shlex.quote(python)} -m workshop_lib fewshot run-one {shlex.quote(str(study.folder))}"
    return write_job_scripts(study.folder / "slurm", "fewshot", runs, command, halves, time_limit, sbatch_options)


# -- tables ---------------------------------------------------------------------------------------------------
def collect(*folders: str | Path) -> pd.DataFrame:
    """All result rows of one or more study folders, one row per (run, domain)."""
    rows = [row for folder in folders for path in sorted((Path(folder) / "results").rglob("*.json"))
            for row in json.loads(path.read_text())]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def merge_tables(*tables: pd.DataFrame) -> pd.DataFrame:
    """Several studies' tables (and parsed MMR logs) as one, sorted; a table without the columns is refused."""
    for number, table in enumerate(tables):
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"Table {number} lacks the columns {missing}; make it with collect or read_mmr_logs.")
    merged = pd.concat([t[list(COLUMNS)] for t in tables], ignore_index=True)
    return merged.sort_values(["method", "category", "domain", "tier", "seed"], ignore_index=True)


def add_domain_mean(table: pd.DataFrame) -> pd.DataFrame:
    """The table plus rows with domain "mean": each run's metrics averaged over its domains, as the original's
    reported number."""
    keys = ["method", "category", "tier", "seed", "shots"]
    means = table.groupby(keys, as_index=False)[[*METRICS, "fit_seconds"]].mean()
    return pd.concat([table, means.assign(domain="mean")[list(COLUMNS)]], ignore_index=True)


def summarize(table: pd.DataFrame, metric: str = "instance_auroc") -> pd.DataFrame:
    """Mean and standard deviation over seeds per method, domain and tier (with the shots)."""
    grouped = table.groupby(["method", "domain", "tier"])
    return grouped.agg(shots=("shots", "first"), mean=(metric, "mean"), std=(metric, "std"),
                       seeds=("seed", "nunique")).reset_index()

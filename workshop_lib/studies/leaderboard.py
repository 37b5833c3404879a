"""The leaderboard: all five methods on the same categories, the same image size and preprocessing, one table.

Per method and category one task: fit (ResAD on the dataset's other categories, then 4 reference shots of this
one), evaluate, and record image AUROC, pixel AUROC, AU-PRO, fit seconds, inference milliseconds per test image,
the process's peak memory and the trainable parameters. A task writes ``<folder>/results/<method>/<category>.json``
atomically; a finished task is never run again, so a board resumes where it stopped, runs in local processes (each
task its own process, so each peak memory is its own) or as a Slurm job array, and ``collect`` merges what the
tasks wrote. Each paper's published MVTec AD numbers stand beside ours (``PUBLISHED``).
"""

import json
import resource
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from torch.utils.data import ConcatDataset, Dataset

from ..data import list_categories
from ..data.references import reference_images
from ..data.source import DataSource
from ..evaluation import evaluate
from ..io import atomic_file
from ..models.base import AnomalyModel
from ..presets import get_preset
from ..runs import fit_timed
from ..seeding import seed_everything
from .jobs import run_locally, write_job_scripts

METHODS = ("patchcore", "rd4ad", "mmr", "resad", "mae-lora")
METRICS = ("instance_auroc", "full_pixel_auroc", "full_pro")
COLUMNS = ("method", "category", *METRICS, "fit_seconds", "infer_ms_per_image", "peak_memory_mb",
           "trainable_parameters", "train_images", "preset", "imagesize")
RESAD_SHOTS = 4
# Published MVTec AD means (image AUROC, pixel AUROC, AU-PRO), for the table beside ours; each with its source.
PUBLISHED = {
    "patchcore": ((0.990, 0.981, 0.935), "Roth et al., CVPR 2022, PatchCore-10 % (WideResNet-50)"),
    "rd4ad": ((0.985, 0.978, 0.939), "Deng & Li, CVPR 2022 (WideResNet-50)"),
    "resad": ((0.910, 0.960, None), "xcyao00/ResAD README: 4-shot MVTec AD, trained on VisA"),
    "mmr": ((None, None, None), "Zhang et al., arXiv 2304.02216: MVTec AD numbers not quoted here, see the paper"),
    "mae-lora": ((None, None, None), "LucFrachon/mae-ad: a work-in-progress project, no published numbers"),
}


@dataclass
class Leaderboard:
    """Which methods, categories, data, preset and common preprocessing; ``folder`` holds board.json, results/,
    logs/ and slurm/. ``overrides`` change single settings of a method's preset (a CI-sized board)."""

    folder: Path
    data_root: str
    categories: list[str]
    layout: str = "mvtec"
    preset: str = "workshop"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    resize: int = 128
    imagesize: int = 128
    crop: str = "center"
    overrides: dict[str, dict] = field(default_factory=dict)  # per method: constructor arguments over the preset's

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.data_root = str(Path(self.data_root).resolve())
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; the leaderboard has {', '.join(METHODS)}")

    def config(self) -> dict:
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k != "folder"}))

    def save(self) -> Path:
        """board.json; a different board already in the folder is refused (their results would mix)."""
        path = self.folder / "board.json"
        if path.is_file():
            if json.loads(path.read_text()) != self.config():
                raise FileExistsError(f"{path} describes another leaderboard; use another folder or delete it.")
            return path
        with atomic_file(path) as staging:
            staging.write_text(json.dumps(self.config(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Leaderboard":
        path = Path(folder) / "board.json"
        if not path.is_file():
            raise FileNotFoundError(f"No leaderboard in {folder} (no board.json).")
        return cls(folder=Path(folder), **json.loads(path.read_text()))

    @property
    def source(self) -> DataSource:
        return DataSource(self.data_root, self.layout, self.resize, self.imagesize, self.crop)

    def tasks(self) -> list[str]:
        """``<method>/<category>``, every method on every category."""
        return [f"{method}/{category}" for method in self.methods for category in self.categories]

    def result_path(self, task: str) -> Path:
        return self.folder / "results" / f"{task}.json"

    def pending(self) -> list[str]:
        return [task for task in self.tasks() if not self.result_path(task).is_file()]


def training_set(board: Leaderboard, method: str, category: str) -> Dataset:
    """The category's own train/good, or for ResAD the train/good of every other category of the dataset."""
    if method != "resad":
        return board.source.load(category, "train")
    seen = [c for c in list_categories(board.data_root, board.layout) if c != category]
    if not seen:
        raise ValueError(f"ResAD trains on other classes, and {board.data_root} has no category besides {category}.")
    return ConcatDataset([board.source.load(c, "train") for c in seen])


def build_model(board: Leaderboard, method: str) -> AnomalyModel:
    return get_preset(method, board.preset).model(**board.overrides.get(method, {}))


def peak_memory_mb() -> float:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_task(board: Leaderboard, task: str) -> Path:
    """Fit and evaluate one method on one category; writes the task's row atomically. A finished task is skipped."""
    result = board.result_path(task)
    if result.is_file():
        return result
    if task not in board.tasks():
        raise ValueError(f"{task!r} is not a task of the board in {board.folder}; tasks look like {board.tasks()[0]}")
    method, category = task.split("/", 1)
    seed_everything(0)
    model = build_model(board, method)
    train = training_set(board, method, category)
    fit_seconds = fit_timed(model, train)
    test = board.source.load(category, "test")
    if method == "resad":
        references = reference_images(board.data_root, category, RESAD_SHOTS, board.layout, board.resize,
                                      board.imagesize)
        model.add_references(category, references)
        model.use_references(category, RESAD_SHOTS)
    started = time.perf_counter()
    _, metrics = evaluate(model, test, progress=False)
    infer_ms = 1000 * (time.perf_counter() - started) / len(test)
    row = {"method": method, "category": category, **{m: metrics[m] for m in METRICS}, "fit_seconds": fit_seconds,
           "infer_ms_per_image": infer_ms, "peak_memory_mb": peak_memory_mb(),
           "trainable_parameters": model.trainable_parameters(), "train_images": len(train),
           "preset": board.preset, "imagesize": board.imagesize}
    with atomic_file(result) as staging:
        staging.write_text(json.dumps(row, indent=2))
    return result


def task_command(board: Leaderboard, python: str = sys.executable) -> list[str]:
    return [python, "-m", "workshop_lib", "compare-task", str(board.folder)]


def run_board(board: Leaderboard, workers: int = 1) -> pd.DataFrame:
    """Every pending task, each in a process of its own (``workers`` at once), logged to ``<folder>/logs/``; then
    the table. A failed task is named with its log and can simply be run again."""
    board.save()
    failed = run_locally(task_command(board), board.pending(), board.folder / "logs", workers, "leaderboard tasks")
    if failed:
        raise RuntimeError(f"{len(failed)} task(s) failed; see {', '.join(map(str, failed))}. Run the board again "
                           "to retry them (finished tasks are kept).")
    return collect(board)


def write_slurm(board: Leaderboard, time_limit: str = "12:00:00", sbatch_options: tuple[str, ...] = ()) -> list[Path]:
    """A Slurm job array over the pending tasks in ``<folder>/slurm/``; after the jobs, ``collect`` merges."""
    board.save()
    command = " ".join(shlex.quote(part) for part in task_command(board))
    return write_job_scripts(board.folder / "slurm", "leaderboard", board.pending(), command,
                             time_limit=time_limit, sbatch_options=sbatch_options)


def collect(board: Leaderboard) -> pd.DataFrame:
    """Every finished task's row, and a ``published`` row per method where its paper gives MVTec AD numbers."""
    rows = [json.loads(path.read_text()) for path in sorted((board.folder / "results").rglob("*.json"))]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def published_table() -> pd.DataFrame:
    """The papers' MVTec AD means beside the metric names of our table, with their sources."""
    return pd.DataFrame([{"method": method, **dict(zip(METRICS, values, strict=True)), "source": source}
                         for method, (values, source) in PUBLISHED.items()])

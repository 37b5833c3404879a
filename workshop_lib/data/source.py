"""Where a run's images come from: a dataset root, its layout and the preprocessing sizes, in one value."""

from dataclasses import dataclass
from pathlib import Path

from .dataset import AnomalyDataset, load_dataset
from .transforms import Preprocessing


def run_name(layout: str, category: str) -> str:
    """``<layout>_<category>``: the name of a category's model folder, predictions file and results.csv row (as
    patchcore-inspection's ``mvtec_bottle``)."""
    return f"{layout}_{category}"


@dataclass(frozen=True)
class DataSource:
    """A dataset root in a layout (``mvtec``, ``mpdd``, ``aebad_s``... see ``layouts.py``) read with one
    ``Preprocessing`` (``resize``, ``imagesize``, ``crop``; transforms.py)."""

    root: str | Path
    layout: str = "mvtec"
    resize: int = 256
    imagesize: int | tuple[int, int] = 224
    crop: str = "center"

    def load(self, category: str, split: str) -> AnomalyDataset:
        return load_dataset(self.root, category, split, self.layout, self.resize, self.imagesize, self.crop)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.resize, self.imagesize, self.crop)

    def run_name(self, category: str) -> str:
        return run_name(self.layout, category)

"""Where a run's images come from: a dataset root, its layout and the preprocessing sizes, in one value."""

from dataclasses import dataclass
from pathlib import Path

from .dataset import AnomalyDataset, load_dataset


def run_name(layout: str, category: str) -> str:
    """``<layout>_<category>``: the name of a category's model folder, predictions file and results.csv row (as
    patchcore-inspection's ``mvtec_bottle``)."""
    return f"{layout}_{category}"


@dataclass(frozen=True)
class DataSource:
    """A dataset root in a layout (``mvtec``, ``mpdd``, ``aebad_s``... see ``layouts.py``) read at one image size:
    shorter side resized to ``resize``, then centre-cropped to ``imagesize``."""

    root: str | Path
    layout: str = "mvtec"
    resize: int = 256
    imagesize: int = 224

    def load(self, category: str, split: str) -> AnomalyDataset:
        return load_dataset(self.root, category, split, self.layout, self.resize, self.imagesize)

    def run_name(self, category: str) -> str:
        return run_name(self.layout, category)

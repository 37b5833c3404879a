"""Which images serve as a class's normal references (ResAD's few shots), and the dataset helpers that group a
(concatenated, subset) training set by class without loading its images."""

from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from .dataset import AnomalyDataset, load_dataset
from .layouts import GOOD, SampleRecord, list_images


def reference_indices(available: int, shots: int, seed: int = 0) -> list[int]:
    """``shots`` of ``available`` images, the first ``shots`` of one seeded permutation: fewer shots are always a
    subset of more shots, and the same seed gives the same images."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if shots > available:
        raise ValueError(f"{shots} reference shots were asked for but only {available} normal images exist.")
    return torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:shots].tolist()


def category_indices(dataset: Dataset) -> dict[str, list[int]]:
    """Dataset indices per category, without loading images for (concatenations/subsets of) AnomalyDatasets."""
    if isinstance(dataset, AnomalyDataset):
        return {dataset.category: list(range(len(dataset)))}
    if isinstance(dataset, ConcatDataset):
        groups: dict[str, list[int]] = {}
        for part, offset in zip(dataset.datasets, [0, *dataset.cumulative_sizes[:-1]], strict=True):
            for category, indices in category_indices(part).items():
                groups.setdefault(category, []).extend(offset + i for i in indices)
        return groups
    if isinstance(dataset, Subset):
        position = {index: i for i, index in enumerate(dataset.indices)}
        return {category: [position[i] for i in indices if i in position]
                for category, indices in category_indices(dataset.dataset).items()
                if any(i in position for i in indices)}
    groups = {}
    for i in range(len(dataset)):
        groups.setdefault(dataset[i]["category"], []).append(i)
    return groups


def reference_images(data_path: str | Path, category: str, shots: int, layout: str = "mvtec", resize: int = 224,
                     imagesize: int = 224, seed: int = 0, reference_dir: str | Path | None = None) -> AnomalyDataset:
    """The ``shots`` normal reference images of a class: from ``<reference_dir>/<category>/train/good`` or
    ``<reference_dir>/<category>`` (the first ``shots`` by name) when given, else ``reference_indices`` of the
    class's training images."""
    if reference_dir is not None:
        base = Path(reference_dir) / category
        folder = base / "train" / GOOD if (base / "train" / GOOD).is_dir() else base
        if not folder.is_dir():
            raise FileNotFoundError(f"No reference folder for '{category}': expected {base}/train/good or {base} "
                                    "with normal images.")
        images = list_images(folder)
        if len(images) < shots:
            raise ValueError(f"{folder} holds {len(images)} images, fewer than the {shots} reference shots asked "
                             "for: add normal images or ask for fewer shots.")
        records = [SampleRecord(path, None, 0, GOOD) for path in images[:shots]]
        return AnomalyDataset(records, category, resize=resize, imagesize=imagesize)
    train = load_dataset(data_path, category, "train", layout, resize, imagesize)
    chosen = reference_indices(len(train), shots, seed)
    return AnomalyDataset([train.records[i] for i in chosen], category, resize=resize, imagesize=imagesize)


class IndexedDataset(Dataset):
    """Items of ``dataset`` with their index, so a batch knows which images it holds."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": index}

"""A torch Dataset over the records of one category and split, with input checks that name the bad file."""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DatasetError
from .layouts import GOOD, SampleRecord, discover_records
from .transforms import image_transform, mask_transform, to_rgb


def open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only), turning PIL's errors into one that names the file."""
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(
            f"Cannot read image {path}: {error}. Replace or delete the file (it is not a valid image)."
        ) from error


def check_records(records: Sequence[SampleRecord]) -> None:
    """Fail before any training if an image is unreadable or a mask's size differs from its image."""
    for record in records:
        with open_image(record.path) as image:
            size = image.size
        if record.mask_path is None:
            continue
        with open_image(record.mask_path) as mask:
            if mask.size != size:
                raise DatasetError(
                    f"Mask {record.mask_path} is {mask.size[0]}x{mask.size[1]} but its image {record.path} "
                    f"is {size[0]}x{size[1]}. Masks must have their image's size; re-export the mask."
                )


def relabel_empty_masks(records: Sequence[SampleRecord], resize: int, imagesize: int) -> list[SampleRecord]:
    """A defect whose mask is empty after resize + centre crop becomes a good sample, as MMR's loader does
    (``datasets/mvtec.py::__getitem__``): the model cannot be asked to find a defect that was cropped away."""
    transform = mask_transform(resize, imagesize)
    relabelled = []
    for record in records:
        if record.mask_path is not None:
            with open_image(record.mask_path) as mask:
                if not transform(mask.convert("L")).any():
                    record = replace(record, mask_path=None, label=0, defect_type=GOOD)
        relabelled.append(record)
    return relabelled


class AnomalyDataset(Dataset):
    """Images of one category: items are dicts with image, mask, label, defect_type, path, category."""

    def __init__(
        self, records: Sequence[SampleRecord], category: str, resize: int = 256, imagesize: int = 224
    ) -> None:
        if resize < imagesize:
            raise ValueError(f"resize ({resize}) must be >= imagesize ({imagesize}): the crop is taken after it")
        check_records(records)
        self.records = list(records)
        self.category = category
        self.resize = resize
        self.imagesize = imagesize
        self.image_transform = image_transform(resize, imagesize)
        self.mask_transform = mask_transform(resize, imagesize)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        with open_image(record.path) as image:
            try:
                pixels = self.image_transform(to_rgb(image))
            except OSError as error:
                raise DatasetError(f"Cannot decode image {record.path}: {error}. Replace the file.") from error
        if record.mask_path is None:
            mask = torch.zeros(1, self.imagesize, self.imagesize)
        else:
            with open_image(record.mask_path) as mask_image:
                mask = self.mask_transform(mask_image.convert("L"))
        return {
            "image": pixels,
            "mask": mask,
            "label": record.label,
            "defect_type": record.defect_type,
            "path": str(record.path),
            "category": self.category,
        }

    @property
    def labels(self) -> list[int]:
        return [record.label for record in self.records]


def split_by_domain(dataset: AnomalyDataset) -> dict[str, AnomalyDataset]:
    """The dataset's images per domain (AeBAD's same, background, ...), sorted by name; ``{"": dataset}`` for
    layouts without domains."""
    domains = sorted({record.domain for record in dataset.records if record.domain})
    if not domains:
        return {"": dataset}
    return {domain: AnomalyDataset([r for r in dataset.records if r.domain == domain], dataset.category,
                                   resize=dataset.resize, imagesize=dataset.imagesize)
            for domain in domains}


def load_dataset(
    root: str | Path,
    category: str,
    split: str,
    layout: str = "mvtec",
    resize: int = 256,
    imagesize: int = 224,
    **layout_options,
) -> AnomalyDataset:
    """One category and split of a dataset on disk, checked and ready for a DataLoader.

    ``layout_options`` go to the layout's reader, e.g. ``domains=["view"]`` for AeBAD or ``split_csv`` for VisA.
    """
    if split == "train":
        records = [r for r in discover_records(root, category, split, layout, **layout_options) if r.label == 0]
        if not records:
            raise DatasetError(f"The train split of '{category}' under {root} has no good images to learn from.")
    else:
        records = discover_records(root, category, split, layout, **layout_options)
        if layout == "aebad_s":
            records = relabel_empty_masks(records, resize, imagesize)
    return AnomalyDataset(records, category, resize=resize, imagesize=imagesize)

"""A torch Dataset over the records of one category and split, with input checks that name the bad file."""

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import DatasetError
from .layouts import GOOD, SampleRecord, discover_records
from .transforms import Preprocessing, to_rgb


def open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only), turning PIL's errors into one that names the file."""
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(
            f"Cannot read image {path}: {error}. Replace or delete the file (it is not a valid image)."
        ) from error


def check_records(records: Sequence[SampleRecord]) -> None:
    """Fail before any training if an image is unreadable, a mask's size differs from its image, or a defect
    image's mask marks nothing (an export that lost its values would make every pixel metric meaningless)."""
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
            if mask.convert("L").getbbox() is None:
                raise DatasetError(
                    f"Mask {record.mask_path} of the defect image {record.path} is empty (every pixel 0). Mark the "
                    "defect in the mask (any non-zero value counts), or move the image to the good images."
                )


def read_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean array at its own resolution (non-zero = defect)."""
    with open_image(path) as mask:
        return np.asarray(mask.convert("L")) > 0


def crop_losses(records: Sequence[SampleRecord], preprocessing: Preprocessing) -> dict[str, int]:
    """What a centre crop throws away of the defects: defect pixels and regions (connected components) in total
    and outside the crop, and defect images whose every defect pixel is outside."""
    counts = dict.fromkeys(("pixels", "lost_pixels", "regions", "lost_regions", "images", "lost_images"), 0)
    for record in records:
        if record.mask_path is None:
            continue
        mask = read_mask(record.mask_path)
        height, width = mask.shape
        placement = preprocessing.placement((height, width))
        top, left, box_height, box_width = preprocessing.valid_box((height, width))
        scale_y, scale_x = height / placement.scaled[0], width / placement.scaled[1]
        rows = slice(int((top - placement.offset[0]) * scale_y),
                     int(np.ceil((top - placement.offset[0] + box_height) * scale_y)))
        columns = slice(int((left - placement.offset[1]) * scale_x),
                        int(np.ceil((left - placement.offset[1] + box_width) * scale_x)))
        inside = np.zeros_like(mask)
        inside[rows, columns] = True
        regions, count = ndimage.label(mask)
        kept = set(np.unique(regions[inside & mask]).tolist()) - {0}
        lost_pixels = int((mask & ~inside).sum())
        counts["pixels"] += int(mask.sum())
        counts["lost_pixels"] += lost_pixels
        counts["regions"] += count
        counts["lost_regions"] += count - len(kept)
        counts["images"] += 1
        counts["lost_images"] += int(not kept)
    return counts


def warn_about_crop_losses(records: Sequence[SampleRecord], preprocessing: Preprocessing, where: str,
                           relabelled: bool = False) -> None:
    """Say once, with the numbers, when a centre crop cuts defect pixels out of a test set."""
    counts = crop_losses(records, preprocessing)
    if not counts["lost_pixels"]:
        return
    warnings.warn(
        f"{where}: the centre crop ({preprocessing.describe()}) cuts away {counts['lost_pixels']} of "
        f"{counts['pixels']} defect pixels ({counts['lost_pixels'] / counts['pixels']:.1%}); {counts['lost_regions']} "
        f"of {counts['regions']} defect regions and {counts['lost_images']} of {counts['images']} defect images are "
        f"lost entirely ({'those images become good ones' if relabelled else 'they stay labelled defective'}). "
        "To keep the whole frame, "
        "use crop='none' (resize the whole image) or crop='pad' (letterbox), flag --crop.", UserWarning, stacklevel=3)


def relabel_empty_masks(records: Sequence[SampleRecord], preprocessing: Preprocessing) -> list[SampleRecord]:
    """A defect whose mask is empty after the crop becomes a good sample, as MMR's loader does
    (``datasets/mvtec.py::__getitem__``): the model cannot be asked to find a defect that was cropped away."""
    transform = preprocessing.mask_transform()
    relabelled = []
    for record in records:
        if record.mask_path is not None:
            with open_image(record.mask_path) as mask:
                if not transform(mask.convert("L")).any():
                    record = replace(record, mask_path=None, label=0, defect_type=GOOD)
        relabelled.append(record)
    return relabelled


class AnomalyDataset(Dataset):
    """Images of one category: items are dicts with image, mask, valid (the input pixels that come from the image:
    all but a letterbox's bars), label, defect_type, path, category."""

    def __init__(self, records: Sequence[SampleRecord], category: str, resize: int = 256,
                 imagesize: int | tuple[int, int] = 224, crop: str = "center") -> None:
        self.preprocessing = Preprocessing(resize, imagesize, crop)
        check_records(records)
        self.records = list(records)
        self.category = category
        self.image_transform = self.preprocessing.image_transform()
        self.mask_transform = self.preprocessing.mask_transform()

    @classmethod
    def like(cls, dataset: "AnomalyDataset", records: Sequence[SampleRecord]) -> "AnomalyDataset":
        """Other records of the same category, preprocessed the same way."""
        p = dataset.preprocessing
        return cls(records, dataset.category, p.resize, p.imagesize, p.crop)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        with open_image(record.path) as image:
            try:
                pixels = self.image_transform(to_rgb(image))
            except OSError as error:
                raise DatasetError(f"Cannot decode image {record.path}: {error}. Replace the file.") from error
            original = (image.height, image.width)
        height, width = self.preprocessing.size
        if record.mask_path is None:
            mask = torch.zeros(1, height, width)
        else:
            with open_image(record.mask_path) as mask_image:
                mask = self.mask_transform(mask_image.convert("L"))
        valid = torch.zeros(1, height, width, dtype=torch.bool)
        top, left, box_height, box_width = self.preprocessing.valid_box(original)
        valid[:, top: top + box_height, left: left + box_width] = True
        return {
            "image": pixels,
            "mask": mask,
            "valid": valid,
            "label": record.label,
            "defect_type": record.defect_type,
            "path": str(record.path),
            "category": self.category,
        }

    @property
    def labels(self) -> list[int]:
        return [record.label for record in self.records]


def preprocessing_of(dataset: Dataset) -> Preprocessing | None:
    """The preprocessing of an AnomalyDataset, also inside a Subset or ConcatDataset (its first part); None for
    other datasets."""
    if isinstance(dataset, Subset):
        return preprocessing_of(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return preprocessing_of(dataset.datasets[0])
    return getattr(dataset, "preprocessing", None)


def split_by_domain(dataset: AnomalyDataset) -> dict[str, AnomalyDataset]:
    """The dataset's images per domain (AeBAD's same, background, ...), sorted by name; ``{"": dataset}`` for
    layouts without domains."""
    domains = sorted({record.domain for record in dataset.records if record.domain})
    if not domains:
        return {"": dataset}
    return {domain: AnomalyDataset.like(dataset, [r for r in dataset.records if r.domain == domain])
            for domain in domains}


def load_dataset(
    root: str | Path,
    category: str,
    split: str,
    layout: str = "mvtec",
    resize: int = 256,
    imagesize: int | tuple[int, int] = 224,
    crop: str = "center",
    **layout_options,
) -> AnomalyDataset:
    """One category and split of a dataset on disk, checked and ready for a DataLoader; ``resize``, ``imagesize``
    and ``crop`` are the ``Preprocessing`` (transforms.py). A centre crop that cuts defect pixels out of a test set
    is reported once, with the numbers.

    ``layout_options`` go to the layout's reader, e.g. ``domains=["view"]`` for AeBAD or ``split_csv`` for VisA.
    """
    preprocessing = Preprocessing(resize, imagesize, crop)
    if split in ("train", "validation"):
        records = [r for r in discover_records(root, category, split, layout, **layout_options) if r.label == 0]
        if not records:
            raise DatasetError(f"The {split} split of '{category}' under {root} has no good images.")
    else:
        records = discover_records(root, category, split, layout, **layout_options)
        if crop == "center":
            warn_about_crop_losses(records, preprocessing, f"'{category}' test split under {root}",
                                   relabelled=layout == "aebad_s")
        if layout == "aebad_s":
            records = relabel_empty_masks(records, preprocessing)
    return AnomalyDataset(records, category, resize=resize, imagesize=imagesize, crop=crop)

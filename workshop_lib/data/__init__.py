"""Datasets: on-disk layouts, the checked torch Dataset, transforms, the synthetic generator, downloads."""

from .dataset import AnomalyDataset, load_dataset, split_by_domain
from .layouts import LAYOUTS, SampleRecord, discover_records, list_categories, summarize_dataset
from .locate import MVTEC_CATEGORIES, resolve_aebad_root, resolve_data_root
from .synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from .synthetic import make_synthetic_aebad, make_synthetic_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize

__all__ = [
    "AnomalyDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "MVTEC_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "SampleRecord",
    "denormalize",
    "discover_records",
    "list_categories",
    "load_dataset",
    "make_synthetic_aebad",
    "make_synthetic_dataset",
    "resolve_aebad_root",
    "resolve_data_root",
    "split_by_domain",
    "summarize_dataset",
]

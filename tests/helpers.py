"""Small builders for hand-made datasets in the tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from workshop_lib.data import AnomalyDataset, load_dataset


def write_image(path: Path, size: int = 32, mode: str = "RGB", value: int = 128, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(max(0, value - 20), min(255, value + 20), (size, size, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)
    return path


def write_mask(path: Path, size: int = 32, box: tuple[int, int, int, int] = (8, 8, 16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size, size), np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(mask).save(path)
    return path


def make_mvtec_category(root: Path, category: str = "thing", mode: str = "RGB", size: int = 32) -> Path:
    """2 train images, 1 good and 1 'scratch' test image with its mask."""
    base = root / category
    for i in range(2):
        write_image(base / "train" / "good" / f"{i:03d}.png", size, mode, seed=i)
    write_image(base / "test" / "good" / "000.png", size, mode, seed=10)
    write_image(base / "test" / "scratch" / "000.png", size, mode, seed=11)
    write_mask(base / "ground_truth" / "scratch" / "000_mask.png", size)
    return root


def train_subset(root: Path, category: str, count: int, size: int = 64) -> AnomalyDataset:
    """The first ``count`` training images of a category at ``size`` px: a model trains on them in seconds."""
    full = load_dataset(root, category, "train", resize=size, imagesize=size)
    return AnomalyDataset(full.records[:count], category, resize=size, imagesize=size)

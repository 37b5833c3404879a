"""Find the dataset a notebook should use: real MVTec AD in work/data when present, else the synthetic one."""

from pathlib import Path

from .layouts import list_categories
from .synthetic import make_synthetic_dataset

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
    "toothbrush", "transistor", "wood", "zipper",
)
MVTEC_FOLDER = "mvtec_anomaly_detection"
SYNTHETIC_FOLDER = "synthetic"


def resolve_data_root(work_dir: str | Path, prefer_real: bool = True, verbose: bool = True) -> tuple[Path, bool]:
    """(dataset root, is_synthetic). Uses ``<work>/data/mvtec_anomaly_detection`` if it holds categories,
    otherwise makes (once) and returns the synthetic dataset in ``<work>/data/synthetic``."""
    data_dir = Path(work_dir) / "data"
    real = data_dir / MVTEC_FOLDER
    if prefer_real and list_categories(real):
        return real, False
    synthetic = data_dir / SYNTHETIC_FOLDER
    if verbose:
        print(f"No MVTec AD in {real}: using the synthetic dataset in {synthetic} "
              "(see README: 'Putting MVTec AD into work/').")
    make_synthetic_dataset(synthetic)
    return synthetic, True

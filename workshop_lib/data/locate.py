"""Find the dataset a notebook should use: real MVTec AD in work/data when present, else the synthetic one."""

from pathlib import Path

from .layouts import list_categories
from .synthetic import make_synthetic_aebad, make_synthetic_dataset

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
    "toothbrush", "transistor", "wood", "zipper",
)
MVTEC_FOLDER = "mvtec_anomaly_detection"
SYNTHETIC_FOLDER = "synthetic"
AEBAD_FOLDER, AEBAD_CATEGORY = "AeBAD", "AeBAD_S"  # <work>/data/AeBAD/AeBAD_S/{train,test,ground_truth}
SYNTHETIC_AEBAD_FOLDER, SYNTHETIC_AEBAD_CATEGORY = "synthetic_aebad", "washer"


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


def resolve_aebad_root(work_dir: str | Path, verbose: bool = True) -> tuple[Path, str, bool]:
    """(dataset root, category, is_synthetic) of a domain-shift dataset in the AeBAD-S layout: the real AeBAD-S in
    ``<work>/data/AeBAD/AeBAD_S`` if present, otherwise the synthetic one (made once) in
    ``<work>/data/synthetic_aebad/washer``."""
    real = Path(work_dir) / "data" / AEBAD_FOLDER
    if (real / AEBAD_CATEGORY / "train").is_dir():
        return real, AEBAD_CATEGORY, False
    synthetic = Path(work_dir) / "data" / SYNTHETIC_AEBAD_FOLDER
    if verbose:
        print(f"No AeBAD-S in {real / AEBAD_CATEGORY}: using the synthetic domain-shift dataset in {synthetic} "
              "(see README: 'Data').")
    make_synthetic_aebad(synthetic, categories=(SYNTHETIC_AEBAD_CATEGORY,))
    return synthetic, SYNTHETIC_AEBAD_CATEGORY, True

"""Where the images of each public dataset live on disk, as lists of records.

Each ``*_records`` function turns one dataset layout into ``SampleRecord``s for one category and split;
``AnomalyDataset`` (dataset.py) reads them. Layouts covered:

- MVTec AD and MPDD: ``<root>/<category>/train/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``
- BTAD: ``<root>/<category>/train/ok``, ``test/{ok,ko}``, ``ground_truth/ko/<stem>.png``
- MVTec 3D-AD (RGB only): ``<root>/<category>/{train,test}/<defect>/rgb``, masks in ``.../<defect>/gt``
- VisA: images anywhere under ``<root>``, listed by a split CSV (``object,split,label,image,mask``)
- a generic folder: ``<root>/<category>/good`` and ``bad`` (optional ``masks/<stem>.png``); good images are
  split into train and test by ``test_fraction``, deterministically.
- AeBAD-S (``category="AeBAD_S"``): ``train/good/<domain>``, ``test/<defect>/<domain>``,
  ``ground_truth/<defect>/<domain>/<image name>``; domains same, background, illumination, view.
- AeBAD-V (``category="AeBAD_V"``): ``train/good/<video>``, ``test/<video>/{good,anomaly}``; image labels only.

AeBAD records carry their ``domain`` (sub-folder); ``domains=[...]`` keeps only those test domains.
"""

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".JPG", ".PNG"}
LAYOUTS = ("mvtec", "mpdd", "btad", "mvtec3d", "visa", "folder", "aebad_s", "aebad_v")
GOOD = "good"
SPLITS = ("train", "test", "validation")  # validation/good: normal images kept for thresholds (MVTec LOCO, MVTec 3D)


@dataclass(frozen=True)
class SampleRecord:
    """One image on disk: its mask (None for good images), label (1 = anomalous), defect type and, for layouts
    with domain shifts (AeBAD), the domain sub-folder it came from ("" elsewhere)."""

    path: Path
    mask_path: Path | None
    label: int
    defect_type: str
    domain: str = ""


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (the order patchcore-inspection uses)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)


def require_dir(folder: Path, what: str, expected: str | None = None) -> Path:
    """``folder``, or an error naming it and what to do: check the root, or match the ``expected`` layout."""
    if not folder.is_dir():
        fix = (f"Expected the layout {expected}." if expected else
               "Check the dataset root and category name, or create the synthetic dataset with "
               "`python -m workshop_lib data synthetic <root>`.")
        raise DatasetError(f"{what} folder not found: {folder}. {fix}")
    return folder


def find_mask(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path:
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"No ground-truth mask for '{stem}' in {folder} (looked for {', '.join(stem + s for s in suffixes)}). "
        "Every defective test image needs a mask; add it or remove the image."
    )


def mvtec_records(root: Path, category: str, split: str) -> list[SampleRecord]:
    """MVTec AD / MPDD layout; also the synthetic dataset's layout."""
    base = require_dir(root / category, f"Category '{category}'")
    split_dir = require_dir(base / split, f"'{split}' split of '{category}'")
    records = []
    for defect_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        defect = defect_dir.name
        for image in list_images(defect_dir):
            if defect == GOOD:
                records.append(SampleRecord(image, None, 0, GOOD))
            else:
                mask = find_mask(base / "ground_truth" / defect, image.stem, ("_mask.png", ".png"))
                records.append(SampleRecord(image, mask, 1, defect))
    return records


def btad_records(root: Path, category: str, split: str) -> list[SampleRecord]:
    base = require_dir(root / category, f"Category '{category}'")
    split_dir = require_dir(base / split, f"'{split}' split of '{category}'")
    records = []
    for defect_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        for image in list_images(defect_dir):
            if defect_dir.name == "ok":
                records.append(SampleRecord(image, None, 0, GOOD))
            else:
                mask = find_mask(base / "ground_truth" / defect_dir.name, image.stem, (".png", ".bmp"))
                records.append(SampleRecord(image, mask, 1, defect_dir.name))
    return records


def mvtec3d_records(root: Path, category: str, split: str) -> list[SampleRecord]:
    base = require_dir(root / category, f"Category '{category}'")
    split_dir = require_dir(base / split, f"'{split}' split of '{category}'")
    records = []
    for defect_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        for image in list_images(require_dir(defect_dir / "rgb", "MVTec 3D 'rgb'")):
            if defect_dir.name == GOOD:
                records.append(SampleRecord(image, None, 0, GOOD))
            else:
                mask = find_mask(defect_dir / "gt", image.stem, (".png",))
                records.append(SampleRecord(image, mask, 1, defect_dir.name))
    return records


def visa_records(root: Path, category: str, split: str, split_csv: Path | None = None) -> list[SampleRecord]:
    """VisA: the official ``split_csv/1cls.csv`` says which images are train/test and where masks are."""
    csv_path = split_csv or root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DatasetError(f"VisA split file not found: {csv_path}. Pass split_csv=... or put it there.")
    records = []
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["object"] != category or row["split"] != split:
                continue
            anomalous = row["label"] == "anomaly"
            mask = root / row["mask"] if anomalous and row.get("mask") else None
            records.append(SampleRecord(root / row["image"], mask, int(anomalous), "bad" if anomalous else GOOD))
    if not records:
        raise DatasetError(f"No '{split}' rows for object '{category}' in {csv_path}.")
    return sorted(records, key=lambda r: (r.defect_type, r.path.name))


def folder_records(
    root: Path, category: str, split: str, test_fraction: float = 0.3, seed: int = 0
) -> list[SampleRecord]:
    """A plain folder of good and bad images: the quickest way to try a method on your own data."""
    base = require_dir(root / category, f"Category '{category}'")
    good = list_images(require_dir(base / GOOD, "'good' images"))
    random.Random(seed).shuffle(good)
    n_test = round(len(good) * test_fraction)
    if split == "train":
        return [SampleRecord(p, None, 0, GOOD) for p in sorted(good[n_test:])]
    records = [SampleRecord(p, None, 0, GOOD) for p in sorted(good[:n_test])]
    bad_dir = base / "bad"
    masks_dir = base / "masks"
    for image in list_images(bad_dir) if bad_dir.is_dir() else []:
        mask = find_mask(masks_dir, image.stem, (".png", "_mask.png")) if masks_dir.is_dir() else None
        records.append(SampleRecord(image, mask, 1, "bad"))
    return records


AEBAD_S_LAYOUT = ("<root>/<category>/train/good/<domain>/*.png, test/<defect or good>/<domain>/*.png, "
                  "ground_truth/<defect>/<domain>/<image name> (datasets/aebad_S.py of zhangzilongc/MMR)")
AEBAD_V_LAYOUT = "<root>/<category>/train/good/<video>/*.jpg, test/<video>/{good,anomaly}/*.jpg"


def domain_folders(folder: Path, expected: str) -> list[Path]:
    """The domain sub-folders of an AeBAD folder; an error naming the folder if there are none."""
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir())
    if not subfolders:
        raise DatasetError(f"{folder} has no domain sub-folders. Expected the layout {expected}.")
    return subfolders


def keep_domains(records: list[SampleRecord], domains: Sequence[str] | None, folder: Path) -> list[SampleRecord]:
    """The records of ``domains`` (all if None); an unknown domain is an error that lists the ones present."""
    if domains is None:
        return records
    present = sorted({r.domain for r in records})
    missing = sorted(set(domains) - set(present))
    if missing:
        raise DatasetError(f"No test domain {missing} under {folder}; it has {present}. Pick domains from these.")
    return [r for r in records if r.domain in domains]


def aebad_train_records(root: Path, category: str, expected: str) -> list[SampleRecord]:
    """AeBAD-S and -V train images: every sub-folder of ``train/good`` (a domain or a video) together."""
    good = require_dir(root / category / "train" / GOOD, f"'train/good' of '{category}'", expected)
    return [SampleRecord(image, None, 0, GOOD, d.name) for d in domain_folders(good, expected)
            for image in list_images(d)]


def aebad_s_records(root: Path, category: str, split: str,
                    domains: Sequence[str] | None = None) -> list[SampleRecord]:
    """AeBAD-S: masks carry the image's own name; ``domains`` filters the test records (train uses all)."""
    if split == "train":
        return aebad_train_records(root, category, AEBAD_S_LAYOUT)
    base = root / category
    test = require_dir(base / "test", f"'test' split of '{category}'", AEBAD_S_LAYOUT)
    records = []
    for defect_dir in sorted(d for d in test.iterdir() if d.is_dir()):
        defect = defect_dir.name
        for domain_dir in domain_folders(defect_dir, AEBAD_S_LAYOUT):
            for image in list_images(domain_dir):
                if defect == GOOD:
                    records.append(SampleRecord(image, None, 0, GOOD, domain_dir.name))
                else:
                    suffixes = tuple(dict.fromkeys((image.suffix, ".png")))
                    mask = find_mask(base / "ground_truth" / defect / domain_dir.name, image.stem, suffixes)
                    records.append(SampleRecord(image, mask, 1, defect, domain_dir.name))
    return keep_domains(records, domains, test)


def aebad_v_records(root: Path, category: str, split: str,
                    domains: Sequence[str] | None = None) -> list[SampleRecord]:
    """AeBAD-V: test videos with good/anomaly frames and no masks; ``domains`` picks videos of the test split."""
    if split == "train":
        return aebad_train_records(root, category, AEBAD_V_LAYOUT)
    test = require_dir(root / category / "test", f"'test' split of '{category}'", AEBAD_V_LAYOUT)
    records = []
    for video in domain_folders(test, AEBAD_V_LAYOUT):
        for label, name in ((0, GOOD), (1, "anomaly")):
            frames = require_dir(video / name, f"'{name}' frames of {video.name}", AEBAD_V_LAYOUT)
            records += [SampleRecord(image, None, label, name, video.name) for image in list_images(frames)]
    return keep_domains(records, domains, test)


def discover_records(
    root: str | Path, category: str, split: str, layout: str = "mvtec", **layout_options
) -> list[SampleRecord]:
    """Records of one category and split ('train' or 'test') in the given layout."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "validation" and layout not in ("mvtec", "mpdd"):
        raise ValueError(f"The {layout} layout has no validation split; hold out train images instead (--holdout).")
    readers = {
        "mvtec": mvtec_records,
        "mpdd": mvtec_records,
        "btad": btad_records,
        "mvtec3d": mvtec3d_records,
        "visa": visa_records,
        "folder": folder_records,
        "aebad_s": aebad_s_records,
        "aebad_v": aebad_v_records,
    }
    if layout not in readers:
        raise ValueError(f"Unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    records = readers[layout](Path(root), category, split, **layout_options)
    if not records:
        raise DatasetError(
            f"No images found for the '{split}' split of '{category}' under {Path(root) / category}. "
            f"Expected the {layout} layout (see workshop_lib.data.layouts)."
        )
    return records


def list_categories(root: str | Path, layout: str = "mvtec") -> list[str]:
    """Category folders under a dataset root (VisA: the objects named in its split CSV)."""
    root = Path(root)
    if layout == "visa":
        with open(root / "split_csv" / "1cls.csv", newline="") as handle:
            return sorted({row["object"] for row in csv.DictReader(handle)})
    marker = {"folder": GOOD}.get(layout, "train")
    return sorted(d.name for d in root.iterdir() if (d / marker).is_dir()) if root.is_dir() else []


def summarize_dataset(root: str | Path, layout: str = "mvtec") -> list[dict]:
    """One row per category: train (good) images, test good and defective images, and the defect types."""
    rows = []
    for category in list_categories(root, layout):
        test = discover_records(root, category, "test", layout)
        rows.append({"category": category, "train (good)": len(discover_records(root, category, "train", layout)),
                     "test good": sum(r.label == 0 for r in test), "test defective": sum(r.label for r in test),
                     "defect types": ", ".join(sorted({r.defect_type for r in test} - {GOOD}))})
    return rows


def has_validation(root: str | Path, category: str, layout: str = "mvtec") -> bool:
    """Whether a category has ``validation/good`` images (MVTec layout) to choose thresholds on."""
    folder = Path(root) / category / "validation" / GOOD
    return layout in ("mvtec", "mpdd") and folder.is_dir() and bool(list_images(folder))

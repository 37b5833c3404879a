"""What each preprocessing keeps and what PatchCore reaches with it, side by side in one run.

    python benchmarks/crop_choices.py --root ../shared/realdata/mpdd_metal_plate --category metal_plate
    python benchmarks/crop_choices.py --synthetic_wide 3     # wide synthetic frames (a line camera's)

For each crop (center, none, pad): the defect pixels, regions and images a centre crop loses on the test set, then
PatchCore (the bundled ImageNet EfficientNet-Lite0, embedding without projection, 10 % coreset) fitted and
evaluated, one thread, with image / pixel AUROC, AU-PRO and seconds. The table is printed as markdown for
docs/your_own_images.md.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from workshop_lib.data import load_dataset, make_synthetic_dataset
from workshop_lib.data.dataset import crop_losses
from workshop_lib.data.transforms import CROPS, Preprocessing
from workshop_lib.evaluation import evaluate
from workshop_lib.models import PatchCore


def measure(root: Path, category: str, size: int, resize: int) -> list[dict]:
    rows = []
    for crop in CROPS:
        preprocessing = Preprocessing(resize, size, crop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the centre crop's loss is measured below
            train = load_dataset(root, category, "train", resize=resize, imagesize=size, crop=crop)
            test = load_dataset(root, category, "test", resize=resize, imagesize=size, crop=crop)
        lost = crop_losses(test.records, preprocessing) if crop == "center" else None
        model = PatchCore("efficientnet_lite0", weights="imagenet", pretrain_embed_dimension=None,
                          target_embed_dimension=None, coreset_ratio=0.1)
        started = time.perf_counter()
        model.fit(train, progress=False)
        fit_seconds = time.perf_counter() - started
        _, metrics = evaluate(model, test, progress=False)
        rows.append({"category": category, "crop": crop,
                     "defect pixels lost": f"{lost['lost_pixels'] / max(lost['pixels'], 1):.1%}" if lost else "0",
                     "defect regions lost": f"{lost['lost_regions']} of {lost['regions']}" if lost else "0",
                     "image AUROC": metrics["instance_auroc"], "pixel AUROC": metrics["full_pixel_auroc"],
                     "AU-PRO": metrics["full_pro"], "fit s": fit_seconds})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="dataset root in MVTec layout")
    parser.add_argument("--category", action="append", help="category (repeat)")
    parser.add_argument("--synthetic_wide", type=int, help="make wide synthetic frames this many squares wide")
    parser.add_argument("--imagesize", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.synthetic_wide:
        args.root = make_synthetic_dataset(Path(tempfile.mkdtemp()) / "wide", categories=("tile", "washer"),
                                           n_train=30, n_test_defect=5, image_size=128,
                                           width_factor=args.synthetic_wide)
        args.category = args.category or ["tile", "washer"]
    rows = [row for category in args.category for row in measure(args.root, category, args.imagesize, args.resize)]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
